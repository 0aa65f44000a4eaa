"""The aiohttp application: routes and the request pipeline.

Request path (DESIGN.md section 3): parse -> route -> governor.admit (scope limits, budgets) -> exact lookup ->
semantic lookup -> governor.admit_model (model limits: a cache hit is never refused by them) -> upstream (stream tee).
The end of every request (stores, settle, spend, metrics) is `lifecycle.RequestLifecycle`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from . import listener
from .admin_api import register_admin_routes
from .cache.exact import age_s
from .cache.keys import api_key_hash, exact_key, fingerprint, upstream_identity
from .cache.stream import StreamAssembler, body_to_sse
from .cache_controls import cache_directives, too_old
from .caller_scope import cache_partition
from .config import Config
from .context import CachedAnswer, Caller, RequestContext, Usage
from .errors import ApiError
from .lifecycle import RequestLifecycle, error_response
from .listener import timeout_error
from .metrics import Metrics
from .openai_api import parse_body, validate
from .pricing import estimate_prompt_tokens
from .probes import Probes
from .redact import REDACTOR, install_log_filter
from .runtime import ConfigWatcher, Runtime, build_runtime
from .sse import SSE_DONE, usage_from
from .upstream import upstream_payload

log = logging.getLogger("llmgw")
INTERNAL = ApiError(500, "internal error in the gateway (see its log)", code="internal_error")

class RuntimeSlot:
    """The app's current Runtime; a reload replaces `current` (aiohttp freezes the app mapping once started)."""

    current: Runtime


RUNTIME = web.AppKey("runtime", RuntimeSlot)
METRICS = web.AppKey("metrics", Metrics)
JSON = "application/json"


def _rid(request: web.Request) -> str:
    """The caller's x-request-id when it is a sane token (it is echoed in a header), a fresh one otherwise."""
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isascii() and rid.isprintable() and " " not in rid:
        return rid
    return os.urandom(8).hex()


def estimate_usage(request_body: dict[str, Any], answer: bytes | None) -> Usage:
    """Used only when the upstream reports no usage, and flagged as estimated (~4 characters per token)."""
    return Usage(prompt_tokens=estimate_prompt_tokens(request_body), completion_tokens=len(answer or b"") // 4,
                 estimated=True)


def _client_gone(request: web.Request) -> bool:
    t = request.transport
    return t is None or t.is_closing()


def _may_hit(rt: Runtime, ctx: RequestContext) -> bool:
    """Can a cache answer this request (so model limits wait for the lookup)?"""
    if ctx.directives.no_cache:
        return False
    return rt.exact is not None or (rt.semantic is not None and ctx.endpoint == "chat")


class Handlers:
    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def rt(self) -> Runtime:
        return self.app[RUNTIME].current

    # --- generation endpoints ---------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completions")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "embeddings")

    async def _read(self, request: web.Request, rt: Runtime) -> bytes:
        if request.content_type != JSON:
            raise ApiError(415, f"Content-Type must be application/json, not '{request.content_type}'",
                           code="unsupported_media_type")
        limit = rt.config.listen.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"request body of {request.content_length} bytes exceeds the limit of {limit}",
                           code="request_too_large")
        deadline = rt.config.listen.read_timeout_s
        try:
            if request.content.is_eof():  # the whole body is here already (the usual case): no deadline needed
                return await request.read()
            async with asyncio.timeout(deadline):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large") from None
        except TimeoutError:
            raise timeout_error("request body", deadline) from None
        except (HttpProcessingError, RequestPayloadError) as e:
            # e.g. a Content-Encoding the body does not match, or a chunked body that breaks off
            enc = request.headers.get("Content-Encoding")
            what = f"Content-Encoding '{enc[:40]}'" if enc and isinstance(e, ContentEncodingError) else "framing"
            raise ApiError(400, f"request body could not be read ({what})", code="malformed_body") from None

    def _context(self, request: web.Request, rt: Runtime, endpoint: str, body: dict[str, Any],
                 request_id: str, caller: Caller | None = None) -> RequestContext:
        model = rt.models.get(body["model"])
        if model is None:
            names = ", ".join(sorted(rt.models))
            raise ApiError(404, f"model '{body['model']}' is not served by this gateway; available: {names}",
                           code="model_not_found", param="model")
        if caller is None:
            base = rt.caller
            key_hash = api_key_hash(request.headers.get("Authorization"))
            caller = Caller(base.namespace, base.pod, base.service_account, key_hash) if key_hash else base
        cfg = rt.config
        stream = bool(body.get("stream"))
        return RequestContext(
            request_id=request_id,
            endpoint=endpoint,
            model=model,
            body=body,
            caller=caller,
            scope=cache_partition(cfg.cache.scope, cfg.gateway.namespace, cfg.gateway.name, caller),
            directives=cache_directives(request.headers.get("Cache-Control"), body.get("cache"), cfg.cache, endpoint),
            stream=stream,
            client_wants_usage=stream and bool((body.get("stream_options") or {}).get("include_usage")),
        )

    async def _generate(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        rt = self.rt  # this request stays on this runtime even if a reload swaps it meanwhile
        async with rt.lifecycle(endpoint, _rid(request)) as life:
            try:
                # Gateway mode: who is calling comes first (a stranger learns nothing, not even about bad input).
                caller = await rt.identity.caller(request) if rt.identity is not None else None
                body = parse_body(await self._read(request, rt), rt.config.listen.max_json_depth)
                validate(endpoint, body)
                life.ctx = ctx = self._context(request, rt, endpoint, body, life.request_id, caller)
                if rt.governor is not None:
                    # Scope limits and budgets: every request. Model limits protect the upstream, so they are decided
                    # after the cache lookup (in _serve), unless no cache can answer this request (then in one call).
                    await rt.governor.admit(ctx, with_model=not _may_hit(rt, ctx))
                return await self._serve(request, rt, life, ctx)
            except ApiError as e:
                return await life.fail(e)
            except ConnectionError:
                if _client_gone(request):
                    return life.client_gone()
                log.exception("unexpected connection error on %s %s", request.method, request.path)
                return await life.fail(INTERNAL)
            except Exception:  # a bug: one traceback in the log, an OpenAI-style 500 (or error event) for the client
                log.exception("unexpected error on %s %s", request.method, request.path)
                return await life.fail(INTERNAL)

    async def _serve(self, request: web.Request, rt: Runtime, life: RequestLifecycle,
                     ctx: RequestContext) -> web.StreamResponse:
        d = ctx.directives
        cacheable = rt.exact is not None or rt.semantic is not None
        if rt.exact is not None:
            digest = fingerprint(ctx.endpoint, upstream_identity(ctx.model), ctx.body)
            ctx.cache_key = exact_key(rt.config.redis.key_prefix, ctx.scope, d.namespace, digest,
                                      generation=rt.config.cache.generation, model=ctx.model.name)
        if not cacheable or d.no_cache:
            ctx.cache_result = "bypass"
        else:
            ctx.cache_result = "miss"
            exact, key = rt.exact, ctx.cache_key
            hit = await exact.get(key) if exact is not None and key else None
            if hit is not None and too_old(hit.created, time.time(), d):  # s-maxage / max-age: refresh it
                hit = None
            if hit is not None and exact is not None and key:
                ctx.cache_result = "hit-exact"
                exact.hits.hit(key, hit.created)  # counted in memory, written in batches (cache/hits.py)
            elif rt.semantic is not None and ctx.endpoint == "chat":
                hit = await rt.semantic.lookup(ctx)
                if hit is not None and too_old(hit.created, time.time(), d):
                    hit = None
                if hit is not None:
                    ctx.cache_result = "hit-semantic"
            if hit is not None:
                return self._replay(ctx, hit)
        if rt.governor is not None:
            await rt.governor.admit_model(ctx)  # on the way upstream (a no-op when decided with the scope limits)
        if ctx.stream:
            return await self._stream_miss(request, rt, life, ctx)
        return await self._miss(rt, life, ctx)

    def _headers(self, ctx: RequestContext) -> dict[str, str]:
        h = {**ctx.headers, "x-llmgw-cache": ctx.cache_result, "x-request-id": ctx.request_id}
        if ctx.cache_key:  # like LiteLLM's x-litellm-cache-key: what POST /cache/delete takes
            h["x-llmgw-cache-key"] = ctx.cache_key
        return h

    def _replay(self, ctx: RequestContext, hit: CachedAnswer) -> web.Response:
        ctx.usage = hit.usage
        headers = self._headers(ctx)
        headers["age"] = str(age_s(hit))
        if hit.distance is not None:
            headers["x-llmgw-cache-distance"] = f"{hit.distance:.4f}"
        if hit.score is not None:
            headers["x-llmgw-cache-score"] = f"{hit.score:.4f}"
        if not ctx.stream:
            return web.Response(body=hit.body, content_type=JSON, headers=headers)
        sse, usage_event = (hit.sse, hit.sse_usage) if hit.sse is not None else body_to_sse(ctx.endpoint, hit.body)
        parts = [sse]
        if ctx.client_wants_usage and usage_event:
            parts.append(usage_event)
        parts.append(SSE_DONE)
        headers["Cache-Control"] = "no-cache"
        return web.Response(body=b"".join(parts), content_type="text/event-stream", headers=headers)

    async def _miss(self, rt: Runtime, life: RequestLifecycle, ctx: RequestContext) -> web.Response:
        provider = rt.providers[ctx.model.name]
        t0 = time.perf_counter()
        try:
            raw = await provider.complete(ctx.endpoint, upstream_payload(ctx.model, ctx.body, stream=False))
        finally:
            rt.metrics.upstream_latency.labels(ctx.model.name).observe(time.perf_counter() - t0)
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(502, "upstream answered 200 with a body that is not JSON", code="upstream_bad_body") from None
        ctx.usage = usage_from(obj) or estimate_usage(ctx.body, raw)
        complete = isinstance(obj, dict) and bool(obj.get("choices") or obj.get("data"))
        if complete:
            usage, created = ctx.usage, time.time()

            def answer() -> CachedAnswer:
                sse, sse_usage = body_to_sse(ctx.endpoint, raw) if ctx.endpoint != "embeddings" else (None, None)
                return CachedAnswer(body=raw, created=created, sse=sse, sse_usage=sse_usage, usage=usage)

            life.store_when_done(answer)
        return web.Response(body=raw, content_type=JSON, headers=self._headers(ctx))

    async def _stream_miss(self, request: web.Request, rt: Runtime, life: RequestLifecycle,
                           ctx: RequestContext) -> web.StreamResponse:
        provider = rt.providers[ctx.model.name]
        t0 = time.perf_counter()
        events = await provider.open_stream(ctx.endpoint, upstream_payload(ctx.model, ctx.body, stream=True))
        asm = StreamAssembler(ctx.endpoint)
        try:
            resp = web.StreamResponse(headers={**self._headers(ctx), "Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
            await resp.prepare(request)
            life.headers_sent(resp)  # from here on an error is an SSE event, never a second response
            async for event in events:
                if asm.feed(event) or ctx.client_wants_usage:
                    await resp.write(event)
        finally:
            # Closing the upstream connection stops the generation when we stop early (hang-up, error).
            await events.aclose()  # type: ignore[attr-defined]
            rt.metrics.upstream_latency.labels(ctx.model.name).observe(time.perf_counter() - t0)
            ctx.usage = asm.usage or estimate_usage(ctx.body, b"".join(asm.events))
        if asm.done:
            usage, created = ctx.usage, time.time()
            life.store_when_done(lambda: CachedAnswer(body=asm.body(), created=created, sse=b"".join(asm.events),
                                                      sse_usage=asm.usage_event, usage=usage))
            life.store_now()
        await resp.write_eof()
        return resp

    # --- other endpoints --------------------------------------------------------------------------------------
    async def models(self, request: web.Request) -> web.Response:
        if self.rt.identity is not None:
            await self.rt.identity.caller(request)
        data = [{"id": m.name, "object": "model", "created": 0, "owned_by": m.provider.value} for m in
                self.rt.config.models]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=JSON)

    async def spend(self, request: web.Request) -> web.Response:
        if self.rt.identity is not None and request.remote not in ("127.0.0.1", "::1"):
            # A shared gateway serves many tenants: its totals are for the operator (status.spend), not for callers.
            raise ApiError(403, "/spend is served on loopback only in gateway mode", code="spend_forbidden")
        return await self.rt.spend.handle(request)  # NullSpend (spend off): 404 spend_disabled


@web.middleware
async def _never_a_traceback(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Anything unexpected becomes an OpenAI-style 500 (logged with its traceback), and 404/405 speak JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status, "http_error")
        msg = f"{request.method} {request.path}: {e.reason}"
        return error_response(ApiError(e.status, msg, code=code), _rid(request))
    except ApiError as e:
        return error_response(e, _rid(request))
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(INTERNAL, _rid(request))


async def _start_metrics_listener(config: Config, probes: Probes) -> web.AppRunner:
    """A second listener that serves only /metrics, so Prometheus can scrape the pod without reaching the API
    (which holds the upstream keys and stays on 127.0.0.1)."""
    # Reachable from outside the pod: the same listener limits and JSON errors as the API port.
    app = web.Application(middlewares=[_never_a_traceback], handler_args=listener.handler_args(config.listen))
    listener.install(app, config.listen)
    app.router.add_get("/metrics", probes.metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.metrics.host, config.metrics.port).start()
    return runner


def create_app(config: Config, *, config_path: Path | None = None, metrics: Metrics | None = None,
               reload_interval_s: float = 2.0) -> web.Application:
    app = web.Application(client_max_size=config.listen.max_body_bytes, middlewares=[_never_a_traceback],
                          handler_args=listener.handler_args(config.listen))
    listener.install(app, config.listen)  # header deadline, JSON protocol errors (read at start-up only)
    REDACTOR.add_config(config)
    install_log_filter()  # configured credentials never appear in a log line
    app[METRICS] = metrics or Metrics()
    app[RUNTIME] = slot = RuntimeSlot()
    h = Handlers(app)
    probes = Probes(lambda: slot.current, app[METRICS])
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", h.chat)
        app.router.add_post(f"{prefix}/completions", h.completions)
        app.router.add_post(f"{prefix}/embeddings", h.embeddings)
        app.router.add_get(f"{prefix}/models", h.models)
    app.router.add_get("/spend", h.spend)
    app.router.add_get("/healthz", probes.healthz)
    app.router.add_get("/readyz", probes.readyz)
    register_admin_routes(app, lambda: slot.current)
    if config.metrics.enabled:
        app.router.add_get("/metrics", probes.metrics)

    async def lifecycle(app: web.Application) -> Any:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=60, ttl_dns_cache=300),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        slot.current = await build_runtime(config, app[METRICS], session)
        metrics_runner = await _start_metrics_listener(config, probes) if config.metrics.port else None
        watcher_task = None
        retiring: set[asyncio.Task[None]] = set()
        if config_path is not None:
            async def swap(new: Config) -> None:
                old = slot.current
                slot.current = await build_runtime(new, app[METRICS], session)
                # The old runtime finishes its in-flight requests, then closes (spend handed on, never lost).
                task = asyncio.create_task(old.retire(lambda: slot.current), name="retire-runtime")
                retiring.add(task)
                task.add_done_callback(retiring.discard)

            watcher = ConfigWatcher(config_path, swap, app[METRICS], reload_interval_s)
            watcher_task = asyncio.create_task(watcher.run())
        yield
        if watcher_task is not None:
            watcher_task.cancel()
        if retiring:  # handlers are done by now (shutdown): retired runtimes close quickly
            await asyncio.wait(list(retiring), timeout=30)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await slot.current.close()
        await session.close()

    app.cleanup_ctx.append(lifecycle)
    return app

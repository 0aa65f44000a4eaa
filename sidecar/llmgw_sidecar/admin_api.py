"""Admin HTTP API (cache inspection and invalidation, per-scope savings) and LiteLLM's cache and health endpoints.

Admin routes need `Authorization: Bearer <admin token>` (admin.token / admin.token_file); without a token configured
they answer 404 admin_disabled, so nothing is exposed by accident. The work is done by cache.admin.CacheAdmin, the
same code the `llmgw-sidecar cache` CLI runs.

    GET  /admin/cache/entries?scope=&model=&older_than=&generation=&stale_generations=&cache=&cursor=&limit=
    GET  /admin/cache/entry?key=...
    POST /admin/cache/invalidate   {"scope", "model", "older_than", "generation", "stale_generations", "cache",
                                    "keys", "all", "dry_run"}
    GET  /spend/scopes?scope=&day=&last=&top=          (like /spend: no token, the API listens on 127.0.0.1)
    GET  /cache/ping, POST /cache/delete {"keys": [...]}, POST /cache/flushall     (LiteLLM, admin token)
    GET  /health/liveliness, /health/liveness, /health/readiness                  (LiteLLM, no token)
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from .cache import generation
from .cache.admin import KINDS, CacheAdmin, Selector, parse_duration
from .config import ConfigError
from .errors import ApiError
from .runtime import Runtime
from .spend.scopes import read_scopes

ADMIN_DEADLINE_S = 60.0  # a purge of a big cache is many SCAN pages; bounded, never forever
_ACTOR = re.compile(r"[^A-Za-z0-9@._:/+-]")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class AdminRoutes:
    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self.runtime = runtime

    # --- auth and helpers ----------------------------------------------------------------------------------------
    def _authorize(self, request: web.Request) -> Runtime:
        rt = self.runtime()
        try:
            token = rt.config.admin.resolved_token()
        except ConfigError as e:  # the mounted Secret vanished: the API stays closed, and says why
            raise ApiError(503, str(e), code="admin_token_unreadable") from None
        if not token:
            raise ApiError(404, "the admin API is off: set admin.token (or admin.token_file) to enable it",
                           code="admin_disabled")
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "missing or wrong admin token (Authorization: Bearer <admin token>)",
                           code="invalid_admin_token", headers={"WWW-Authenticate": "Bearer"})
        return rt

    @staticmethod
    def _who(request: web.Request) -> str:
        # The token proves the right to ask, not a name: the caller may say who it is (X-LLMGW-Actor), and the
        # address is logged either way.
        actor = _ACTOR.sub("", request.headers.get("X-LLMGW-Actor", ""))[:64] or "unnamed"
        return f"admin-api actor={actor} from={request.remote}"

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, "request body is not valid JSON", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object", code="invalid_body")
        return body

    @staticmethod
    def _selector(p: dict[str, Any]) -> Selector:
        try:
            older = p.get("older_than")
            gen = p.get("generation")
            kinds = p.get("cache") or "all"
            sel = Selector(
                scope=str(p["scope"]) if p.get("scope") else None,
                model=str(p["model"]) if p.get("model") else None,
                older_than_s=parse_duration(str(older)) if older not in (None, "") else None,
                generation=int(gen) if gen not in (None, "") else None,
                stale_generations=str(p.get("stale_generations", "")).lower() in ("1", "true", "yes"),
                kinds=KINDS if kinds == "all" else (str(kinds),),
            )
        except (TypeError, ValueError) as e:
            raise ApiError(400, f"invalid selector: {e}", code="invalid_selector") from None
        if any(k not in KINDS for k in sel.kinds):
            raise ApiError(400, "cache must be exact, semantic or all", code="invalid_selector", param="cache")
        return sel

    async def _run(self, coro: Any) -> Any:
        try:
            async with asyncio.timeout(ADMIN_DEADLINE_S):
                return await coro
        except ApiError:
            raise
        except ValueError as e:
            raise ApiError(400, str(e), code="invalid_request") from None
        except Exception as e:  # noqa: BLE001 - Redis trouble is the server's problem, reported without a traceback
            raise ApiError(503, f"cache admin operation failed: {type(e).__name__}: {e}",
                           code="cache_unavailable") from None

    # --- admin API -----------------------------------------------------------------------------------------------
    async def entries(self, request: web.Request) -> web.Response:
        rt = self._authorize(request)
        q = dict(request.query)
        sel = self._selector(q)
        try:
            limit = max(1, min(1000, int(q.get("limit", "100"))))
        except ValueError:
            raise ApiError(400, "limit must be an integer", code="invalid_request", param="limit") from None
        admin = CacheAdmin(rt.redis, rt.config, rt.metrics)
        found, cursor = await self._run(admin.page(sel, q.get("cursor", "0"), limit))
        return _json({"object": "list", "selector": sel.describe(), "generation": admin.generation,
                      "data": [e.to_dict() for e in found], "next_cursor": None if cursor == "0" else cursor})

    async def entry(self, request: web.Request) -> web.Response:
        rt = self._authorize(request)
        key = request.query.get("key", "")
        if not key:
            raise ApiError(400, "query parameter 'key' is required", code="invalid_request", param="key")
        e = await self._run(CacheAdmin(rt.redis, rt.config, rt.metrics).show(key))
        if e is None:
            raise ApiError(404, "no such entry in this gateway's cache", code="entry_not_found", param="key")
        return _json(e.to_dict())

    async def invalidate(self, request: web.Request) -> web.Response:
        rt = self._authorize(request)
        body = await self._body(request)
        admin = CacheAdmin(rt.redis, rt.config, rt.metrics)
        who = self._who(request)
        if body.get("keys") is not None:
            keys = body["keys"]
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ApiError(400, "keys must be a list of strings", code="invalid_request", param="keys")
            return _json(await self._run(admin.delete_keys(keys, who)))
        sel = self._selector(body)
        if sel.by() == "all" and body.get("all") is not True:
            raise ApiError(400, "no selector given: set scope, model, older_than, generation or "
                           "stale_generations, or \"all\": true to drop every entry of this gateway",
                           code="invalid_selector")
        counts = await self._run(admin.delete(sel, who, dry_run=bool(body.get("dry_run"))))
        return _json({"deleted": counts, "selector": sel.describe(), "dry_run": bool(body.get("dry_run"))})

    async def scopes(self, request: web.Request) -> web.Response:
        """Per cache scope figures (hits, misses, tokens and USD saved) from the per-day Redis counters."""
        rt = self.runtime()
        q = request.query
        try:
            last = max(1, min(400, int(q.get("last", "30"))))
            top = int(q["top"]) if q.get("top") else None
        except ValueError:
            raise ApiError(400, "last and top must be integers", code="invalid_request") from None
        g = rt.config.gateway
        doc = await self._run(read_scopes(rt.redis, rt.config.redis.key_prefix, g.namespace, g.name,
                                          days=q.getall("day", []) or None, last=last, scope=q.get("scope") or None,
                                          top=top))
        return _json(doc)

    # --- LiteLLM's endpoints -------------------------------------------------------------------------------------
    async def cache_ping(self, request: web.Request) -> web.Response:
        rt = self._authorize(request)
        admin = CacheAdmin(rt.redis, rt.config, rt.metrics)
        try:
            async with asyncio.timeout(5):
                await admin.ping()
        except Exception as e:  # noqa: BLE001 - LiteLLM answers 503 "Service Unhealthy" here
            raise ApiError(503, f"Service Unhealthy ({type(e).__name__})", code="cache_unhealthy") from None
        c = rt.config
        params = {"type": "redis", "mode": c.redis.mode.value, "namespace": c.redis.key_prefix,
                  "scope": c.cache.scope.value, "generation": c.cache.generation,
                  "exact": c.cache.exact.enabled, "semantic": c.cache.semantic.enabled}
        return _json({"status": "healthy", "cache_type": "redis-semantic" if c.cache.semantic.enabled else "redis",
                      "ping_response": True, "set_cache_response": "success", "llmgw_cache_params": params})

    async def cache_delete(self, request: web.Request) -> web.Response:
        rt = self._authorize(request)
        body = await self._body(request)
        keys = body.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ApiError(400, "body must be {\"keys\": [\"<key or fingerprint>\", ...]}", code="invalid_request",
                           param="keys")
        result = await self._run(CacheAdmin(rt.redis, rt.config, rt.metrics).delete_keys(keys, self._who(request)))
        return _json({"status": "success", **result})

    async def cache_flushall(self, request: web.Request) -> web.Response:
        # Never FLUSHALL: the Redis may be shared. This gateway's entries only (global-scope entries are shared).
        rt = self._authorize(request)
        counts = await self._run(CacheAdmin(rt.redis, rt.config, rt.metrics).delete(Selector(), self._who(request)))
        return _json({"status": "success", "deleted": counts})

    async def liveliness(self, request: web.Request) -> web.Response:
        return _json("I'm alive!")

    async def readiness(self, request: web.Request) -> web.Response:
        rt = self.runtime()
        ok = await rt.guard.call("ping", rt.redis.ping, default=False, timeout_s=0.5)
        ready = bool(ok) or rt.config.limits.fail_open
        return _json({"status": "healthy" if ready else "unhealthy", "cache": "redis",
                      "redis": "connected" if ok else "unreachable", "db": "Not connected"},
                     status=200 if ready else 503)


def register_admin_routes(app: web.Application, runtime: Callable[[], Runtime]) -> None:
    """Called once by app.create_app; `runtime` returns the current Runtime (it changes on config reload)."""
    r = AdminRoutes(runtime)
    app.router.add_get("/admin/cache/entries", r.entries)
    app.router.add_get("/admin/cache/entry", r.entry)
    app.router.add_post("/admin/cache/invalidate", r.invalidate)
    app.router.add_get("/spend/scopes", r.scopes)
    app.router.add_get("/cache/ping", r.cache_ping)
    app.router.add_post("/cache/delete", r.cache_delete)
    app.router.add_post("/cache/flushall", r.cache_flushall)
    for path in ("/health/liveliness", "/health/liveness"):
        app.router.add_get(path, r.liveliness)
    app.router.add_get("/health/readiness", r.readiness)

    async def top_scopes_size(app: web.Application) -> None:
        rt = runtime()
        rt.metrics.top_scopes.top_n = rt.config.metrics.top_scopes  # read at start-up, like metrics.port

    app.on_startup.append(top_scopes_size)
    generation.start(app, runtime)  # report the served cache generation for the gateway's status

"""Upstream providers: any OpenAI-compatible HTTP API (OpenAI, Azure OpenAI, vLLM, Ollama, TGI) and a built-in mock.

One pooled keep-alive aiohttp session per process. Deadlines: connect, first byte (until response headers) and
total; an error answer's body is read within the first-byte deadline too. Retries with exponential backoff and full
jitter on connection errors (refused, reset, and connect timeouts: nothing was sent), 429 and 5xx (Retry-After
honoured up to the cap), never on other 4xx, never after a first-byte timeout (the generation may be running and
billed) and never once a stream has started. After the last attempt: 502 upstream_unreachable, 504
upstream_connect_timeout, 504 upstream_timeout, or the upstream's own status and message (scrubbed of credentials).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import orjson

from .config import ModelConfig, Provider
from .errors import ApiError
from .metrics import Metrics
from .sse import SSE_DONE, split_events, sse_event

PATHS = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
ERROR_BODY_MAX = 64 * 1024  # an error's message is at the start; the rest is not read


class UpstreamProvider(Protocol):
    async def complete(self, endpoint: str, payload: dict[str, Any]) -> bytes:
        """The JSON body of a successful answer; ApiError otherwise."""

    async def open_stream(self, endpoint: str, payload: dict[str, Any]) -> AsyncIterator[bytes]:
        """Connect (with retries) and return an iterator over complete SSE events; ApiError before the first event."""


def upstream_payload(model: ModelConfig, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """What is sent upstream: the upstream model id, no gateway-only fields, and usage requested for streams
    (accounting needs it; the usage chunk is stripped again if the client did not ask for it)."""
    payload = {k: v for k, v in body.items() if k != "cache"}
    payload["model"] = model.upstream_model
    if stream:
        payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return payload


def relay_error(status: int, raw: bytes) -> ApiError:
    """Keep the upstream's own message, type and code; fall back to the raw text."""
    message, type_, code, param = None, None, None, None
    try:
        err = orjson.loads(raw).get("error")
        if isinstance(err, dict):
            message, type_, code, param = err.get("message"), err.get("type"), err.get("code"), err.get("param")
        elif isinstance(err, str):
            message = err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    text = raw[:500].decode(errors="replace").strip()
    return ApiError(status, f"upstream: {message or text or 'HTTP ' + str(status)}", type_=type_,
                    code=str(code) if code is not None else f"upstream_{status}", param=param)


def backoff_s(attempt: int, base: float, cap: float, retry_after: str | None) -> float:
    if retry_after:
        try:
            return min(float(retry_after), cap)
        except ValueError:
            pass
    return random.uniform(0, min(cap, base * (2**attempt)))


class HttpProvider:
    def __init__(self, model: ModelConfig, session: aiohttp.ClientSession, metrics: Metrics) -> None:
        self.model = model
        self.session = session
        self.metrics = metrics
        base = (model.base_url or "").rstrip("/")
        key = model.resolved_api_key()
        headers = {"Content-Type": "application/json", **model.headers}
        if model.provider == Provider.azure:
            self._base = f"{base}/openai/deployments/{model.upstream_model}/"
            self._query = f"?api-version={model.api_version}"
            if key:
                headers["api-key"] = key
        else:
            self._base = base + "/"
            self._query = ""
            if key:
                headers["Authorization"] = f"Bearer {key}"
        self.headers = headers
        t = model.timeouts
        self._timeout = aiohttp.ClientTimeout(total=None, connect=t.connect_s, sock_connect=t.connect_s)

    def url(self, endpoint: str) -> str:
        return self._base + PATHS[endpoint] + self._query

    async def _open(self, endpoint: str, payload: dict[str, Any]) -> tuple[aiohttp.ClientResponse, float]:
        data = orjson.dumps(payload)
        retry = self.model.retry
        name = self.model.name
        deadline = time.monotonic() + self.model.timeouts.total_s
        for attempt in range(retry.max_retries + 1):
            last = attempt == retry.max_retries
            try:
                async with asyncio.timeout(self.model.timeouts.first_byte_s):
                    resp = await self.session.post(self.url(endpoint), data=data, headers=self.headers,
                                                   timeout=self._timeout)
            except aiohttp.ConnectionTimeoutError:
                # No connection within connect_s: nothing was sent, so this is a connection error (retried).
                self.metrics.upstream_errors.labels(name, "connect_timeout").inc()
                if last:
                    raise ApiError(504, f"upstream: no connection within {self.model.timeouts.connect_s}s "
                                   f"({retry.max_retries + 1} attempts)", code="upstream_connect_timeout") from None
                self.metrics.upstream_retries.labels(name).inc()
                await asyncio.sleep(backoff_s(attempt, retry.backoff_base_s, retry.backoff_max_s, None))
                continue
            except TimeoutError:
                # A generation that timed out may still be running and billed: never retried.
                self.metrics.upstream_errors.labels(name, "timeout").inc()
                raise ApiError(504, f"upstream did not answer within {self.model.timeouts.first_byte_s}s",
                               code="upstream_timeout") from None
            except aiohttp.ClientError as e:
                self.metrics.upstream_errors.labels(name, "connect").inc()
                if last:
                    raise ApiError(502, f"upstream unreachable: {type(e).__name__}: {e}",
                                   code="upstream_unreachable") from None
                self.metrics.upstream_retries.labels(name).inc()
                await asyncio.sleep(backoff_s(attempt, retry.backoff_base_s, retry.backoff_max_s, None))
                continue
            if resp.status == 200:
                return resp, deadline
            raw = await self._error_body(resp, deadline)
            self.metrics.upstream_errors.labels(name, str(resp.status)).inc()
            if resp.status in RETRY_STATUSES and not last:
                self.metrics.upstream_retries.labels(name).inc()
                await asyncio.sleep(backoff_s(attempt, retry.backoff_base_s, retry.backoff_max_s,
                                              resp.headers.get("Retry-After")))
                continue
            err = relay_error(resp.status, raw)
            if "Retry-After" in resp.headers:
                err.headers["Retry-After"] = resp.headers["Retry-After"][:64]
            raise err
        raise AssertionError("unreachable")  # the loop always returns or raises

    async def _error_body(self, resp: aiohttp.ClientResponse, deadline: float) -> bytes:
        """An error answer's body, for its message: at most ERROR_BODY_MAX bytes, read within the first-byte
        deadline (and the total one). An upstream that sends the headers of an error and then stalls must not hold
        the request (or the retry loop) for long: what arrived in time is relayed."""
        buf = bytearray()
        budget = max(0.0, min(self.model.timeouts.first_byte_s, deadline - time.monotonic()))
        try:
            async with asyncio.timeout(budget):
                while len(buf) < ERROR_BODY_MAX:
                    chunk = await resp.content.read(ERROR_BODY_MAX - len(buf))
                    if not chunk:
                        resp.release()
                        return bytes(buf)
                    buf += chunk
        except (TimeoutError, aiohttp.ClientError):
            self.metrics.upstream_errors.labels(self.model.name, "error_body").inc()
        resp.close()  # not read to the end: this connection cannot be reused
        return bytes(buf)

    async def complete(self, endpoint: str, payload: dict[str, Any]) -> bytes:
        resp, deadline = await self._open(endpoint, payload)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await resp.read()
        except TimeoutError:
            self.metrics.upstream_errors.labels(self.model.name, "timeout").inc()
            raise ApiError(504, f"upstream answer not complete within {self.model.timeouts.total_s}s",
                           code="upstream_timeout") from None
        except aiohttp.ClientError as e:
            self.metrics.upstream_errors.labels(self.model.name, "read").inc()
            raise ApiError(502, f"upstream connection broke: {e}", code="upstream_broken") from None
        finally:
            resp.release()

    async def open_stream(self, endpoint: str, payload: dict[str, Any]) -> AsyncIterator[bytes]:
        resp, deadline = await self._open(endpoint, payload)
        return self._events(resp, deadline)

    async def _events(self, resp: aiohttp.ClientResponse, deadline: float) -> AsyncIterator[bytes]:
        buf = bytearray()
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())):
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    for event in split_events(buf):
                        yield event
        except TimeoutError:
            self.metrics.upstream_errors.labels(self.model.name, "timeout").inc()
            raise ApiError(504, "upstream stream exceeded its total deadline", code="upstream_timeout") from None
        except aiohttp.ClientError as e:
            self.metrics.upstream_errors.labels(self.model.name, "read").inc()
            raise ApiError(502, f"upstream stream broke: {e}", code="upstream_broken") from None
        finally:
            resp.release()


class MockProvider:
    """Deterministic answers without any network: same request, same words. For demos, load tests and tests."""

    _WORDS = ("cache", "token", "model", "answer", "gateway", "redis", "stream", "prompt", "vector", "latency",
              "budget", "limit", "sidecar", "cluster", "reply", "quick")

    def __init__(self, model: ModelConfig) -> None:
        self.model = model
        self.cfg = model.mock

    def _words(self, payload: dict[str, Any]) -> list[str]:
        seed = hashlib.sha256(orjson.dumps(payload.get("messages") or payload.get("prompt") or "",
                                           option=orjson.OPT_SORT_KEYS)).digest()
        rng = random.Random(seed)
        return [rng.choice(self._WORDS) for _ in range(self.cfg.completion_tokens)]

    @staticmethod
    def _prompt_tokens(payload: dict[str, Any]) -> int:
        src = payload.get("messages") or payload.get("prompt") or payload.get("input") or ""
        return max(1, len(orjson.dumps(src)) // 4)

    async def _delay(self) -> None:
        if self.cfg.latency_ms:
            await asyncio.sleep(self.cfg.latency_ms / 1000)

    def _head(self, payload: dict[str, Any], obj: str) -> dict[str, Any]:
        rid = hashlib.sha1(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
        return {"id": f"mock-{rid}", "object": obj, "created": int(time.time()), "model": self.model.upstream_model}

    async def complete(self, endpoint: str, payload: dict[str, Any]) -> bytes:
        await self._delay()
        pt = self._prompt_tokens(payload)
        if endpoint == "embeddings":
            inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
            data = [{"object": "embedding", "index": i, "embedding": self._vector(x)} for i, x in enumerate(inputs)]
            return orjson.dumps({"object": "list", "data": data, "model": self.model.upstream_model,
                                 "usage": {"prompt_tokens": pt, "total_tokens": pt}})
        text = " ".join(self._words(payload))
        ct = self.cfg.completion_tokens
        usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        if endpoint == "completions":
            choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
            return orjson.dumps({**self._head(payload, "text_completion"), "choices": [choice], "usage": usage})
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": "stop"}
        return orjson.dumps({**self._head(payload, "chat.completion"), "choices": [choice], "usage": usage})

    def _vector(self, text: Any) -> list[float]:
        rng = random.Random(hashlib.sha256(orjson.dumps(text)).digest())
        v = [rng.uniform(-1, 1) for _ in range(self.cfg.embedding_dims)]
        norm = sum(x * x for x in v) ** 0.5 or 1.0
        return [x / norm for x in v]

    async def open_stream(self, endpoint: str, payload: dict[str, Any]) -> AsyncIterator[bytes]:
        await self._delay()
        return self._stream(endpoint, payload)

    async def _stream(self, endpoint: str, payload: dict[str, Any]) -> AsyncIterator[bytes]:
        words = self._words(payload)
        n = self.cfg.stream_chunks
        parts = [" ".join(words[i * len(words) // n:(i + 1) * len(words) // n]) for i in range(n)]
        kind = "text_completion" if endpoint == "completions" else "chat.completion.chunk"
        head = self._head(payload, kind)
        for i, part in enumerate(parts):
            text = part if i == 0 else " " + part
            if endpoint == "completions":
                choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
            else:
                delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            yield sse_event(orjson.dumps({**head, "choices": [choice]}))
            if i < n - 1 and self.cfg.latency_ms:
                await asyncio.sleep(self.cfg.latency_ms / 1000 / n)
        end: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": "stop"}
        if endpoint == "completions":
            end["text"] = ""
        else:
            end["delta"] = {}
        yield sse_event(orjson.dumps({**head, "choices": [end]}))
        if (payload.get("stream_options") or {}).get("include_usage"):
            pt, ct = self._prompt_tokens(payload), self.cfg.completion_tokens
            usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
            yield sse_event(orjson.dumps({**head, "choices": [], "usage": usage}))
        yield SSE_DONE


def make_provider(model: ModelConfig, session: aiohttp.ClientSession, metrics: Metrics) -> UpstreamProvider:
    if model.provider == Provider.mock:
        return MockProvider(model)
    return HttpProvider(model, session, metrics)

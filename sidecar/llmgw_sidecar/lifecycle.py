"""The end of a request: one place, run exactly once on every exit path.

    async with rt.lifecycle(endpoint, request_id) as life:
        life.ctx = ...                  # once the request is parsed and routed
        life.store_when_done(answer)    # a complete answer that MAY be stored
        life.headers_sent(resp)         # from here on, no second response: errors become one SSE error event
        return ... / return await life.fail(request, err)

Leaving the block (success, ApiError, unexpected exception, client hang-up, cancellation, deadline) settles limits,
records spend, counts metrics and decides whether the pending answer is stored: only a complete 200 whose client got
everything, and only when the request did not say no-store. Work that must outlive the request (stores, and a settle
interrupted by cancellation) is handed to the runtime, which owns it until it is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .context import CachedAnswer, RequestContext
from .errors import ApiError
from .redact import REDACTOR

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("llmgw")
JSON = "application/json"
CLIENT_GONE = 499  # nginx's convention: the client closed the connection before the answer was complete


def error_response(err: ApiError, request_id: str, extra: dict[str, str] | None = None) -> web.Response:
    headers = {**(extra or {}), **err.headers, "x-request-id": request_id}
    return web.Response(status=err.status, body=_body(err), content_type=JSON, headers=headers)


def error_event(err: ApiError) -> bytes:
    """How OpenAI reports a failure inside a stream (the official clients raise it as an APIError)."""
    return b"data: " + _body(err) + b"\n\n"


def _body(err: ApiError) -> bytes:
    # Upstream messages are relayed; some quote the credentials they were sent: never pass those on.
    err.message = REDACTOR.scrub(err.message)
    return err.body()


class RequestLifecycle:
    __slots__ = ("_store", "ctx", "endpoint", "request_id", "response", "rt", "started", "status")

    def __init__(self, rt: Runtime, endpoint: str, request_id: str) -> None:
        self.rt = rt
        self.endpoint = endpoint
        self.request_id = request_id
        self.ctx: RequestContext | None = None
        self.response: web.StreamResponse | None = None  # set once headers are on the wire
        self.status = 200  # used while there is no ctx yet
        self.started = time.perf_counter()
        self._store: Callable[[], CachedAnswer] | None = None

    async def __aenter__(self) -> RequestLifecycle:
        self.rt.enter()
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        # The end of the request, inline (no further coroutine on the hot path of a cache hit).
        rt = self.rt
        try:
            ctx = self.ctx
            if exc is not None:
                # Escaped the handler: a cancellation (hang-up with handler cancellation, shutdown) or a bug.
                self.set_status(CLIENT_GONE if isinstance(exc, asyncio.CancelledError | ConnectionError) else 500)
            if ctx is None:
                m = rt.metrics
                m.child(m.requests, self.endpoint, "", str(self.status), "none").inc()
                return
            if self._store is not None and exc is None and ctx.status == 200 and not ctx.directives.no_store:
                rt.store(ctx, self._store)
            gov = rt.governor
            if gov is not None:
                task = asyncio.current_task()
                if exc is not None or (task is not None and task.cancelling()):
                    # A cancelled task cannot await: the runtime settles it (and waits for that before closing).
                    rt.background(gov.settle(ctx), "settle")
                else:
                    await gov.settle(ctx)
            rt.spend.record(ctx)  # NullSpend when spend is off
            self._count(ctx)
        except Exception:  # accounting must never turn an answer into an error
            log.exception("ending request %s failed", self.request_id)
        finally:
            rt.leave()

    # --- during the request -----------------------------------------------------------------------------------
    def store_when_done(self, make_answer: Callable[[], CachedAnswer]) -> None:
        """A complete answer that may be stored once the request ends well (building it is background work)."""
        self._store = make_answer

    def store_now(self) -> None:
        """The answer is complete and only the end of the stream is left to write: store without waiting for it
        (so the next identical request already hits). Same rules as at the end."""
        ctx, make = self.ctx, self._store
        if make is not None and ctx is not None and ctx.status == 200 and not ctx.directives.no_store:
            self._store = None
            self.rt.store(ctx, make)

    def headers_sent(self, resp: web.StreamResponse) -> None:
        self.response = resp

    def set_status(self, status: int) -> None:
        if self.ctx is not None:
            self.ctx.status = status
        self.status = status

    async def fail(self, err: ApiError) -> web.StreamResponse:
        """The one place an error becomes what the client sees: a JSON error response before the headers, one SSE
        error event and the end of the stream after them."""
        self.set_status(err.status)
        resp = self.response
        if resp is None:
            return error_response(err, self.request_id, self.ctx.headers if self.ctx else None)
        try:
            await resp.write(error_event(err))
            await resp.write_eof()
        except ConnectionError:
            self.set_status(CLIENT_GONE)
        return resp

    def client_gone(self) -> web.StreamResponse:
        """The client hung up: nothing more is written; what aiohttp gets back is never sent."""
        self.set_status(CLIENT_GONE)
        return self.response or web.Response(status=CLIENT_GONE)

    # --- the end ------------------------------------------------------------------------------------------------
    def _count(self, ctx: RequestContext) -> None:
        m = self.rt.metrics
        name = ctx.model.name
        m.child(m.requests, ctx.endpoint, name, str(ctx.status), ctx.cache_result).inc()
        m.child(m.request_latency, ctx.endpoint, ctx.cache_result).observe(time.perf_counter() - self.started)
        u = ctx.usage
        if u is None:
            return
        counter = m.tokens_saved if ctx.cache_result.startswith("hit") else m.tokens
        if u.prompt_tokens:
            m.child(counter, name, "prompt").inc(u.prompt_tokens)
        if u.completion_tokens:
            m.child(counter, name, "completion").inc(u.completion_tokens)

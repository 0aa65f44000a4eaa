"""The HTTP listener's own limits, below the application: what aiohttp does before a handler runs.

- request line and header fields: at most `listen.max_header_bytes` each and `listen.max_headers` of them (431);
- a request's headers must arrive within `listen.read_timeout_s` of its first byte (slowloris: 408, then closed);
- an idle keep-alive connection is closed after `listen.keepalive_timeout_s`;
- a request the HTTP parser refuses (bad framing, duplicate Content-Length, invalid characters, ...) gets an
  OpenAI-style JSON error, and one rate-limited INFO line in the log instead of aiohttp's ERROR traceback.

aiohttp has no switch for the last two: `install()` gives the application's server a RequestHandler subclass.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web, web_protocol, web_server
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestPayloadError

from .config import ListenConfig
from .errors import ApiError
from .redis_guard import RateLimitedLog

log = logging.getLogger("llmgw.http")
_quiet = RateLimitedLog(log, every_s=10.0)


def handler_args(listen: ListenConfig) -> dict[str, Any]:
    """aiohttp's own limits, from the config (Application(handler_args=...))."""
    return {"max_line_size": listen.max_header_bytes, "max_field_size": listen.max_header_bytes,
            "max_headers": listen.max_headers, "keepalive_timeout": listen.keepalive_timeout_s,
            "lingering_time": 1.0}


def _protocol_error(status: int, exc: BaseException | None, listen: ListenConfig) -> ApiError:
    """A fixed message per kind of problem: the parser's own text may quote the offending bytes."""
    if isinstance(exc, LineTooLong):
        return ApiError(431, f"request line or header field longer than {listen.max_header_bytes} bytes",
                        code="request_header_too_large", type_="invalid_request_error")
    text = str(exc) if exc is not None else ""
    if "too many headers" in text.lower():
        return ApiError(431, f"more than {listen.max_headers} header fields", code="too_many_headers",
                        type_="invalid_request_error")
    if status == 413:
        return ApiError(413, "request body too large", code="request_too_large", type_="invalid_request_error")
    kind = type(exc).__name__ if isinstance(exc, BadHttpMessage) else "malformed request"
    return ApiError(400 if status < 500 else status, f"malformed HTTP request ({kind})", code="malformed_request",
                    type_="invalid_request_error" if status < 500 else "api_error")


class GatewayRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler with a header read deadline and JSON protocol errors."""

    listen: ListenConfig  # set on the class made per app by install()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages or self._waiter is None or self._waiter.done():
            # a whole request is here (the usual case: one packet), or one is being handled: no clock
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
        elif data and self._header_deadline is None and not self._force_close:
            # bytes of a request arrived while we wait for one, and its headers are not complete: start the clock
            self._header_deadline = self._loop.call_later(self.listen.read_timeout_s, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._force_close or self.transport is None or not (self._waiter is not None and not self._messages):
            return
        err = ApiError(408, f"request headers not received within {self.listen.read_timeout_s:g}s",
                       code="request_timeout", type_="invalid_request_error")
        _quiet.info("slow-headers", f"closed a connection: {err.message}")
        body = err.body()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, RequestPayloadError | HttpProcessingError | ConnectionError):
            # aiohttp reads the unread rest of a body after the answer ("lingering"): a body that cannot be decoded
            # there is the client's problem, already answered; one quiet line, no traceback.
            _quiet.info("linger", f"discarded the unread rest of a request body: {type(exc).__name__}")
            return
        super().log_exception(*args, **kwargs)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500 and not isinstance(exc, BadHttpMessage):
            return super().handle_error(request, status, exc, message)  # a bug below the app: keep its traceback
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error response")
        err = _protocol_error(status, exc, self.listen)
        _quiet.info(f"proto:{err.code}", f"refused a malformed request ({err.status}): {err.message}")
        resp = web.Response(status=err.status, body=err.body(), content_type="application/json")
        resp.force_close()
        return resp


def install(app: web.Application, listen: ListenConfig) -> None:
    """Make every server built for `app` (web.run_app, AppRunner) use GatewayRequestHandler with `listen`."""
    handler_cls: type[GatewayRequestHandler] = type("GatewayRequestHandlerForApp", (GatewayRequestHandler,),
                                                    {"listen": listen})

    class _Server(web_server.Server):
        def __call__(self) -> web_protocol.RequestHandler:
            return handler_cls(self, loop=self._loop, **self._kwargs)

    make = app._make_handler

    def make_handler(**kwargs: Any) -> web_server.Server:
        server = make(**kwargs)
        server.__class__ = _Server  # same state, our connection handler
        return server

    app._make_handler = make_handler  # type: ignore[method-assign]


def timeout_error(what: str, seconds: float) -> ApiError:
    return ApiError(408, f"{what} not received within {seconds:g}s", code="request_timeout",
                    type_="invalid_request_error")

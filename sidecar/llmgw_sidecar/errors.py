"""OpenAI-style errors. Raise ApiError anywhere in the request path; the app turns it into
`{"error": {"message", "type", "param", "code"}}` with the right status and headers."""

from __future__ import annotations

import orjson

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    431: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_ or _TYPES.get(status, "api_error")
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    err = {"message": message, "type": type_, "param": param, "code": code}
    try:
        return orjson.dumps({"error": err})
    except TypeError:  # a value echoed from a hostile request (lone surrogates from undecodable header bytes)
        clean = {k: v.encode("utf-8", "replace").decode() if isinstance(v, str) else v for k, v in err.items()}
        return orjson.dumps({"error": clean})

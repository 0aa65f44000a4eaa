"""Server-sent events framing: one event, the end marker, splitting a byte stream into events, the usage and the
error an event carries. Recording a streamed answer for the cache and replaying a cached answer as a stream live in
cache/stream.py.
"""

from __future__ import annotations

from typing import Any

from .context import Usage
from .errors import ApiError

SSE_DONE = b"data: [DONE]\n\n"


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def stream_error(err: Any) -> ApiError:
    """An upstream's own error event inside a stream, relayed as one (its message is scrubbed where it is sent)."""
    if isinstance(err, dict):
        msg, code = err.get("message"), err.get("code")
        return ApiError(502, f"upstream: {msg if isinstance(msg, str) else 'error inside the stream'}",
                        code=str(code) if isinstance(code, str | int) else "upstream_stream_error",
                        type_=err["type"] if isinstance(err.get("type"), str) else None)
    return ApiError(502, f"upstream: {err if isinstance(err, str) else 'error inside the stream'}",
                    code="upstream_stream_error")


def usage_from(obj: Any) -> Usage | None:
    if not isinstance(obj, dict):
        return None
    u = obj.get("usage")
    if not isinstance(u, dict):
        return None
    details = u.get("prompt_tokens_details") or {}

    def n(v: Any) -> int:
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0

    return Usage(prompt_tokens=n(u.get("prompt_tokens")), completion_tokens=n(u.get("completion_tokens")),
                 cached_prompt_tokens=n(details.get("cached_tokens")) if isinstance(details, dict) else 0)


def split_events(buffer: bytearray) -> list[bytes]:
    """Pop every complete SSE event (terminated by a blank line) off the front of buffer."""
    out: list[bytes] = []
    while True:
        i = buffer.find(b"\n\n")
        j = buffer.find(b"\r\n\r\n")
        if i < 0 and j < 0:
            return out
        if j >= 0 and (i < 0 or j < i):
            end = j + 4
            out.append(bytes(buffer[:j]).replace(b"\r\n", b"\n") + b"\n\n")
        else:
            end = i + 2
            out.append(bytes(buffer[:end]))
        del buffer[:end]

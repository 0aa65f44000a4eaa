"""The OpenAI wire format: request parsing (size-independent limits such as JSON depth) and validation; cache
directives live in cache_controls.py, server-sent events in sse.py, stream recording in cache/stream.py.

Pure functions: no I/O, so each rule is tested directly.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import ApiError

ENDPOINTS = ("chat", "completions", "embeddings")

_INT_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs", "dimensions")
_NUM_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def parse_body(raw: bytes, max_depth: int = 64) -> dict[str, Any]:
    if not raw:
        raise _bad("request body is empty; expected a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "depth" in str(e):
            raise _too_deep(max_depth) from None
        raise _bad(f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object", code="invalid_json")
    # Fewer brackets than the limit cannot nest deeper than it: the walk runs only for bodies that might.
    if raw.count(b"{") + raw.count(b"[") > max_depth and _depth_exceeds(body, max_depth):
        raise _too_deep(max_depth)
    return body


def _too_deep(limit: int) -> ApiError:
    return _bad(f"request body nests objects/arrays deeper than the limit of {limit} (listen.max_json_depth)",
                code="json_too_deep")


def _depth_exceeds(obj: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if depth > limit:
            return True
        children = o.values() if isinstance(o, dict) else o
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _token_ids(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)


def _prompt_shape_ok(v: Any) -> bool:
    """OpenAI's forms: a string, an array of strings, an array of token ids, or an array of token-id arrays."""
    if isinstance(v, str):
        return True
    if not isinstance(v, list) or not v:
        return False
    return (all(isinstance(x, str) for x in v) or _token_ids(v)
            or all(_token_ids(x) and x for x in v))


def validate(endpoint: str, body: dict[str, Any]) -> None:
    """Check what the gateway relies on; the upstream validates the rest."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a non-empty string", "model")
    if endpoint == "chat":
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise _bad("'messages' is required and must be a non-empty array", "messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise _bad(f"'messages[{i}]' must be an object with a string 'role'", f"messages[{i}]")
            content = m.get("content")
            if content is not None and not isinstance(content, str | list):
                raise _bad(f"'messages[{i}].content' must be a string or an array", f"messages[{i}].content")
    elif endpoint == "completions":
        if not _prompt_shape_ok(body.get("prompt")):
            raise _bad("'prompt' is required: a string, an array of strings, an array of token ids or an array of "
                       "token-id arrays", "prompt")
    elif endpoint == "embeddings":
        if not _prompt_shape_ok(body.get("input")):
            raise _bad("'input' is required: a string, a non-empty array of strings, an array of token ids or an "
                       "array of token-id arrays", "input")
        if body.get("stream"):
            raise _bad("embeddings cannot be streamed", "stream")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    for f in _INT_FIELDS:
        v = body.get(f)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise _bad(f"'{f}' must be a non-negative integer", f)
    for f in _NUM_FIELDS:
        v = body.get(f)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
            raise _bad(f"'{f}' must be a number", f)
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise _bad("'stream_options' must be an object", "stream_options")

"""The OpenAI wire format: request validation, cache directives, and server-sent-event framing/assembly.

Pure functions: no I/O, so each rule is tested directly.
"""

from __future__ import annotations

from typing import Any

import orjson

from .cache_controls import cache_directives  # noqa: F401 - re-exported: the app reads it here
from .context import Usage
from .errors import ApiError

ENDPOINTS = ("chat", "completions", "embeddings")
SSE_DONE = b"data: [DONE]\n\n"

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


def usage_from(obj: dict[str, Any] | None) -> Usage | None:
    if not isinstance(obj, dict):
        return None
    u = obj.get("usage")
    if not isinstance(u, dict):
        return None
    details = u.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(u.get("prompt_tokens") or 0),
        completion_tokens=int(u.get("completion_tokens") or 0),
        cached_prompt_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
    )


def stream_error(err: Any) -> ApiError:
    """An upstream's own error event inside a stream, relayed as one (its message is scrubbed where it is sent)."""
    if isinstance(err, dict):
        msg, code = err.get("message"), err.get("code")
        return ApiError(502, f"upstream: {msg if isinstance(msg, str) else 'error inside the stream'}",
                        code=str(code) if isinstance(code, str | int) else "upstream_stream_error",
                        type_=err["type"] if isinstance(err.get("type"), str) else None)
    return ApiError(502, f"upstream: {err if isinstance(err, str) else 'error inside the stream'}",
                    code="upstream_stream_error")


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class StreamAssembler:
    """Rebuilds the non-streamed answer from stream chunks (chat.completion or text_completion), keeps the raw events
    for a faithful replay, and separates the usage-only chunk the gateway asked for."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.events: list[bytes] = []  # raw content events, as received
        self.usage_event: bytes | None = None
        self.done = False
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None

    def feed(self, event: bytes) -> bool:
        """Take one SSE event (b"data: ...\\n\\n"). Returns False for the usage-only chunk (which the caller
        forwards only if the client asked for usage), True for events to forward."""
        data = event.strip()
        if not data.startswith(b"data:"):
            self.events.append(event)  # comments / keep-alives pass through untouched
            return True
        data = data[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ApiError(502, "upstream sent a stream event that is not JSON", code="upstream_bad_event") from None
        if not isinstance(chunk, dict):
            raise ApiError(502, "upstream sent a stream event that is not a JSON object", code="upstream_bad_event")
        if chunk.get("error"):
            raise stream_error(chunk["error"])
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        if not chunk.get("choices") and chunk.get("usage"):
            self.usage_event = event
            return False
        for k in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if k in chunk and chunk[k] is not None:
                self._head[k] = chunk[k]
        for ch in chunk.get("choices") or ():
            self._merge_choice(ch)
        self.events.append(event)
        return True

    def _merge_choice(self, ch: dict[str, Any]) -> None:
        idx = ch.get("index", 0)
        acc = self._choices.setdefault(idx, {"index": idx, "text": [], "content": [], "role": None,
                                             "tools": {}, "refusal": [], "finish_reason": None, "logprobs": None})
        if ch.get("finish_reason"):
            acc["finish_reason"] = ch["finish_reason"]
        if self.endpoint == "completions":
            acc["text"].append(ch.get("text") or "")
            return
        delta = ch.get("delta") or {}
        if delta.get("role"):
            acc["role"] = delta["role"]
        if delta.get("content"):
            acc["content"].append(delta["content"])
        if delta.get("refusal"):
            acc["refusal"].append(delta["refusal"])
        for tc in delta.get("tool_calls") or ():
            slot = acc["tools"].setdefault(tc.get("index", 0), {"id": None, "type": "function",
                                                                 "function": {"name": "", "arguments": ""}})
            if tc.get("id"):
                slot["id"] = tc["id"]
            if tc.get("type"):
                slot["type"] = tc["type"]
            fn = tc.get("function") or {}
            slot["function"]["name"] += fn.get("name") or ""
            slot["function"]["arguments"] += fn.get("arguments") or ""

    @property
    def usage(self) -> Usage | None:
        return usage_from({"usage": self._usage}) if self._usage else None

    def body(self) -> bytes:
        """The equivalent non-streamed answer."""
        choices = []
        for idx in sorted(self._choices):
            acc = self._choices[idx]
            if self.endpoint == "completions":
                choices.append({"index": idx, "text": "".join(acc["text"]), "logprobs": None,
                                "finish_reason": acc["finish_reason"]})
                continue
            msg: dict[str, Any] = {"role": acc["role"] or "assistant",
                                   "content": "".join(acc["content"]) if acc["content"] or not acc["tools"] else None}
            if acc["refusal"]:
                msg["refusal"] = "".join(acc["refusal"])
            if acc["tools"]:
                msg["tool_calls"] = [acc["tools"][i] for i in sorted(acc["tools"])]
            choices.append({"index": idx, "message": msg, "logprobs": None, "finish_reason": acc["finish_reason"]})
        out: dict[str, Any] = {
            "id": self._head.get("id", ""),
            "object": "text_completion" if self.endpoint == "completions" else "chat.completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "choices": choices,
        }
        if "system_fingerprint" in self._head:
            out["system_fingerprint"] = self._head["system_fingerprint"]
        if self._usage:
            out["usage"] = self._usage
        return orjson.dumps(out)


def body_to_sse(endpoint: str, body: bytes) -> tuple[bytes, bytes | None]:
    """The streamed form of a non-streamed answer: one content chunk and one finish chunk per choice (the whole
    text in one delta), and the usage chunk separately. Done once when storing, never on a hit."""
    obj = orjson.loads(body)
    head = {k: obj[k] for k in ("id", "created", "model", "system_fingerprint") if k in obj}
    obj_type = "text_completion" if endpoint == "completions" else "chat.completion.chunk"
    events = []
    for ch in obj.get("choices") or ():
        idx = ch.get("index", 0)
        if endpoint == "completions":
            first = {"index": idx, "text": ch.get("text") or "", "logprobs": None, "finish_reason": None}
            last = {"index": idx, "text": "", "logprobs": None, "finish_reason": ch.get("finish_reason")}
        else:
            msg = ch.get("message") or {}
            delta: dict[str, Any] = {"role": msg.get("role", "assistant"), "content": msg.get("content")}
            if msg.get("tool_calls"):
                delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(msg["tool_calls"])]
            if msg.get("refusal"):
                delta["refusal"] = msg["refusal"]
            first = {"index": idx, "delta": delta, "logprobs": None, "finish_reason": None}
            last = {"index": idx, "delta": {}, "logprobs": None, "finish_reason": ch.get("finish_reason")}
        for c in (first, last):
            events.append(sse_event(orjson.dumps({**head, "object": obj_type, "choices": [c]})))
    usage_event = None
    if obj.get("usage"):
        usage_event = sse_event(orjson.dumps({**head, "object": obj_type, "choices": [], "usage": obj["usage"]}))
    return b"".join(events), usage_event


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

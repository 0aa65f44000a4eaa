"""Stream recording for the cache: a streamed answer assembled into its non-streamed form (StreamAssembler, what the
cache stores) and a stored answer replayed as a stream (body_to_sse).

A stored answer is served in both forms, so converting must keep every field either form can carry: the message's
content, refusal, tool_calls, legacy function_call, reasoning_content (and any other string field an OpenAI-compatible
upstream adds, concatenated), annotations (and any other list, extended), audio; per choice logprobs (chat:
content/refusal lists; completions: token lists) and provider extras (content_filter_results, stop_reason);
top-level id, created, model, system_fingerprint, service_tier and extras (prompt_filter_results); usage with its
details, as sent. tests/unit/test_sse_roundtrip.py round-trips each of them.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..context import Usage
from ..errors import ApiError
from ..sse import sse_event, stream_error, usage_from

_CHOICE_KEYS = frozenset({"index", "delta", "message", "text", "logprobs", "finish_reason"})
_TOP_SKIP = frozenset({"object", "choices", "usage"})


def _bad_event(what: str) -> ApiError:
    return ApiError(502, f"upstream sent a stream event that is {what}", code="upstream_bad_event")


def _merge_value(fields: dict[str, Any], key: str, value: Any) -> None:
    """Stream deltas carry pieces: strings concatenate, lists extend, objects merge the same way, None only marks
    that the field exists; anything else replaces."""
    old = fields.get(key)
    if value is None:
        fields.setdefault(key, None)
    elif isinstance(value, str) and (old is None or isinstance(old, str)):
        fields[key] = (old or "") + value
    elif isinstance(value, list) and (old is None or isinstance(old, list)):
        fields[key] = [*(old or ()), *value]
    elif isinstance(value, dict) and (old is None or isinstance(old, dict)):
        merged = dict(old or {})
        for k, v in value.items():
            _merge_value(merged, k, v)
        fields[key] = merged
    else:
        fields[key] = value


class _Choice:
    __slots__ = ("extra", "finish_reason", "index", "logprobs", "msg", "text", "tools")

    def __init__(self, index: Any) -> None:
        self.index = index
        self.msg: dict[str, Any] = {}  # chat: message fields except tool_calls
        self.tools: dict[Any, dict[str, Any]] = {}
        self.text: list[str] = []  # completions
        self.logprobs: dict[str, Any] = {}  # {"logprobs": merged} once seen
        self.extra: dict[str, Any] = {}
        self.finish_reason: Any = None


class StreamAssembler:
    """Rebuilds the non-streamed answer from stream chunks (chat.completion or text_completion), keeps the raw events
    for a faithful replay, and separates the usage-only chunk the gateway asked for."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.events: list[bytes] = []  # raw content events, as received
        self.usage_event: bytes | None = None
        self.done = False
        self._head: dict[str, Any] = {}
        self._choices: dict[Any, _Choice] = {}
        self._usage: dict[str, Any] | None = None

    def feed(self, event: bytes) -> bool:
        """Take one SSE event (b"data: ...\\n\\n"). Returns False for the usage-only chunk (which the caller
        forwards only if the client asked for usage), True for events to forward. ApiError(502) for an event that
        is not a JSON object or is the upstream's own error."""
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
            raise _bad_event("not JSON") from None
        if not isinstance(chunk, dict):
            raise _bad_event("not a JSON object")
        if chunk.get("error"):
            raise stream_error(chunk["error"])
        choices = chunk.get("choices")
        if choices is not None and not (isinstance(choices, list) and all(isinstance(c, dict) for c in choices)):
            raise _bad_event("malformed ('choices' is not a list of objects)")
        usage = chunk.get("usage")
        if usage:
            self._usage = usage if isinstance(usage, dict) else None
        if not choices and usage:
            self.usage_event = event
            return False
        for k, v in chunk.items():
            if k not in _TOP_SKIP and v is not None and k not in self._head:
                self._head[k] = v
        for ch in choices or ():
            self._merge_choice(ch)
        self.events.append(event)
        return True

    def _merge_choice(self, ch: dict[str, Any]) -> None:
        idx = ch.get("index", 0)
        if not isinstance(idx, int):
            raise _bad_event("malformed (choice index)")
        acc = self._choices.get(idx)
        if acc is None:
            acc = self._choices[idx] = _Choice(idx)
        if ch.get("finish_reason") is not None:
            acc.finish_reason = ch["finish_reason"]
        if "logprobs" in ch:
            _merge_value(acc.logprobs, "logprobs", ch["logprobs"])
        for k, v in ch.items():
            if k not in _CHOICE_KEYS and v is not None:
                acc.extra[k] = v
        if self.endpoint == "completions":
            text = ch.get("text")
            if isinstance(text, str):
                acc.text.append(text)
            return
        delta = ch.get("delta")
        if not isinstance(delta, dict):
            return
        for k, v in delta.items():
            if k == "role":
                if v:
                    acc.msg["role"] = v
            elif k == "tool_calls":
                for tc in v or ():
                    self._merge_tool(acc, tc)
            else:
                _merge_value(acc.msg, k, v)

    @staticmethod
    def _merge_tool(acc: _Choice, tc: Any) -> None:
        if not isinstance(tc, dict):
            raise _bad_event("malformed (tool call)")
        i = tc.get("index", 0)
        slot = acc.tools.get(i)
        if slot is None:
            slot = acc.tools[i] = {}
        for k, v in tc.items():
            if k in ("id", "type"):  # sent whole (some upstreams repeat them in every chunk)
                if v:
                    slot[k] = v
            elif k != "index":
                _merge_value(slot, k, v)

    @property
    def usage(self) -> Usage | None:
        return usage_from({"usage": self._usage}) if self._usage else None

    def body(self) -> bytes:
        """The equivalent non-streamed answer."""
        choices = []
        for idx in sorted(self._choices):
            acc = self._choices[idx]
            choice: dict[str, Any] = {"index": idx}
            if self.endpoint == "completions":
                choice["text"] = "".join(acc.text)
            else:
                msg: dict[str, Any] = {"role": acc.msg.get("role") or "assistant"}
                has_call = bool(acc.tools) or acc.msg.get("function_call") is not None
                msg["content"] = acc.msg.get("content", None if has_call else "")
                msg.update((k, v) for k, v in acc.msg.items() if k not in ("role", "content"))
                if acc.tools:
                    msg["tool_calls"] = [acc.tools[i] for i in sorted(acc.tools)]
                choice["message"] = msg
            choice["logprobs"] = acc.logprobs.get("logprobs")
            choice["finish_reason"] = acc.finish_reason
            choice.update(acc.extra)
            choices.append(choice)
        out: dict[str, Any] = {
            "id": self._head.get("id", ""),
            "object": "text_completion" if self.endpoint == "completions" else "chat.completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "choices": choices,
        }
        out.update((k, v) for k, v in self._head.items() if k not in out)
        if self._usage:
            out["usage"] = self._usage
        return orjson.dumps(out)


def body_to_sse(endpoint: str, body: bytes) -> tuple[bytes, bytes | None]:
    """The streamed form of a non-streamed answer: per choice one chunk with the whole message (and its logprobs)
    and one finish chunk (with the choice's other fields); the usage chunk separately. Done once when storing,
    never on a hit."""
    obj = orjson.loads(body)
    head = {k: v for k, v in obj.items() if k not in _TOP_SKIP}
    obj_type = "text_completion" if endpoint == "completions" else "chat.completion.chunk"
    events = []
    for ch in obj.get("choices") or ():
        idx = ch.get("index", 0)
        extra = {k: v for k, v in ch.items() if k not in _CHOICE_KEYS}
        if endpoint == "completions":
            first = {"index": idx, "text": ch.get("text") or "", "logprobs": ch.get("logprobs"), "finish_reason": None}
            last = {"index": idx, "text": "", "logprobs": None, "finish_reason": ch.get("finish_reason"), **extra}
        else:
            msg = ch.get("message") or {}
            delta: dict[str, Any] = {"role": msg.get("role", "assistant"), "content": msg.get("content")}
            for k, v in msg.items():
                if k == "tool_calls" and isinstance(v, list):
                    delta[k] = [{"index": i, **tc} for i, tc in enumerate(v)]
                elif k not in delta:
                    delta[k] = v
            first = {"index": idx, "delta": delta, "logprobs": ch.get("logprobs"), "finish_reason": None}
            last = {"index": idx, "delta": {}, "logprobs": None, "finish_reason": ch.get("finish_reason"), **extra}
        for c in (first, last):
            events.append(sse_event(orjson.dumps({**head, "object": obj_type, "choices": [c]})))
    usage_event = None
    if obj.get("usage"):
        usage_event = sse_event(orjson.dumps({**head, "object": obj_type, "choices": [], "usage": obj["usage"]}))
    return b"".join(events), usage_event

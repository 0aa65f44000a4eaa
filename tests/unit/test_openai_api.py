"""Pure pieces of the wire format: directives, stream assembly, SSE conversion, cache keys and entry encoding."""

from __future__ import annotations

import orjson
import pytest

from llmgw_sidecar.cache.exact import decode, encode
from llmgw_sidecar.cache.keys import api_key_hash, fingerprint
from llmgw_sidecar.cache.stream import StreamAssembler, body_to_sse
from llmgw_sidecar.cache_controls import cache_directives
from llmgw_sidecar.caller_scope import cache_partition as scope_key
from llmgw_sidecar.config import Scope
from llmgw_sidecar.context import CachedAnswer, Caller, Usage
from llmgw_sidecar.errors import ApiError
from llmgw_sidecar.sse import split_events


def test_directives_header_and_body() -> None:
    d = cache_directives("no-cache, max-age=60", None)  # request max-age: the oldest answer accepted (RFC 9111)
    assert (d.no_cache, d.no_store, d.ttl_s, d.max_age_s) == (True, False, None, 60)
    assert cache_directives("s-maxage=30", None).ttl_s == 30  # the write-TTL directive we keep
    d = cache_directives(None, {"no-store": True, "namespace": "a"})
    assert (d.no_store, d.namespace) == (True, "a")
    d = cache_directives("max-age=0", None)  # nothing stored is young enough: do not read, still write
    assert (d.no_cache, d.no_store) == (True, False)
    assert cache_directives(None, {"ttl": 0}).no_store  # nothing to keep for zero seconds
    with pytest.raises(ApiError, match=r"cache\.bogus"):
        cache_directives(None, {"bogus": 1})
    with pytest.raises(ApiError, match="whole number"):
        cache_directives("max-age=abc", None)


def test_fingerprint_ignores_tracking_fields_only() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    fp = fingerprint("chat", "m", base)
    assert fp == fingerprint("chat", "m", {**base, "user": "u", "metadata": {"a": 1}, "stream": True})
    assert fp == fingerprint("chat", "m", dict(reversed(list(base.items()))))
    assert fp != fingerprint("chat", "m", {**base, "temperature": 0})
    assert fp != fingerprint("chat", "other-upstream", base)
    assert fp != fingerprint("completions", "m", base)


def test_scopes() -> None:
    c = Caller("ns1", "pod1", "sa1", api_key_hash("Bearer sk-1"))
    assert scope_key(Scope.global_, "g", "gw", c) == "global"
    assert scope_key(Scope.namespace, "g", "gw", c) == "gw:g/gw|ns:ns1"
    assert scope_key(Scope.pod, "g", "gw", c).endswith("|pod:pod1")
    assert scope_key(Scope.api_key, "g", "gw", c) != scope_key(Scope.api_key, "g", "gw", Caller("ns1", "p", "s", None))
    assert "sk-1" not in scope_key(Scope.api_key, "g", "gw", c)


def test_entry_roundtrip_and_corruption() -> None:
    a = CachedAnswer(body=b'{"x":1}', created=123.5, sse=b"data: {}\n\n", sse_usage=b"data: {u}\n\n",
                     usage=Usage(3, 4, 1, True))
    b = decode(encode(a))
    assert b is not None and (b.body, b.sse, b.sse_usage, b.created) == (a.body, a.sse, a.sse_usage, a.created)
    assert b.usage == a.usage
    assert decode(encode(a)[:-1]) is None and decode(b"garbage") is None


def _chunk(**kw: object) -> bytes:
    return b"data: " + orjson.dumps({"id": "c1", "created": 1, "model": "m", "object": "chat.completion.chunk", **kw}) \
        + b"\n\n"


def test_assembler_builds_body_and_separates_usage() -> None:
    asm = StreamAssembler("chat")
    events = [
        _chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]),
        _chunk(choices=[{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]),
        _chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        _chunk(choices=[], usage={"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}),
    ]
    forwarded = [asm.feed(e) for e in events]
    assert forwarded == [True, True, True, False]
    assert asm.feed(b"data: [DONE]\n\n") and asm.done
    body = orjson.loads(asm.body())
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert body["usage"]["total_tokens"] == 5 and asm.usage == Usage(2, 3)
    # and back: the streamed form of the body carries the same text
    sse, usage_event = body_to_sse("chat", asm.body())
    buf = bytearray(sse)
    texts = [orjson.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in split_events(buf)]
    assert "".join(texts) == "Hello" and usage_event is not None


def test_split_events_handles_crlf_and_partial() -> None:
    buf = bytearray(b"data: 1\r\n\r\ndata: 2\n\ndata: 3")
    assert split_events(buf) == [b"data: 1\n\n", b"data: 2\n\n"]
    assert bytes(buf) == b"data: 3"

"""Stream <-> non-stream conversion keeps every field: each field round-trips both ways.

non-stream body -> body_to_sse -> StreamAssembler -> the same body, and
stream chunks (as upstreams send them, in pieces) -> StreamAssembler -> body -> body_to_sse -> StreamAssembler -> the
same body again.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmgw_sidecar.cache.stream import StreamAssembler, body_to_sse
from llmgw_sidecar.sse import SSE_DONE, sse_event

HEAD = {"id": "chatcmpl-1", "created": 1700000000, "model": "gpt-4o-2024"}
LOGPROBS = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}], "refusal": None}
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
         "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                       "rejected_prediction_tokens": 0}}


def chat(message: dict[str, Any], *, finish: str = "stop", logprobs: Any = None, top: dict[str, Any] | None = None,
         choice_extra: dict[str, Any] | None = None, usage: dict[str, Any] | None = USAGE) -> dict[str, Any]:
    body: dict[str, Any] = {**HEAD, "object": "chat.completion", **(top or {}), "choices": [
        {"index": 0, "message": {"role": "assistant", **message}, "logprobs": logprobs, "finish_reason": finish,
         **(choice_extra or {})}]}
    if usage:
        body["usage"] = usage
    return body


CHAT_FIELDS: dict[str, dict[str, Any]] = {
    "content": chat({"content": "Hello there"}),
    "tool_calls": chat({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        finish="tool_calls"),
    "function_call": chat({"content": None, "function_call": {"name": "lookup", "arguments": '{"q": 1}'}},
                          finish="function_call"),
    "logprobs": chat({"content": "Hi"}, logprobs=LOGPROBS),
    "refusal": chat({"content": None, "refusal": "I can't help with that."}),
    "refusal_null": chat({"content": "ok", "refusal": None}),
    "reasoning_content": chat({"content": "4", "reasoning_content": "2 plus 2 is 4."}),
    "annotations": chat({"content": "See [1]", "annotations": [
        {"type": "url_citation", "url_citation": {"url": "https://example.org", "title": "Ex", "start_index": 4,
                                                  "end_index": 7}}]}),
    "audio": chat({"content": None, "audio": {"id": "audio_1", "data": "UklGRg==", "expires_at": 1700003600,
                                              "transcript": "hello"}}),
    "system_fingerprint": chat({"content": "x"}, top={"system_fingerprint": "fp_abc123"}),
    "service_tier": chat({"content": "x"}, top={"service_tier": "default"}),
    "prompt_filter_results": chat({"content": "x"}, top={"prompt_filter_results": [
        {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}]},
        choice_extra={"content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}),
    "usage_details": chat({"content": "x"}),
    "no_usage": chat({"content": "x"}, usage=None),
}


def assemble(endpoint: str, events: bytes, usage_event: bytes | None) -> dict[str, Any]:
    asm = StreamAssembler(endpoint)
    for ev in events.split(b"\n\n"):
        if ev.strip():
            asm.feed(ev + b"\n\n")
    if usage_event:
        assert asm.feed(usage_event) is False  # the usage-only chunk is told apart
    asm.feed(SSE_DONE)
    assert asm.done
    return json.loads(asm.body())


@pytest.mark.parametrize("field", sorted(CHAT_FIELDS))
def test_chat_non_stream_to_stream_and_back(field: str) -> None:
    body = CHAT_FIELDS[field]
    sse, usage_event = body_to_sse("chat", json.dumps(body).encode())
    assert assemble("chat", sse, usage_event) == body


def chunks(*deltas: dict[str, Any], top: dict[str, Any] | None = None, finish: str = "stop",
           logprobs: list[Any] | None = None, choice_extra: dict[str, Any] | None = None) -> list[bytes]:
    out = []
    for i, d in enumerate(deltas):
        ch: dict[str, Any] = {"index": 0, "delta": d, "logprobs": logprobs[i] if logprobs else None,
                              "finish_reason": None, **(choice_extra or {})}
        out.append(sse_event(json.dumps({**HEAD, "object": "chat.completion.chunk", **(top or {}),
                                         "choices": [ch]}).encode()))
    out.append(sse_event(json.dumps({**HEAD, "object": "chat.completion.chunk", **(top or {}), "choices": [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish, **(choice_extra or {})}]}).encode()))
    out.append(sse_event(json.dumps({**HEAD, "object": "chat.completion.chunk", "choices": [],
                                     "usage": USAGE}).encode()))
    return out


STREAMS: dict[str, tuple[list[bytes], dict[str, Any]]] = {
    "content": (chunks({"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}),
                {"content": "Hello"}),
    "tool_calls": (chunks(
        {"role": "assistant", "content": None, "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                               "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "type": "function", "function": {"arguments": '{"city"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ': "Paris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "t", "arguments": "{}"}}]},
        finish="tool_calls"),
        {"content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "t", "arguments": "{}"}}]}),
    "function_call": (chunks({"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": ""}},
                             {"function_call": {"arguments": '{"q"'}}, {"function_call": {"arguments": ": 1}"}},
                             finish="function_call"),
                      {"content": None, "function_call": {"name": "lookup", "arguments": '{"q": 1}'}}),
    "refusal": (chunks({"role": "assistant", "content": None, "refusal": ""}, {"refusal": "I can't"},
                       {"refusal": " help."}),
                {"content": None, "refusal": "I can't help."}),
    "reasoning_content": (chunks({"role": "assistant", "reasoning_content": "Two"}, {"reasoning_content": " plus two."},
                                 {"content": "4"}),
                          {"content": "4", "reasoning_content": "Two plus two."}),
    "annotations": (chunks({"role": "assistant", "content": "See [1]"},
                           {"annotations": [{"type": "url_citation", "url_citation": {"url": "https://a.example"}}]},
                           {"annotations": [{"type": "url_citation", "url_citation": {"url": "https://b.example"}}]}),
                    {"content": "See [1]", "annotations": [
                        {"type": "url_citation", "url_citation": {"url": "https://a.example"}},
                        {"type": "url_citation", "url_citation": {"url": "https://b.example"}}]}),
}


@pytest.mark.parametrize("field", sorted(STREAMS))
def test_chat_stream_to_non_stream_and_back(field: str) -> None:
    events, expected_message = STREAMS[field]
    asm = StreamAssembler("chat")
    for ev in events:
        asm.feed(ev)
    asm.feed(SSE_DONE)
    body = json.loads(asm.body())
    msg = body["choices"][0]["message"]
    assert msg == {"role": "assistant", **expected_message}
    assert body["usage"] == USAGE
    again = assemble("chat", *body_to_sse("chat", json.dumps(body).encode()))
    assert again == body


def test_stream_logprobs_system_fingerprint_service_tier_and_filters() -> None:
    lp = [{"content": [{"token": "Hel", "logprob": -0.1, "top_logprobs": []}], "refusal": None},
          {"content": [{"token": "lo", "logprob": -0.2, "top_logprobs": []}], "refusal": None}]
    events = chunks({"role": "assistant", "content": "Hel"}, {"content": "lo"}, logprobs=lp,
                    top={"system_fingerprint": "fp_1", "service_tier": "scale"},
                    choice_extra={"content_filter_results": {"hate": {"filtered": False}}})
    asm = StreamAssembler("chat")
    for ev in events:
        asm.feed(ev)
    body = json.loads(asm.body())
    assert body["system_fingerprint"] == "fp_1" and body["service_tier"] == "scale"
    assert body["choices"][0]["logprobs"] == {"content": lp[0]["content"] + lp[1]["content"], "refusal": None}
    assert body["choices"][0]["content_filter_results"] == {"hate": {"filtered": False}}
    assert assemble("chat", *body_to_sse("chat", json.dumps(body).encode())) == body


def test_completions_text_and_logprobs_round_trip() -> None:
    body = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "system_fingerprint": "fp",
            "choices": [{"index": 0, "text": "Hello", "finish_reason": "length",
                         "logprobs": {"tokens": ["Hel", "lo"], "token_logprobs": [-0.1, -0.2],
                                      "top_logprobs": [{"Hel": -0.1}, {"lo": -0.2}], "text_offset": [0, 3]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    assert assemble("completions", *body_to_sse("completions", json.dumps(body).encode())) == body
    pieces = [{"tokens": ["Hel"], "token_logprobs": [-0.1], "top_logprobs": [{"Hel": -0.1}], "text_offset": [0]},
              {"tokens": ["lo"], "token_logprobs": [-0.2], "top_logprobs": [{"lo": -0.2}], "text_offset": [3]}]
    asm = StreamAssembler("completions")
    for text, lp in zip(("Hel", "lo"), pieces, strict=True):
        asm.feed(sse_event(json.dumps({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
                                       "choices": [{"index": 0, "text": text, "logprobs": lp,
                                                    "finish_reason": None}]}).encode()))
    assembled = json.loads(asm.body())
    assert assembled["choices"][0]["text"] == "Hello"
    assert assembled["choices"][0]["logprobs"] == body["choices"][0]["logprobs"]


def test_several_choices_keep_their_own_fields() -> None:
    body = chat({"content": "a"})
    body["choices"].append({"index": 1, "message": {"role": "assistant", "content": None, "refusal": "no"},
                            "logprobs": None, "finish_reason": "stop"})
    assert assemble("chat", *body_to_sse("chat", json.dumps(body).encode())) == body

"""One request lifecycle: whatever way a request ends, it is settled (limits), recorded (spend) and counted once, and
after the headers are sent nothing but one SSE error event (then the end of the stream) is written."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.integration.conftest import Gateway, gateway_config


def limited_gateway(make_gateway: Any, redis_url: str, upstream_url: str, **timeouts: float) -> Gateway:
    """Every model allows ONE request in flight: a request that is not settled keeps the next one out (429)."""
    cfg = gateway_config({"url": redis_url}, upstream_url)
    for m in cfg["models"]:
        m["limits"] = {"max_parallel": 1}
        m["timeouts"] = {**m["timeouts"], **timeouts}
    return make_gateway(cfg)


def raw_post(gw: Gateway, body: dict[str, Any], timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.server.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def eventually(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def events(raw: bytes) -> list[bytes]:
    return [e for e in raw.split(b"\n\n") if e.strip()]


@pytest.mark.parametrize(("model", "status", "code"), [
    ("bad-event", 502, "upstream_bad_event"),
    ("null-event", 502, "upstream_bad_event"),
    ("error-event", 502, "overloaded"),
    ("broken-stream", 502, "upstream_broken"),
    ("slow-stream", 504, "upstream_timeout"),
])
def test_failure_after_headers_is_one_error_event_then_settled_and_recorded(
        make_gateway: Any, redis_standalone: str, fake_upstream: FakeUpstream, model: str, status: int,
        code: str) -> None:
    gw = limited_gateway(make_gateway, redis_standalone, fake_upstream.url, total_s=0.6)  # slow-stream: deadline
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "one two three four"}]}
    http_status, headers, raw = raw_post(gw, body)
    assert http_status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert b"HTTP/1." not in raw  # never a second response inside the body
    evs = events(raw)
    errors = [e for e in evs if b'"error"' in e]
    assert len(errors) == 1 and errors[0] is evs[-1], raw  # exactly one error event, and nothing after it
    err = json.loads(errors[0].removeprefix(b"data: "))["error"]
    assert err["code"] == code and set(err) == {"message", "type", "param", "code"}
    assert b"[DONE]" not in raw
    # the end of the request runs right after its last byte: give it a moment on a busy machine
    eventually(lambda: gw.sample("llmgw_requests_total", model=model, status=str(status)) == 1)
    assert gw.sample("llmgw_spend_records_total", event="buffered") == 1
    # settled: the model's one max_parallel slot is free again (settles are batched: allow a moment; a leaked slot
    # would stay held for parallel_lease_s = 660 s)
    assert until_not_429(gw, {**body, "stream": False}) == 200


def until_not_429(gw: Gateway, body: dict[str, Any], tries: int = 40) -> int:
    for _ in range(tries):
        status = raw_post(gw, body)[0]
        if status != 429:
            return status
        time.sleep(0.05)
    return 429


def test_official_client_raises_on_the_error_event(gateway: Gateway) -> None:
    stream = gateway.client().chat.completions.create(
        model="null-event", stream=True, messages=[{"role": "user", "content": "one two three"}])
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_failed_streams_are_never_stored(gateway: Gateway, fake_upstream: FakeUpstream) -> None:
    body = {"model": "bad-event", "stream": True, "messages": [{"role": "user", "content": "store me not"}]}
    raw_post(gateway, body)
    raw_post(gateway, body)
    assert fake_upstream.count("bad-event") >= 2  # the second one went upstream again
    assert gateway.sample("llmgw_cache_stores_total") == 0

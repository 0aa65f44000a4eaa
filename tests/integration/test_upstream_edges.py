"""Upstream edges: an error body that never finishes, connect timeouts (retried as connection errors), and a total
deadline that expires in the middle of a stream (an error event; settled and recorded like any other end)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.integration.conftest import Gateway, gateway_config

MSG = [{"role": "user", "content": "edge"}]


def test_stalled_error_body_is_relayed_within_the_first_byte_deadline(make_gateway: Any, redis_standalone: str,
                                                                      fake_upstream: FakeUpstream) -> None:
    cfg = gateway_config({"url": redis_standalone}, fake_upstream.url)
    for m in cfg["models"]:
        m["timeouts"] = {"first_byte_s": 0.5, "total_s": 30}
    gw = make_gateway(cfg)
    t0 = time.monotonic()
    with pytest.raises(openai.BadRequestError) as e:
        gw.client(timeout=20).chat.completions.create(model="stall-error", messages=MSG)
    assert time.monotonic() - t0 < 5  # not the upstream's 30 s stall
    assert e.value.status_code == 400 and e.value.body["code"] == "upstream_400"
    assert gw.sample("llmgw_upstream_errors_total", model="stall-error", kind="error_body") == 1
    # the gateway is fine afterwards (the half-read connection was dropped, not pooled)
    assert gw.client().chat.completions.create(model="ok", messages=MSG).choices[0].message.content == "echo: edge"


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A port whose accept queue is full: new connections are never accepted (SYNs dropped), so connect times out."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/v1"
    for c in fillers:
        c.close()
    srv.close()


def test_connect_timeout_is_a_retried_connection_error(make_gateway: Any, redis_standalone: str,
                                                       blackhole: str) -> None:
    cfg = gateway_config({"url": redis_standalone}, blackhole)
    for m in cfg["models"]:
        m["timeouts"] = {"connect_s": 0.2, "first_byte_s": 5, "total_s": 30}
        m["retry"] = {"max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.02}
    gw = make_gateway(cfg)
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        gw.client(timeout=20).chat.completions.create(model="ok", messages=MSG)
    assert e.value.status_code == 504 and e.value.body["code"] == "upstream_connect_timeout"
    assert time.monotonic() - t0 < 4  # three connect timeouts of 0.2 s, not one first-byte timeout of 5 s
    assert gw.sample("llmgw_upstream_errors_total", model="ok", kind="connect_timeout") == 3
    assert gw.sample("llmgw_upstream_retries_total", model="ok") == 2


def test_total_deadline_mid_stream_is_an_event_and_is_accounted(make_gateway: Any, redis_standalone: str,
                                                                fake_upstream: FakeUpstream) -> None:
    cfg = gateway_config({"url": redis_standalone}, fake_upstream.url)
    for m in cfg["models"]:
        m["timeouts"] = {"first_byte_s": 2, "total_s": 0.7}
    gw: Gateway = make_gateway(cfg)
    got: list[str] = []
    with pytest.raises(openai.APIError) as e:
        for ch in gw.client().chat.completions.create(model="slow-stream", stream=True,
                                                      messages=[{"role": "user", "content": "a b c d e f"}]):
            got.extend(c.delta.content or "" for c in ch.choices)
    assert got and "upstream_timeout" in str(e.value.body or e.value)  # some content, then the error event
    deadline = time.monotonic() + 5
    while gw.sample("llmgw_requests_total", model="slow-stream", status="504") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert gw.sample("llmgw_spend_records_total", event="buffered") == 1
    assert gw.sample("llmgw_cache_stores_total") == 0  # an incomplete answer is never stored

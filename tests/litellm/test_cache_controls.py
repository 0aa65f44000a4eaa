"""Per-request cache controls with LiteLLM's meaning (body field `cache`) and RFC 9111's (Cache-Control), through the
official openai client against a real sidecar and a real Redis; plus cache.mode and cache.endpoints."""

from __future__ import annotations

import time
import uuid
from typing import Any

import openai
import pytest
import redis

from llmgw_sidecar.config import ConfigError, parse_config
from tests.integration.conftest import Gateway, gateway_config


def ask(c: openai.OpenAI, q: str, **kw: Any) -> str:
    return c.chat.completions.with_raw_response.create(model="ok", messages=[{"role": "user", "content": q}],
                                                       **kw).headers["x-llmgw-cache"]


def stored(c: openai.OpenAI, q: str, want: str = "hit-exact", **kw: Any) -> str:
    """Stores happen in the background after the answer: poll (bounded) until the entry is readable."""
    for _ in range(100):
        got = ask(c, q, **kw)
        if got == want:
            return got
        time.sleep(0.02)
    return got


def q() -> str:
    return f"controls {uuid.uuid4().hex}"


def test_ttl_writes_with_that_lifetime(gateway: Gateway, redis_standalone: str) -> None:
    c, question = gateway.client(), q()
    assert ask(c, question, extra_body={"cache": {"ttl": 45}}) == "miss"
    assert stored(c, question) == "hit-exact"
    r = redis.Redis.from_url(redis_standalone)
    ttls = [r.ttl(k) for k in r.scan_iter(f"{gateway.prefix}:exact:*")]
    r.close()
    assert ttls and all(0 < t <= 45 for t in ttls)


def test_s_maxage_is_the_oldest_answer_accepted(gateway: Gateway) -> None:
    c, question = gateway.client(), q()
    assert ask(c, question) == "miss"
    assert stored(c, question) == "hit-exact"
    time.sleep(1.3)
    assert ask(c, question, extra_body={"cache": {"s-maxage": 60}}) == "hit-exact"  # young enough
    assert ask(c, question, extra_body={"cache": {"s-maxage": 1}}) == "miss"  # too old: asked upstream again
    # ... and the fresh answer replaced the old one
    assert stored(c, question, extra_body={"cache": {"s-maxage": 1}}) == "hit-exact"


def test_request_max_age_is_rfc_9111(gateway: Gateway) -> None:
    c, question = gateway.client(), q()
    assert ask(c, question) == "miss"
    assert stored(c, question) == "hit-exact"
    time.sleep(1.3)
    assert ask(c, question, extra_headers={"Cache-Control": "max-age=60"}) == "hit-exact"
    assert ask(c, question, extra_headers={"Cache-Control": "max-age=1"}) == "miss"
    assert ask(c, question, extra_headers={"Cache-Control": "max-age=0"}) == "bypass"


def test_header_s_maxage_is_the_write_ttl(gateway: Gateway, redis_standalone: str) -> None:
    c, question = gateway.client(), q()
    assert ask(c, question, extra_headers={"Cache-Control": "s-maxage=20"}) == "miss"
    assert stored(c, question) == "hit-exact"
    r = redis.Redis.from_url(redis_standalone)
    ttls = [r.ttl(k) for k in r.scan_iter(f"{gateway.prefix}:exact:*")]
    r.close()
    assert ttls and all(0 < t <= 20 for t in ttls)


def test_no_cache_still_writes_no_store_does_not(gateway: Gateway) -> None:
    c = gateway.client()
    a, b = q(), q()
    assert ask(c, a, extra_body={"cache": {"no-cache": True}}) == "bypass"
    assert stored(c, a) == "hit-exact"  # no-cache wrote the fresh answer
    assert ask(c, b, extra_body={"cache": {"no-store": True}}) == "miss"
    time.sleep(0.3)
    assert ask(c, b) == "miss"  # nothing was written


def test_namespace_partitions(gateway: Gateway) -> None:
    c, question = gateway.client(), q()
    assert ask(c, question, extra_body={"cache": {"namespace": "exp-a"}}) == "miss"
    assert stored(c, question, extra_body={"cache": {"namespace": "exp-a"}}) == "hit-exact"
    assert ask(c, question, extra_body={"cache": {"namespace": "exp-b"}}) == "miss"
    assert ask(c, question) == "miss"


def test_use_cache_opt_in_when_default_off(make_gateway, redis_standalone: str, fake_upstream) -> None:
    gw = make_gateway(gateway_config({"url": redis_standalone}, fake_upstream.url, cache={"mode": "default_off"}))
    c, question = gw.client(), q()
    assert ask(c, question) == "bypass"
    time.sleep(0.2)
    assert ask(c, question) == "bypass"  # nothing read, nothing written without the opt-in
    assert ask(c, question, extra_body={"cache": {"use-cache": True}}) == "miss"
    assert stored(c, question, extra_body={"cache": {"use-cache": True}}) == "hit-exact"


def test_use_cache_false_opts_out_when_default_on(gateway: Gateway) -> None:
    c, question = gateway.client(), q()
    assert ask(c, question) == "miss"
    assert stored(c, question) == "hit-exact"
    assert ask(c, question, extra_body={"cache": {"use-cache": False}}) == "bypass"


def test_supported_call_types_limit_cached_endpoints(make_gateway, redis_standalone: str, fake_upstream) -> None:
    gw = make_gateway(gateway_config({"url": redis_standalone}, fake_upstream.url, cache={"endpoints": ["embeddings"]}))
    c, question = gw.client(), q()
    assert ask(c, question) == "bypass"
    r1 = c.embeddings.with_raw_response.create(model="ok", input=question)
    assert r1.headers["x-llmgw-cache"] == "miss"
    for _ in range(100):
        if c.embeddings.with_raw_response.create(model="ok", input=question).headers["x-llmgw-cache"] == "hit-exact":
            break
        time.sleep(0.02)
    else:
        pytest.fail("embeddings were not cached")


@pytest.mark.parametrize("body", [{"ttl": "soon"}, {"s-maxage": -1}, {"use-cache": "yes"}, {"bogus": 1}, "x"])
def test_bad_controls_are_openai_400s(gateway: Gateway, body: Any) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        ask(gateway.client(), q(), extra_body={"cache": body})
    assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"


def test_distance_threshold_guard() -> None:
    base = {"models": [{"name": "m", "provider": "mock"}]}
    with pytest.raises(ConfigError, match="did you mean similarity_threshold"):
        parse_config({**base, "cache": {"semantic": {"distance_threshold": 0.9}}}, environ={})
    assert parse_config({**base, "cache": {"semantic": {"distance_threshold": 0.5}}},
                        environ={}).cache.semantic.distance_threshold == 0.5

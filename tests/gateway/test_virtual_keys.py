"""Gateway mode with virtual keys, under the official openai client: identity from the bearer key, tenant-scoped
cache, per-key limits, 401/403 in OpenAI's error format, keys picked up when their folder changes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llmgw_sidecar.auth.virtual_keys import VirtualKeys, key_hash
from tests.gateway.conftest import gateway_config, write_key

KEY_A1 = "vk-team-a-0123456789abcdef"
KEY_A2 = "vk-team-a-second-key-fedcba98"
KEY_B = "vk-team-b-0123456789abcdef"
KEY_LIMITED = "vk-limited-0123456789abcdef"
MSG = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    write_key(d, "team-a-ci", KEY_A1, scope="team-a")
    write_key(d, "team-a-web", KEY_A2, scope="team-a")
    write_key(d, "team-b", KEY_B)  # scope defaults to the Secret name
    write_key(d, "limited", KEY_LIMITED, scope="limited", rpm="2")
    write_key(d, "too-short", "short")  # refused when loading: guessable
    return d


def gateway_cfg(redis_url: str, upstream: str, keys: Path, **auth: Any) -> dict[str, Any]:
    return gateway_config({"url": redis_url}, upstream,
                          auth={"mode": "gateway", "virtual_keys": {"dir": str(keys)},
                                "token_review": {"enabled": False}, **auth})


def ask(gw: Any, key: str, content: str = "What is the capital of France?") -> tuple[str, Any]:
    raw = gw.client(api_key=key).chat.completions.with_raw_response.create(
        model="ok", messages=[{"role": "user", "content": content}])
    return raw.headers["x-llmgw-cache"], raw.parse()


def test_tenants_never_share_a_cache_entry_and_keys_of_one_scope_do(make_gateway, redis_standalone, fake_upstream,
                                                                     keys_dir: Path) -> None:
    gw = make_gateway(gateway_cfg(redis_standalone, fake_upstream.url, keys_dir))
    q = f"tenant isolation {time.time_ns()}"
    assert ask(gw, KEY_A1, q)[0] == "miss"
    assert ask(gw, KEY_A1, q)[0] == "hit-exact"
    # Another tenant asking the very same question never gets team-a's answer.
    assert ask(gw, KEY_B, q)[0] == "miss"
    assert ask(gw, KEY_B, q)[0] == "hit-exact"
    # A second key of the same scope shares team-a's cache.
    assert ask(gw, KEY_A2, q)[0] == "hit-exact"
    keys = [k.decode() for k in _sync_keys(redis_standalone, gw.prefix)]
    scopes = {k.split("|ns:")[1].split("|")[0] for k in keys if ":exact:" in k}
    assert scopes == {"vk:team-a", "vk:team-b"}, keys


def _sync_keys(url: str, prefix: str) -> list[bytes]:
    import redis

    c = redis.Redis.from_url(url)
    try:
        return list(c.scan_iter(f"{prefix}:*", count=1000))
    finally:
        c.close()


def test_wrong_missing_and_malformed_keys_get_401_in_openai_format(make_gateway, redis_standalone, fake_upstream,
                                                                   keys_dir: Path) -> None:
    gw = make_gateway(gateway_cfg(redis_standalone, fake_upstream.url, keys_dir))
    for bad in ("vk-nobody-0123456789abcdef", "short", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"):
        with pytest.raises(openai.AuthenticationError) as e:
            gw.client(api_key=bad).chat.completions.create(model="ok", messages=MSG)
        err = e.value.body
        assert e.value.status_code == 401 and err["type"] == "authentication_error", err
        assert err["code"] == "invalid_api_key" and bad not in err["message"]
    # No Authorization header at all, and a non-bearer scheme.
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "ok", "messages": MSG}, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "authentication_error"
    # /v1/models needs an identity too; /healthz (probes) does not.
    assert httpx.get(gw.url + "/v1/models").status_code == 401
    assert next(m.id for m in gw.client(api_key=KEY_B).models.list()) == "ok"
    assert httpx.get(gw.url + "/healthz").status_code == 200
    assert gw.sample("llmgw_auth_decisions_total", method="virtual_key", result="denied") >= 2
    assert gw.sample("llmgw_auth_decisions_total", method="none", result="denied") >= 1


def test_anonymous_only_when_allowed(make_gateway, redis_standalone, fake_upstream, keys_dir: Path) -> None:
    closed = make_gateway(gateway_cfg(redis_standalone, fake_upstream.url, keys_dir))
    opened = make_gateway(gateway_cfg(redis_standalone, fake_upstream.url, keys_dir, allow_anonymous=True))
    body = {"model": "ok", "messages": [{"role": "user", "content": f"anon {time.time_ns()}"}]}
    assert httpx.post(closed.url + "/v1/chat/completions", json=body).status_code == 401
    r1 = httpx.post(opened.url + "/v1/chat/completions", json=body)
    r2 = httpx.post(opened.url + "/v1/chat/completions", json=body)
    assert (r1.status_code, r2.headers["x-llmgw-cache"]) == (200, "hit-exact")
    # Anonymous callers have their own scope: a tenant with a key does not get their entry.
    assert ask(opened, KEY_A1, body["messages"][0]["content"])[0] == "miss"
    # Allowing anonymous callers does not make a wrong key acceptable.
    r = httpx.post(opened.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer wrong-key-xx"})
    assert r.status_code == 401


def test_per_key_limits(make_gateway, redis_standalone, fake_upstream, keys_dir: Path) -> None:
    gw = make_gateway(gateway_cfg(redis_standalone, fake_upstream.url, keys_dir))
    for i in range(2):
        ask(gw, KEY_LIMITED, f"limited {i} {time.time_ns()}")
    with pytest.raises(openai.RateLimitError) as e:
        ask(gw, KEY_LIMITED, "one too many")
    assert e.value.response.headers["x-ratelimit-limit-requests"] == "2"
    assert int(e.value.response.headers["retry-after"]) >= 1
    # Other keys are not limited by it.
    for i in range(3):
        ask(gw, KEY_B, f"unlimited {i} {time.time_ns()}")


def test_key_budget(make_gateway, redis_standalone, fake_upstream, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_key(keys, "poor", "vk-poor-team-0123456789abcdef", scope="poor", budgetUsd="0.000001")
    cfg = gateway_cfg(redis_standalone, fake_upstream.url, keys)
    cfg["models"][0]["pricing"] = {"input_per_1m": 1000.0, "output_per_1m": 1000.0}
    cfg["spend"] = {"flush_interval_s": 0.05}
    gw = make_gateway(cfg)
    ask(gw, "vk-poor-team-0123456789abcdef", f"expensive {time.time_ns()}")
    deadline = time.monotonic() + 10
    while True:  # the spend flusher commits the cost within a few flush intervals
        try:
            ask(gw, "vk-poor-team-0123456789abcdef", f"expensive again {time.time_ns()}")
        except openai.RateLimitError as e:
            assert e.body["code"] == "budget_exceeded", e.body
            break
        assert time.monotonic() < deadline, "the key's budget never took effect"
        time.sleep(0.1)


def test_keys_are_reloaded_and_kept_only_as_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmgw_sidecar.auth.virtual_keys as vk

    monkeypatch.setattr(vk, "RECHECK_S", 0.0)
    d = tmp_path / "keys"
    write_key(d, "a", KEY_A1, scope="team-a")
    keys = VirtualKeys(str(d))
    assert keys.lookup(KEY_B) is None
    caller = keys.lookup(KEY_A1)
    assert caller is not None and (caller.namespace, caller.service_account) == ("vk:team-a", "a")
    write_key(d, "b", KEY_B, tpm="100", maxParallel="3")
    caller_b = keys.lookup(KEY_B)
    assert caller_b is not None and caller_b.policy is not None
    assert (caller_b.policy.tpm, caller_b.policy.max_parallel, caller_b.policy.rpm) == (100, 3, None)
    # Memory holds hashes, not keys.
    assert set(keys._by_hash) == {key_hash(KEY_A1), key_hash(KEY_B)}
    assert KEY_A1 not in repr(keys._by_hash)
    # A removed Secret stops working; a broken one is ignored, not fatal.
    shutil.rmtree(d / "a")
    write_key(d, "broken", "vk-broken-0123456789abcdef", rpm="zero")
    assert keys.lookup(KEY_A1) is None and keys.lookup("vk-broken-0123456789abcdef") is None
    assert keys.lookup(KEY_B) is not None

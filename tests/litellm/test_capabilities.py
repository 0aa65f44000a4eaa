"""The Redis capability check: at start and after Redis comes back, /readyz and llmgw_redis_capability_ok say when
the cache is degraded (no search module for the semantic cache, Redis unreachable), while requests are still served."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from llmgw_sidecar.redis_capabilities import version_problem
from tests.integration.conftest import gateway_config
from tests.redis_servers import RedisProcess, free_port, server_args


def semantic_cfg(url: str, upstream: str) -> dict:
    return gateway_config({"url": url}, upstream, cache={"semantic": {"enabled": True, "embedding": {
        "provider": "openai", "base_url": upstream, "model": "ok", "dims": 3, "timeout_ms": 2000}}})


def readyz(gw) -> dict:
    return httpx.get(gw.url + "/readyz", timeout=5).json()


def test_version_rule() -> None:
    assert version_problem("7.0.0") is None and version_problem("7.4.1") is None and version_problem("8.2.0") is None
    assert "older than 7.0" in (version_problem("6.2.14") or "")
    assert "cannot read" in (version_problem("weird") or "")


def test_redis_stack_with_semantic_is_ok(make_gateway, redis_standalone: str, fake_upstream) -> None:
    gw = make_gateway(semantic_cfg(redis_standalone, fake_upstream.url))
    body = readyz(gw)
    assert body["cache"] == "ok" and body["redis_version"].startswith("7.")
    assert gw.sample("llmgw_redis_capability_ok") == 1


def test_plain_redis_without_search_is_degraded_and_still_serves(make_gateway, fake_upstream, tmp_path: Path) -> None:
    port = free_port()
    plain = RedisProcess(port, tmp_path / "plain", server_args(port, modules=False)).start()
    try:
        gw = make_gateway(semantic_cfg(plain.url, fake_upstream.url))
        body = readyz(gw)
        assert body["ready"] is True and body["cache"] == "degraded"
        assert any("no search module" in p for p in body["problems"])
        assert gw.sample("llmgw_redis_capability_ok") == 0
        c = gw.client()
        r = c.chat.completions.with_raw_response.create(model="ok", messages=[{"role": "user", "content": "x"}])
        assert r.status_code == 200
    finally:
        plain.kill()


def test_rechecked_after_redis_comes_back(make_gateway, fake_upstream, tmp_path: Path) -> None:
    port = free_port()
    stack = RedisProcess(port, tmp_path / "stack", server_args(port)).start()
    try:
        gw = make_gateway(semantic_cfg(stack.url, fake_upstream.url))
        assert readyz(gw)["cache"] == "ok"
        stack.kill()
        body = readyz(gw)
        assert body["redis"] == "unreachable" and body["cache"] == "degraded"
        # The same address comes back as a Redis without the search module: the next probe notices.
        plain = RedisProcess(port, tmp_path / "plain", server_args(port, modules=False)).start()
        try:
            deadline = time.monotonic() + 10
            while (body := readyz(gw))["redis"] != "ok" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert body["cache"] == "degraded" and any("no search module" in p for p in body["problems"])
            assert gw.sample("llmgw_redis_capability_ok") == 0
        finally:
            plain.kill()
    finally:
        stack.kill()


def test_exact_only_does_not_need_search(make_gateway, fake_upstream, tmp_path: Path) -> None:
    port = free_port()
    plain = RedisProcess(port, tmp_path / "plain", server_args(port, modules=False)).start()
    try:
        gw = make_gateway(gateway_config({"url": plain.url}, fake_upstream.url))
        assert readyz(gw)["cache"] == "ok"
    finally:
        plain.kill()

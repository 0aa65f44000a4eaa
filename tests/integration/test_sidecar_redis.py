"""Redis topologies and Redis trouble: the upstream keeps answering while Redis is down."""

from __future__ import annotations

import time

from tests.fake_upstream import FakeUpstream
from tests.integration.conftest import gateway_config
from tests.redis_servers import ClusterTopology, SentinelTopology


def _hit_after_miss(gw, content: str) -> list[str]:
    """Miss, then (once the background store has landed: it runs after the answer) the same request again."""
    c = gw.client()
    msgs = [{"role": "user", "content": content}]
    stored = gw.sample("llmgw_cache_stores_total")
    first = c.chat.completions.with_raw_response.create(model="ok", messages=msgs).headers["x-llmgw-cache"]
    deadline = time.monotonic() + 5
    while gw.sample("llmgw_cache_stores_total") == stored and time.monotonic() < deadline:
        time.sleep(0.01)
    return [first, c.chat.completions.with_raw_response.create(model="ok", messages=msgs).headers["x-llmgw-cache"]]


def test_sentinel_topology(make_gateway, redis_sentinel: SentinelTopology, fake_upstream: FakeUpstream) -> None:
    gw = make_gateway(gateway_config({"mode": "sentinel", "sentinels": redis_sentinel.sentinel_addrs,
                                      "master_name": redis_sentinel.master_name}, fake_upstream.url))
    assert _hit_after_miss(gw, "via sentinel") == ["miss", "hit-exact"]


def test_cluster_topology_keys_on_every_shard(make_gateway, redis_cluster: ClusterTopology,
                                              fake_upstream: FakeUpstream) -> None:
    gw = make_gateway(gateway_config({"mode": "cluster", "nodes": redis_cluster.startup_nodes}, fake_upstream.url))
    for i in range(12):
        assert _hit_after_miss(gw, f"via cluster {i}") == ["miss", "hit-exact"]
    import redis as redis_lib

    owners = set()
    for node in redis_cluster.nodes:
        c = redis_lib.Redis(port=node.port)
        if c.execute_command("ROLE")[0] == b"master" and any(True for _ in c.scan_iter(f"{gw.prefix}:exact:*")):
            owners.add(node.port)
        c.close()
    assert len(owners) == 3


def test_redis_killed_mid_test_requests_still_answered(make_gateway, redis_own, fake_upstream: FakeUpstream) -> None:
    gw = make_gateway(gateway_config({"url": redis_own.url}, fake_upstream.url))
    c = gw.client()
    msgs = [{"role": "user", "content": "survive redis"}]
    assert _hit_after_miss(gw, "survive redis") == ["miss", "hit-exact"]
    redis_own.kill()
    t0 = time.monotonic()
    for _ in range(10):
        r = c.chat.completions.with_raw_response.create(model="ok", messages=msgs)
        assert r.status_code == 200 and r.parse().choices[0].message.content == "echo: survive redis"
        assert r.headers["x-llmgw-cache"] == "miss"
    assert time.monotonic() - t0 < 5  # deadlines + open breaker: no request waits on a dead Redis for long
    assert gw.sample("llmgw_redis_errors_total") >= 3
    assert gw.sample("llmgw_redis_fail_open_total") >= 1  # the breaker opened and short-circuited later calls
    assert gw.sample("llmgw_redis_circuit_open") == 1
    import urllib.request

    with urllib.request.urlopen(gw.url + "/readyz", timeout=5) as resp:
        assert b'"fail-open"' in resp.read()  # still ready: limits default to fail-open
    redis_own.start()  # AOF on: the entry written before the crash is back
    deadline = time.monotonic() + 10
    while True:
        r = c.chat.completions.with_raw_response.create(model="ok", messages=msgs)
        if r.headers["x-llmgw-cache"] == "hit-exact":
            break
        assert time.monotonic() < deadline, "cache did not come back after Redis restarted"
        time.sleep(0.2)
    assert gw.sample("llmgw_redis_circuit_open") == 0

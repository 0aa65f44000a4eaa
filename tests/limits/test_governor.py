"""The governor against real Redis: reservation and settlement, refunds, parallel slots, the sliding window, budgets,
Redis down (fail open with the local limiter, or 503) and Redis Cluster."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmgw_sidecar.context import Usage
from llmgw_sidecar.errors import ApiError
from llmgw_sidecar.pricing import NANO
from llmgw_sidecar.ratelimit import build_governor
from llmgw_sidecar.spend import SpendService
from llmgw_sidecar.spend.keys import scope_totals_key
from tests.limits.helpers import client, config, ctx, metrics


async def test_no_limits_no_governor(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone})
    assert build_governor(cfg, client(cfg), metrics()) is None


async def test_tokens_reserved_then_settled_to_real_usage(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, {"tpm": 1000, "rpm": 100})
    g = build_governor(cfg, client(cfg), metrics())
    assert g is not None
    c1 = ctx(cfg, "x" * 40, max_tokens=500)  # estimate 10 + 4 + 1 prompt + 500 completion = 515
    await g.admit(c1)
    assert c1.headers["x-ratelimit-remaining-tokens"] == str(1000 - 515)
    c2 = ctx(cfg, "x" * 40, max_tokens=500)
    with pytest.raises(ApiError) as e:
        await g.admit(c2)  # 515 + 515 > 1000
    assert e.value.status == 429 and e.value.code == "rate_limit_exceeded"
    assert e.value.headers["x-ratelimit-limit-tokens"] == "1000"
    c1.usage = Usage(12, 30)
    await g.settle(c1)  # the reservation shrinks to the real 42 tokens
    await g.flush()  # settlements are batched for a few ms; make it land now
    c3 = ctx(cfg, "x" * 40, max_tokens=500)
    await g.admit(c3)
    assert c3.headers["x-ratelimit-remaining-tokens"] == str(1000 - 42 - 515)
    assert c3.headers["x-ratelimit-remaining-requests"] == "98"


async def test_cache_hit_refunds_model_limits_but_not_scope_rpm(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, {"rpm": 2}, limits={"scopes": [{"scope": "namespace", "rpm": 3}]})
    g = build_governor(cfg, client(cfg), metrics())
    assert g is not None
    for _ in range(2):
        c = ctx(cfg)
        await g.admit(c)
        c.cache_result = "hit-exact"
        c.usage = Usage(10, 10)
        await g.settle(c)
        await g.flush()
    c = ctx(cfg)
    await g.admit(c)  # model rpm refunded twice: still room upstream
    with pytest.raises(ApiError) as e:
        await g.admit(ctx(cfg))  # but the namespace made 3 requests in the window
    assert "namespace:rpm" in e.value.message


async def test_max_parallel_slot_released_on_settle(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, {"max_parallel": 2})
    g = build_governor(cfg, client(cfg), metrics())
    assert g is not None
    a, b = ctx(cfg), ctx(cfg)
    await g.admit(a)
    await g.admit(b)
    with pytest.raises(ApiError):
        await g.admit(ctx(cfg))
    a.usage = Usage(1, 1)
    await g.settle(a)
    await g.flush()
    await g.admit(ctx(cfg))


async def test_settlements_are_batched_into_one_call(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, {"max_parallel": 50})
    g = build_governor(cfg, client(cfg), metrics())
    assert g is not None
    ctxs = [ctx(cfg) for _ in range(50)]
    for c in ctxs:
        await g.admit(c)
    for c in ctxs:
        c.usage = Usage(1, 1)
        await g.settle(c)
    assert len(g.rl._pending) == 50  # queued, not yet sent
    await asyncio.sleep(0.1)  # the background settler sends them within a few ms
    assert g.rl._pending == []
    for _ in range(50):
        await g.admit(ctx(cfg))  # all 50 slots are free again


async def test_sliding_window_frees_capacity_after_window(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, {"rpm": 3}, limits={"window_s": 0.5})
    g = build_governor(cfg, client(cfg), metrics())
    assert g is not None
    for _ in range(3):
        await g.admit(ctx(cfg))
    with pytest.raises(ApiError) as e:
        await g.admit(ctx(cfg))
    assert e.value.headers["Retry-After"] == "1"
    reset = e.value.headers["x-ratelimit-reset-requests"]
    assert reset.endswith("ms") and 0 < int(reset[:-2]) <= 500
    await asyncio.sleep(int(reset[:-2]) / 1000 + 0.05)  # the oldest request has left the window (Redis clock)
    await g.admit(ctx(cfg))


async def test_per_scope_limits_are_per_caller(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, limits={"scopes": [{"scope": "pod", "rpm": 1},
                                                               {"scope": "api_key", "rpm": 1}]})
    g = build_governor(cfg, client(cfg), metrics())
    assert g is not None
    await g.admit(ctx(cfg, pod="a", key="k1"))
    await g.admit(ctx(cfg, pod="b", key="k2"))  # other pod, other key: own buckets
    with pytest.raises(ApiError):
        await g.admit(ctx(cfg, pod="a", key="k3"))  # pod a again
    with pytest.raises(ApiError):
        await g.admit(ctx(cfg, pod="c", key="k1"))  # key k1 again


async def test_budget_exceeded_after_spend_is_committed(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, budgets=[{"scope": "namespace", "period": "day", "max_usd": 0.001}],
                 spend={"flush_interval_s": 0.05})
    r = client(cfg)
    m = metrics()
    g = build_governor(cfg, r, m)
    assert g is not None
    spend = SpendService(cfg, r, m)
    spend.start()
    try:
        c = ctx(cfg)
        await g.admit(c)
        assert c.headers["x-llmgw-budget-remaining"] == "0.001000"
        c.usage = Usage(100, 300)  # 100 x 1 + 300 x 3 = 1000 USD per 1M... = 0.001 USD
        await g.settle(c)
        spend.record(c)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        key = scope_totals_key(cfg.redis.key_prefix, "team-a", "gw", "day", day)
        for _ in range(100):
            if await r.hget(key, "ns:team-a"):
                break
            await asyncio.sleep(0.05)
        assert int(await r.hget(key, "ns:team-a")) == round(0.001 * NANO)
        with pytest.raises(ApiError) as e:
            await g.admit(ctx(cfg))
        assert e.value.code == "budget_exceeded" and e.value.status == 429
        assert e.value.headers["x-llmgw-budget-remaining"] == "0.000000"
        assert 0 < int(e.value.headers["Retry-After"]) <= 86401
        await g.admit(ctx(cfg, ns="team-b"))  # another namespace has its own budget
    finally:
        await spend.close()


async def test_redis_down_fail_open_uses_local_limiter(redis_own) -> None:
    cfg = config({"url": redis_own.url}, {"rpm": 3})
    m = metrics()
    g = build_governor(cfg, client(cfg), m)
    assert g is not None
    await g.admit(ctx(cfg))  # through Redis: 1 of 3 used, and this process saw it
    redis_own.kill()
    c = ctx(cfg)
    await g.admit(c)  # locally: this process alone (1 replica) may use what the window still allows
    assert c.headers["x-ratelimit-limit-requests"] == "3"
    await g.admit(ctx(cfg))
    with pytest.raises(ApiError) as e:
        await g.admit(ctx(cfg))  # the request admitted through Redis still counts: 3 in the window, not 2 + 3
    assert e.value.code == "rate_limit_exceeded"
    assert e.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert m.ratelimit_decisions.labels("redis", "fail_open")._value.get() == 2
    assert m.ratelimit_decisions.labels("redis", "local_rejected")._value.get() == 1
    assert m.ratelimit_decisions.labels("redis", "timeout")._value.get() == 0


async def test_redis_down_fail_closed_is_503(redis_own) -> None:
    cfg = config({"url": redis_own.url, "op_timeout_ms": 200}, {"rpm": 2}, limits={"fail_open": False})
    g = build_governor(cfg, client(cfg), metrics())
    assert g is not None
    redis_own.kill()
    with pytest.raises(ApiError) as e:
        await g.admit(ctx(cfg))
    assert e.value.status == 503 and e.value.code == "rate_limiter_unavailable"


async def test_cluster_decision_is_atomic_on_one_slot(redis_cluster) -> None:
    cfg = config({"mode": "cluster", "nodes": redis_cluster.startup_nodes}, {"rpm": 5, "tpm": 10_000},
                 limits={"scopes": [{"scope": "namespace", "rpm": 4}]},
                 budgets=[{"scope": "namespace", "max_usd": 5}])
    r = client(cfg)
    m = metrics()
    g = build_governor(cfg, r, m)
    assert g is not None
    # A burst as the very first use of a fresh cluster client (see redis_topology.ensure_initialized)
    results = await asyncio.gather(*[g.admit(ctx(cfg)) for _ in range(8)], return_exceptions=True)
    assert sum(1 for x in results if x is None) == 4
    assert m.ratelimit_decisions.labels("redis", "fail_open")._value.get() == 0
    assert all(isinstance(x, ApiError) for x in results if x is not None)
    await r.aclose()


async def test_api_key_limit_applies_to_callers_without_a_key(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, limits={"scopes": [{"scope": "api_key", "rpm": 2}]})
    g = build_governor(cfg, client(cfg), metrics())
    assert g is not None
    await g.admit(ctx(cfg, pod="a"))
    await g.admit(ctx(cfg, pod="b"))  # no Authorization: both are the one anonymous caller
    with pytest.raises(ApiError) as e:
        await g.admit(ctx(cfg, pod="c"))
    assert "api_key:rpm" in e.value.message
    await g.admit(ctx(cfg, key="k1"))  # a caller with a key has its own bucket


async def test_model_limits_are_decided_only_on_the_way_upstream(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, {"rpm": 1}, limits={"scopes": [{"scope": "namespace", "rpm": 3}]})
    g = build_governor(cfg, client(cfg), metrics())
    assert g is not None
    miss = ctx(cfg)
    await g.admit(miss, with_model=False)
    await g.admit_model(miss)  # the model's only request
    assert miss.headers["x-ratelimit-limit-requests"] == "1" and miss.headers["x-ratelimit-remaining-requests"] == "0"
    hit = ctx(cfg)
    await g.admit(hit, with_model=False)  # a cache hit: scope limits only, the exhausted model limit is not asked
    assert hit.headers["x-ratelimit-limit-requests"] == "3" and hit.headers["x-ratelimit-remaining-requests"] == "1"
    refused = ctx(cfg)
    await g.admit(refused, with_model=False)
    with pytest.raises(ApiError) as e:
        await g.admit_model(refused)  # a miss past the model limit: refused, and its scope request given back
    assert "model:rpm" in e.value.message and e.value.headers["x-ratelimit-remaining-requests"] == "0"
    await g.flush()
    last = ctx(cfg)
    await g.admit(last, with_model=False)  # 3rd namespace request in the window: the refused one did not count
    with pytest.raises(ApiError) as e:
        await g.admit(ctx(cfg), with_model=False)
    assert "namespace:rpm" in e.value.message


async def test_slow_decision_is_refused_never_decided_locally(redis_debug) -> None:
    """A decision slower than limits.decision_timeout_ms answers 503 and gives back what it took; no local decision."""
    import threading

    import redis

    cfg = config({"url": redis_debug.url}, {"rpm": 2}, limits={"decision_timeout_ms": 100})
    m = metrics()
    g = build_governor(cfg, client(cfg), m)
    assert g is not None
    await g.admit(ctx(cfg))  # a first decision: connections and scripts are ready (a cold start has more time)
    pause = threading.Thread(target=lambda: redis.Redis.from_url(redis_debug.url).execute_command("DEBUG", "SLEEP", 0.4))
    pause.start()
    await asyncio.sleep(0.05)
    try:
        with pytest.raises(ApiError) as e:
            await g.admit(ctx(cfg))
        assert e.value.status == 503 and e.value.code == "rate_limiter_timeout"
    finally:
        await asyncio.to_thread(pause.join)
    await asyncio.sleep(0.05)
    await g.flush()
    c = ctx(cfg)
    await g.admit(c)  # the timed-out decision ran after the pause and was refunded: the second request is still free
    assert c.headers["x-ratelimit-remaining-requests"] == "0"
    assert m.ratelimit_decisions.labels("redis", "timeout")._value.get() == 1
    assert m.ratelimit_decisions.labels("redis", "fail_open")._value.get() == 0
    assert not g.gate.unreachable


async def test_outage_each_process_admits_its_share(redis_own) -> None:
    """Two replicas (heartbeats) lose Redis: each admits floor((limit - usage it last saw) / 2): together the limit.
    max_parallel: each keeps at most floor(limit / 2) of its own calls in flight, those from before the outage too."""
    cfg = config({"url": redis_own.url}, {"rpm": 10, "max_parallel": 4})
    g1, g2 = (build_governor(cfg, client(cfg), metrics()) for _ in range(2))
    assert g1 is not None and g2 is not None
    await g1.replicas.beat()
    assert await g2.replicas.beat() == 2 and await g1.replicas.beat() == 2
    open_calls = []
    for g in (g1, g2, g1):
        open_calls.append(c := ctx(cfg))
        await g.admit(c)  # through Redis; g1 last saw 3 used, g2 saw 2; g1 has 2 calls in flight, g2 one
    redis_own.kill()
    admitted = []
    for g in (g1, g2):
        n = 0
        for _ in range(10):
            c = ctx(cfg)
            try:
                await g.admit(c)
            except ApiError as e:
                assert e.status == 429
                continue
            n += 1
            c.usage = Usage(1, 1)
            await g.settle(c)
        admitted.append(n)
    assert admitted == [0, (10 - 2) // 2]  # g1 is at its parallel share (4 // 2) with the 2 calls from before
    assert g1.replicas.count == 2  # the last count is kept through the outage
    open_calls[0].usage = Usage(1, 1)
    await g1.settle(open_calls[0])  # one of g1's calls ends: a parallel slot of its share is free again
    for _ in range(10):
        c = ctx(cfg)
        try:
            await g1.admit(c)
        except ApiError as e:
            assert "model:rpm" in e.message
            break
        c.usage = Usage(1, 1)
        await g1.settle(c)
        admitted[0] += 1
    assert admitted == [(10 - 3) // 2, (10 - 2) // 2]  # 3 + 3 + 4 = 10 in the window, not 3 + 2 x 10


async def test_heartbeat_refreshes_the_usage_each_process_saw(redis_standalone: str) -> None:
    """What a process would carry into an outage is refreshed by its heartbeat, not only by its own decisions."""
    cfg = config({"url": redis_standalone}, {"rpm": 10, "tpm": 100_000})
    g1, g2 = (build_governor(cfg, client(cfg), metrics()) for _ in range(2))
    assert g1 is not None and g2 is not None
    await g2.admit(ctx(cfg))
    for _ in range(3):
        await g1.admit(ctx(cfg, max_tokens=50))
    rpm, tpm = (s.keys[0] for s in g1._model_specs["m"][:2])
    assert g2.local.seen[rpm][0] == 1
    await g2.replicas.beat()
    assert g2.local.seen[rpm][0] == 4 and g2.local.seen[tpm][0] == g1.local.seen[tpm][0]


async def test_redis_that_never_answers_is_unreachable_after_a_while() -> None:
    """A black hole (connections accepted, nothing ever answered): each decision first times out with 503; once no
    reply has come for limits.unreachable_after_s, Redis counts as unreachable and the process decides locally."""
    from llmgw_sidecar.devredis import free_port

    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    port = free_port()
    server = await asyncio.start_server(swallow, "127.0.0.1", port)
    cfg = config({"url": f"redis://127.0.0.1:{port}/0", "connect_timeout_ms": 50}, {"rpm": 5},
                 limits={"decision_timeout_ms": 100, "unreachable_after_s": 0.5})
    m = metrics()
    g = build_governor(cfg, client(cfg), m)
    assert g is not None
    try:
        outcomes = []
        for _ in range(8):
            try:
                await g.admit(ctx(cfg))
                outcomes.append("admitted")
            except ApiError as e:
                outcomes.append(e.code)
            if outcomes[-1] == "admitted":
                break
        assert outcomes[0] == "rate_limiter_timeout" and outcomes[-1] == "admitted", outcomes
        assert 2 <= outcomes.count("rate_limiter_timeout") <= 6, outcomes  # ~0.5 s of 0.1-0.2 s timeouts
        assert m.ratelimit_decisions.labels("redis", "fail_open")._value.get() == 1
        assert g.gate.unreachable
    finally:
        await g.close()
        for w in held:
            w.close()
        server.close()


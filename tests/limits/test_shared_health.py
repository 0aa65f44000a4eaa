"""The limits' fallback is a policy over the runtime's one Redis health (redis_guard.FallbackGate): what the cache
meets counts for the limits, but only unreachable sends them local, never slow. Real Redis, real exact cache."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from llmgw_sidecar.cache.exact import ExactCache
from llmgw_sidecar.context import CachedAnswer
from llmgw_sidecar.metrics import Metrics
from llmgw_sidecar.ratelimit import build_governor
from llmgw_sidecar.redis_guard import RedisHealth
from tests.limits.helpers import client, config, ctx, metrics


def _shared(cfg: Any, m: Metrics) -> tuple[RedisHealth, ExactCache, Any]:
    """What a runtime builds: one Redis health for the exact cache (its op_timeout_ms deadline) and the limits."""
    health = RedisHealth(cfg.redis.op_timeout_ms / 1000, cfg.redis.circuit_breaker, m)
    r = client(cfg)
    g = build_governor(cfg, r, m, health)
    assert g is not None and g.health is health
    return health, ExactCache(r, health, m, 60, 1 << 20), g


async def test_cache_timeouts_on_a_slow_redis_open_its_breaker_but_never_send_limits_local(redis_debug) -> None:
    """One health, two policies: the cache's 50 ms calls time out while Redis pauses and open the shared breaker (the
    cache is skipped), but slow is not unreachable: the limit decision still waits for Redis and is decided there."""
    import threading

    import redis

    cfg = config({"url": redis_debug.url}, {"rpm": 5})
    m = metrics()
    health, cache, g = _shared(cfg, m)
    await g.admit(ctx(cfg))  # connections and scripts are ready
    pause = threading.Thread(target=lambda: redis.Redis.from_url(redis_debug.url).execute_command("DEBUG", "SLEEP", 0.4))
    pause.start()
    await asyncio.sleep(0.05)
    try:
        assert await cache.get("slow:key") is None  # timed out: a miss
        assert health.breaker.is_open and health.breaker.stall_since is not None
        assert g.gate.use_redis() and not g.gate.unreachable
        c = ctx(cfg)
        await g.admit(c)  # waits out the pause (decision deadline 2 s here) and is decided in Redis
    finally:
        await asyncio.to_thread(pause.join)
    assert c.headers["x-ratelimit-remaining-requests"] == "3"
    assert m.ratelimit_decisions.labels("redis", "fail_open")._value.get() == 0
    assert not health.breaker.is_open and health.breaker.clean  # the decision's reply closed the shared breaker


async def test_refused_connection_seen_by_the_cache_sends_limits_local_until_a_reply(redis_own) -> None:
    """Unreachable is one fact of the shared health: a refused connection the cache met is enough for the limits to
    decide locally at once (they do not try Redis again before reset_after_s); the first reply ends it."""
    cfg = config({"url": redis_own.url, "connect_timeout_ms": 200}, {"rpm": 10})
    m = metrics()
    _, cache, g = _shared(cfg, m)
    await g.admit(ctx(cfg))
    redis_own.kill()
    assert await cache.get("down:key") is None  # refused: a miss
    assert g.gate.unreachable
    errors = m.redis_errors.labels("ratelimit")._value.get()
    c = ctx(cfg)
    await g.admit(c)  # decided locally, without a call to Redis
    assert m.ratelimit_decisions.labels("redis", "fail_open")._value.get() == 1
    assert m.redis_errors.labels("ratelimit")._value.get() == errors
    redis_own.restart()
    await asyncio.sleep(cfg.redis.circuit_breaker.reset_after_s)  # the breaker lets the cache probe again
    deadline = time.monotonic() + 10
    while not await cache.put("up:key", CachedAnswer(body=b"{}", created=time.time()), 60):
        assert time.monotonic() < deadline, "the cache never reached the restarted Redis"
        await asyncio.sleep(cfg.redis.circuit_breaker.reset_after_s)
    assert not g.gate.unreachable  # the cache's reply ended the fallback for the limits too
    await g.admit(ctx(cfg))
    assert m.ratelimit_decisions.labels("redis", "fail_open")._value.get() == 1  # decided in Redis again
    await g.close()

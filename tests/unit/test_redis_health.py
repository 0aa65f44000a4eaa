"""The one Redis health object: argument errors never count as Redis failures, a cancelled probe releases the
half-open state, and the breaker is shared by every stage of a runtime."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import DataError, ReadOnlyError, ResponseError

from llmgw_sidecar.cache.exact import ExactCache
from llmgw_sidecar.config import CircuitBreakerConfig, parse_config
from llmgw_sidecar.context import CachedAnswer
from llmgw_sidecar.metrics import Metrics
from llmgw_sidecar.redis_guard import CircuitBreaker, RedisHealth, is_redis_failure
from llmgw_sidecar.runtime import RuntimeClosedError, build_runtime


def test_argument_errors_are_not_redis_failures() -> None:
    assert not is_redis_failure(ResponseError("ERR invalid expire time in 'set' command"))
    assert not is_redis_failure(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert not is_redis_failure(DataError("Invalid input of type: 'dict'"))
    assert is_redis_failure(ResponseError("LOADING Redis is loading the dataset in memory"))
    assert is_redis_failure(ResponseError("OOM command not allowed when used memory > 'maxmemory'"))
    assert is_redis_failure(ReadOnlyError("You can't write against a read only replica."))
    assert is_redis_failure(ConnectionError("refused"))
    assert is_redis_failure(TimeoutError())
    b = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, reset_after_s=10))
    for _ in range(10):
        b.failure(ResponseError("ERR invalid expire time in 'set' command"))
    assert not b.is_open


async def test_cancelled_probe_releases_half_open() -> None:
    m = Metrics()
    h = RedisHealth(0.5, CircuitBreakerConfig(failure_threshold=1, reset_after_s=0.05), m)

    async def down() -> None:
        raise ConnectionError("down")

    await h.call("get", down, default=None)
    assert h.breaker.is_open
    await asyncio.sleep(0.06)
    started = asyncio.Event()

    async def hang() -> str:
        started.set()
        await asyncio.sleep(10)
        return "late"

    probe = asyncio.create_task(h.call("get", hang, default="dflt"))
    await started.wait()
    assert h.breaker.probing
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe

    async def up() -> str:
        return "fresh"

    # the very next call probes again (before the fix the breaker stayed open for good) and closes the breaker
    assert await h.call("get", up, default="dflt") == "fresh"
    assert not h.breaker.is_open and m.circuit_state._value.get() == 0


def test_silent_probe_is_given_up_after_reset_after() -> None:
    b = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, reset_after_s=0.05))
    b.failure()
    time.sleep(0.06)
    assert b.allow()  # the probe's owner never reports (e.g. a stage whose task was cancelled)
    assert not b.allow()
    time.sleep(0.06)
    assert b.allow()


async def test_request_ttl_rejected_by_redis_never_opens_the_breaker(redis_standalone: str) -> None:
    """The attack from the issue: `cache.ttl: 10**16` made Redis refuse every write and opened the shared breaker."""
    m = Metrics()
    h = RedisHealth(0.5, CircuitBreakerConfig(failure_threshold=2, reset_after_s=30), m)
    r = Redis.from_url(redis_standalone)
    try:
        cache = ExactCache(r, h, m, 60, 1 << 20)
        answer = CachedAnswer(body=b'{"choices":[1]}', created=time.time())
        for i in range(10):
            await cache.put(f"health-test:{i}", answer, 10**16)
        assert not h.breaker.is_open
        assert await cache.put("health-test:ok", answer, 60)
        assert (await cache.get("health-test:ok")) is not None
    finally:
        await r.aclose()


async def test_one_breaker_per_runtime_and_closed_runtime_refuses_work(redis_standalone: str) -> None:
    cfg = parse_config({"redis": {"url": redis_standalone, "key_prefix": "health-rt"},
                        "models": [{"name": "m", "provider": "mock", "limits": {"rpm": 100}}]})
    import aiohttp

    async with aiohttp.ClientSession() as session:
        rt = await build_runtime(cfg, Metrics(), session)
        assert rt.governor is not None and rt.governor.health is rt.health
        assert rt.exact is not None and rt.exact.guard is rt.health
        assert getattr(rt.spend, "buffer").health is rt.health  # noqa: B009 - SpendRecorder protocol has no buffer
        await rt.close()

        async def work() -> None:
            return None

        with pytest.raises(RuntimeClosedError):
            rt.background(work(), "a store")
        with pytest.raises(RuntimeClosedError):
            rt.enter()

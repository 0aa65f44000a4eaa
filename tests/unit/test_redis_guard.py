"""The circuit breaker and the guard's fail-open behaviour, without Redis."""

from __future__ import annotations

import asyncio
import time

from llmgw_sidecar.config import CircuitBreakerConfig
from llmgw_sidecar.metrics import Metrics
from llmgw_sidecar.redis_guard import CircuitBreaker, RedisGuard


def test_breaker_opens_probes_once_and_closes() -> None:
    b = CircuitBreaker(CircuitBreakerConfig(failure_threshold=2, reset_after_s=0.05))
    b.failure()
    assert not b.is_open
    b.failure()
    assert b.is_open and not b.allow()
    time.sleep(0.06)
    assert b.allow() and not b.allow()  # one probe only
    b.failure()
    assert b.is_open and not b.allow()  # failed probe: open again
    time.sleep(0.06)
    assert b.allow()
    b.success()
    assert not b.is_open and b.allow()


async def test_guard_times_out_and_fails_open() -> None:
    m = Metrics()
    g = RedisGuard(0.02, CircuitBreakerConfig(failure_threshold=1, reset_after_s=10), m)

    async def hang() -> str:
        await asyncio.sleep(1)
        return "late"

    t0 = time.perf_counter()
    assert await g.call("get", hang, default="dflt") == "dflt"
    assert time.perf_counter() - t0 < 0.2
    assert await g.call("get", hang, default="dflt") == "dflt"  # breaker open: not even tried
    assert m.redis_errors.labels("get")._value.get() == 1
    assert m.redis_fail_open.labels("get")._value.get() == 1
    assert m.circuit_state._value.get() == 1

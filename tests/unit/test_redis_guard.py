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


def test_fallback_gate_leaves_redis_only_when_unreachable() -> None:
    """The limits' policy over the shared breaker: timeouts are slow until no reply has come for stall_s; refused
    connections and Redis-state errors are unreachable at once; argument errors and unknown errors never are; a reply
    from anyone ends it; while unreachable one call probes every reset_after_s."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ReadOnlyError, ResponseError

    from llmgw_sidecar.redis_guard import FallbackGate, is_unreachable

    assert is_unreachable(RedisConnectionError("refused")) and is_unreachable(ConnectionRefusedError())
    assert is_unreachable(ReadOnlyError("READONLY You can't write against a read only replica."))
    assert not is_unreachable(TimeoutError()) and not is_unreachable(ResponseError("ERR invalid expire time"))
    assert not is_unreachable(KeyError("a bug")) and not is_unreachable(None)

    b = CircuitBreaker(CircuitBreakerConfig(failure_threshold=5, reset_after_s=0.05))
    gate = FallbackGate(b, stall_s=0.1)
    t0 = time.monotonic()
    for _ in range(6):
        b.failure(TimeoutError())  # the cache's timeouts open its breaker ...
    assert b.is_open and gate.use_redis() and gate.timed_out(t0) is None  # ... but slow is not unreachable
    b.success()  # a reply: the stall starts again from the next timeout
    assert b.stall_since is None
    t1 = time.monotonic()
    assert gate.timed_out(t1) is None
    time.sleep(0.11)
    silent = gate.timed_out(time.monotonic())
    assert silent is not None and silent >= 0.1 and gate.unreachable and not gate.use_redis()
    time.sleep(0.06)
    assert gate.use_redis() and not gate.use_redis()  # one probe
    b.failure(RedisConnectionError("refused"))  # the probe (or anyone) met a refused connection: still unreachable
    assert gate.unreachable and not gate.use_redis()
    b.failure(ResponseError("ERR invalid expire time"))  # Redis answered (an argument error): it is there
    assert not gate.unreachable and gate.use_redis() and b.clean

"""Redis health: one object per runtime, shared by the exact cache, the semantic index, limits and spend.

Redis calls may fail without failing the request: a short deadline, ONE circuit breaker (and one gauge), counted
metrics and a rate-limited log line. The upstream can still answer while Redis is down; we only lose the cache for a
while. An error Redis answers because of a command's own values (an out-of-range TTL, a wrong type) says nothing about
Redis' health: it is counted apart and never moves the breaker, so no request can switch the cache off for everyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import DataError, ResponseError

from .config import CircuitBreakerConfig
from .metrics import Metrics

T = TypeVar("T")
log = logging.getLogger("llmgw.redis")

# Error prefixes with which Redis reports ITS OWN state (loading, read-only replica, cluster down, out of memory,
# auth, persistence trouble): those are failures. Any other reply error was caused by the command's arguments.
_HEALTH_ERRORS = ("LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "OOM", "NOAUTH", "WRONGPASS",
                  "NOPERM", "NOREPLICAS", "MISCONF", "MOVED", "ASK", "NOSCRIPT", "UNBLOCKED", "NOTBUSY")


def is_redis_failure(exc: BaseException | None) -> bool:
    """True unless `exc` is a reply error caused by the command's own values (Redis answered: it is healthy)."""
    if isinstance(exc, DataError):
        return False  # redis-py refused the value before sending it
    if type(exc) is not ResponseError:
        # not a reply error, or one redis-py maps to a subclass for Redis' state (ReadOnlyError, OutOfMemoryError, ...)
        return True
    return str(exc).lstrip().upper().startswith(_HEALTH_ERRORS)


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (reset_after elapsed) -> one probe -> closed or open again.

    A probe that never reports (its task was cancelled) must not keep the breaker open forever: `abandon()` releases
    the half-open state at once, and a probe silent for longer than reset_after is given up anyway."""

    def __init__(self, cfg: CircuitBreakerConfig, on_change: Callable[[bool], None] | None = None) -> None:
        self.threshold = cfg.failure_threshold
        self.reset_after = cfg.reset_after_s
        self.failures = 0
        self.opened_at: float | None = None
        self._probe_since: float | None = None
        self._on_change = on_change

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    @property
    def probing(self) -> bool:
        return self._probe_since is not None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        now = time.monotonic()
        if self._probe_since is not None and now - self._probe_since < self.reset_after:
            return False  # exactly one request probes Redis; the rest keep failing open
        if now - self.opened_at >= self.reset_after:
            self._probe_since = now
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self._probe_since = None
        if self.opened_at is not None:
            self.opened_at = None
            if self._on_change:
                self._on_change(False)

    def failure(self, exc: BaseException | None = None) -> None:
        if not is_redis_failure(exc):
            self.success()  # Redis answered (with an argument error): it is up
            return
        self.failures += 1
        was_open = self.opened_at is not None
        if self._probe_since is not None or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            self._probe_since = None
            if not was_open and self._on_change:
                self._on_change(True)

    def abandon(self) -> None:
        """The probe was cancelled before it learnt anything: let the next request probe."""
        if self._probe_since is not None:
            self._probe_since = None
            if self.opened_at is not None:
                self.opened_at = time.monotonic() - self.reset_after


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str) -> None:
        self.log(logging.WARNING, key, msg)

    def info(self, key: str, msg: str) -> None:
        self.log(logging.INFO, key, msg)

    def log(self, level: int, key: str, msg: str) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.every_s:
            n = self._suppressed.pop(key, 0)
            self._last[key] = now
            if len(self._last) > 1000:  # keys are a small fixed set; bound it anyway
                self._last = {key: now}
            self.logger.log(level, "%s%s", msg, f" ({n} similar messages suppressed)" if n else "")
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1


class RedisHealth:
    """The one Redis health object of a runtime: deadline, breaker, gauge, metrics and log for every Redis user."""

    def __init__(self, timeout_s: float, breaker: CircuitBreakerConfig, metrics: Metrics) -> None:
        self.timeout_s = timeout_s
        self.metrics = metrics
        metrics.circuit_state.set(0)
        self.breaker = CircuitBreaker(breaker, on_change=lambda open_: metrics.circuit_state.set(1 if open_ else 0))
        self.log = RateLimitedLog(log)

    def failed(self, op: str, exc: BaseException) -> None:
        """Report a failed Redis operation of a stage that runs its own calls (counts, logs, moves the breaker)."""
        self.breaker.failure(exc)
        if is_redis_failure(exc):
            self.metrics.redis_errors.labels(op).inc()
            self.log.warning(op, f"redis {op} failed, continuing without it: {type(exc).__name__}: {exc}")
        else:
            self.metrics.redis_command_errors.labels(op).inc()
            self.log.warning(f"arg:{op}", f"redis refused {op} (a value of this request, not a Redis failure): {exc}")

    async def call(self, op: str, fn: Callable[[], Awaitable[T]], default: T, timeout_s: float | None = None) -> T:
        """Run one Redis operation; on timeout, error or open breaker return `default` (and count it)."""
        breaker = self.breaker
        if not breaker.allow():
            self.metrics.redis_fail_open.labels(op).inc()
            return default
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                result = await fn()
        except asyncio.CancelledError:
            breaker.abandon()
            raise
        except (Exception, TimeoutError) as e:  # noqa: BLE001 - any Redis trouble means fail open
            self.failed(op, e)
            return default
        if breaker.failures or breaker.opened_at is not None:
            breaker.success()
        return result


RedisGuard = RedisHealth  # the name it had before it was shared by every stage

"""Redis health: one object per runtime, shared by the exact cache, the semantic index, limits and spend.

Redis calls may fail without failing the request: a short deadline, ONE circuit breaker (and one gauge), counted
metrics and a rate-limited log line. The upstream can still answer while Redis is down; we only lose the cache for a
while. An error Redis answers because of a command's own values (an out-of-range TTL, a wrong type) says nothing about
Redis' health: it is counted apart and never moves the breaker, so no request can switch the cache off for everyone.

Every user reports to the same breaker, which keeps the facts: consecutive failures, and whether Redis is merely slow
(calls timing out since `stall_since`) or unreachable (`down_at`: a refused or broken connection, a Redis-state error).
Each user applies its policy to them: the caches and spend skip Redis while the breaker is open (`failure_threshold`
consecutive failures, timeouts included: a slow cache is no cache); the rate limits, which have a fallback of their own,
leave Redis only when it is unreachable, never because it is slow (`FallbackGate`). Any reply clears both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


def is_timeout(exc: BaseException | None) -> bool:
    return isinstance(exc, TimeoutError | RedisTimeoutError)


def is_unreachable(exc: BaseException | None) -> bool:
    """A refused or broken connection, or Redis reporting a state in which it cannot serve (loading, read-only,
    cluster down, ...): Redis is not there, as opposed to slow (a timeout) or refusing a command's own values. An
    unknown exception (a bug in a caller) proves nothing about Redis."""
    if exc is None or is_timeout(exc):
        return False
    if isinstance(exc, RedisConnectionError | OSError):
        return True
    return isinstance(exc, ResponseError) and is_redis_failure(exc)


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (reset_after elapsed) -> one probe -> closed or open again.

    A probe that never reports (its task was cancelled) must not keep the breaker open forever: `abandon()` releases
    the half-open state at once, and a probe silent for longer than reset_after is given up anyway.

    Beside the count it keeps what kind of trouble it is, for users with their own policy (`FallbackGate`): since when
    calls time out with no reply in between (`stall_since`), and when Redis was last found unreachable (`down_at`).
    `clean` is False while any of that needs a `success()` to clear it (a cheap check on the hit path)."""

    def __init__(self, cfg: CircuitBreakerConfig, on_change: Callable[[bool], None] | None = None) -> None:
        self.threshold = cfg.failure_threshold
        self.reset_after = cfg.reset_after_s
        self.failures = 0
        self.opened_at: float | None = None
        self._probe_since: float | None = None
        self._on_change = on_change
        self.clean = True
        self.last_reply = time.monotonic()  # of the replies reported while not clean (and every limit decision)
        self.stall_since: float | None = None
        self.down_at: float | None = None

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
        self.last_reply = time.monotonic()
        self.stall_since = self.down_at = None
        self.clean = True
        if self.opened_at is not None:
            self.opened_at = None
            if self._on_change:
                self._on_change(False)

    def failure(self, exc: BaseException | None = None) -> None:
        if not is_redis_failure(exc):
            self.success()  # Redis answered (with an argument error): it is up
            return
        self.clean = False
        if is_timeout(exc):
            self.stalled(time.monotonic())
        elif is_unreachable(exc):
            self.down_at = time.monotonic()
        self.failures += 1
        was_open = self.opened_at is not None
        if self._probe_since is not None or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            self._probe_since = None
            if not was_open and self._on_change:
                self._on_change(True)

    def stalled(self, sent_at: float) -> float:
        """A call sent at `sent_at` got no reply in time: the stall began then, or at the latest reply after it.
        Returns the stall's start."""
        self.clean = False
        if self.stall_since is None:
            self.stall_since = max(sent_at, self.last_reply)
        return self.stall_since

    def mark_down(self) -> None:
        """A user's policy found Redis unreachable (e.g. no reply for too long)."""
        self.clean = False
        self.down_at = time.monotonic()

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
        if not breaker.clean:
            breaker.success()
        return result

    def fallback_gate(self, stall_s: float) -> FallbackGate:
        """The policy of a user with a fallback of its own (the rate limits' local limiter), over this health."""
        return FallbackGate(self.breaker, stall_s)


class FallbackGate:
    """Redis or the fallback, for one user of the shared health: Redis is left only when it is unreachable (`down_at`:
    a refused or broken connection or a Redis-state error, reported by any user, or calls that have had no reply at all
    for `stall_s`), never because calls are slow or the cache's breaker is open. While it is unreachable, one call
    probes Redis every reset_after_s; any reply (this user's or another's) ends the fallback."""

    def __init__(self, breaker: CircuitBreaker, stall_s: float) -> None:
        self.breaker = breaker
        self.stall_s = stall_s
        self._probe_since: float | None = None

    @property
    def unreachable(self) -> bool:
        return self.breaker.down_at is not None

    def use_redis(self) -> bool:
        down = self.breaker.down_at
        if down is None:
            return True
        now = time.monotonic()
        if self._probe_since is not None and now - self._probe_since < self.breaker.reset_after:
            return False  # one probe at a time; the rest use the fallback
        if now - down >= self.breaker.reset_after:
            self._probe_since = now
            return True
        return False

    def timed_out(self, sent_at: float) -> float | None:
        """A call of this user got no reply in time. Returns None while that is only slow, else how long Redis has
        not replied (>= stall_s: it now counts as unreachable)."""
        silent = time.monotonic() - self.breaker.stalled(sent_at)
        if silent < self.stall_s:
            return None
        self.breaker.mark_down()
        return silent


RedisGuard = RedisHealth  # the name it had before it was shared by every stage

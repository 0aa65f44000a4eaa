"""Redis calls that may fail without failing the request: a short deadline, a circuit breaker, a counted metric and
a rate-limited log line. The upstream can still answer while Redis is down; we only lose the cache for a while."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .config import CircuitBreakerConfig
from .metrics import Metrics

T = TypeVar("T")
log = logging.getLogger("llmgw.redis")


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (reset_after elapsed) -> one probe -> closed or open again."""

    def __init__(self, cfg: CircuitBreakerConfig, on_change: Callable[[bool], None] | None = None) -> None:
        self.threshold = cfg.failure_threshold
        self.reset_after = cfg.reset_after_s
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False
        self._on_change = on_change

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if not self._probing and time.monotonic() - self.opened_at >= self.reset_after:
            self._probing = True  # exactly one request probes Redis; the rest keep failing open
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self._probing = False
        if self.opened_at is not None:
            self.opened_at = None
            if self._on_change:
                self._on_change(False)

    def failure(self) -> None:
        self.failures += 1
        was_open = self.opened_at is not None
        if self._probing or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            self._probing = False
            if not was_open and self._on_change:
                self._on_change(True)


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.every_s:
            n = self._suppressed.pop(key, 0)
            self._last[key] = now
            self.logger.warning("%s%s", msg, f" ({n} similar messages suppressed)" if n else "")
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1


class RedisGuard:
    def __init__(self, timeout_s: float, breaker: CircuitBreakerConfig, metrics: Metrics) -> None:
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.breaker = CircuitBreaker(breaker, on_change=lambda open_: metrics.circuit_state.set(1 if open_ else 0))
        self.log = RateLimitedLog(log)

    async def call(self, op: str, fn: Callable[[], Awaitable[T]], default: T, timeout_s: float | None = None) -> T:
        """Run one Redis operation; on timeout, error or open breaker return `default` (and count it)."""
        if not self.breaker.allow():
            self.metrics.redis_fail_open.labels(op).inc()
            return default
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                result = await fn()
        except (Exception, TimeoutError) as e:  # noqa: BLE001 - any Redis trouble means fail open
            self.breaker.failure()
            self.metrics.redis_errors.labels(op).inc()
            self.log.warning(op, f"redis {op} failed, continuing without it: {type(e).__name__}: {e}")
            return default
        self.breaker.success()
        return result

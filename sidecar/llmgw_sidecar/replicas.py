"""How many sidecars of a gateway are alive: each process announces itself in Redis with a heartbeat.

The count sizes each process's share of a limit while Redis is unreachable (ratelimit_local.py): N processes that each
admit at most limit / N admit about 1x the limit together, not N x. The last count seen is kept through an outage.

    {p}:rl:{ns/name}:replicas    ZSET member = process id, score = Redis TIME (ms) of its latest heartbeat
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from .metrics import Metrics
from .redis_guard import RateLimitedLog
from .redis_topology import ensure_initialized

log = logging.getLogger("llmgw.replicas")

# One round trip: announce, forget replicas not seen for `ttl`, count. Redis TIME: one clock for every replica.
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])"""

MISSED_BEATS = 3  # a replica not seen for this many intervals is no longer counted


class ReplicaRegistry:
    def __init__(self, redis: Any, key: str, interval_s: float, metrics: Metrics, timeout_s: float = 1.0) -> None:
        self.redis = redis
        self.key = key
        self.interval_s = interval_s
        self.ttl_ms = int(interval_s * MISSED_BEATS * 1000)
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.id = uuid.uuid4().hex  # per runtime: a reload's new runtime is briefly counted twice (conservative)
        self.count = 1  # until the first heartbeat: unknown, so this process alone
        self.known = False
        self.warn = RateLimitedLog(log)
        self._beat = redis.register_script(_BEAT)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the heartbeat loop (inside the running loop; idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ratelimit-heartbeat")

    async def beat(self) -> int:
        """Announce this process once and refresh the count; on failure keep the last known count."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await ensure_initialized(self.redis)
                n = int(await self._beat(keys=[self.key], args=[self.id, self.ttl_ms]))
        except Exception as e:  # noqa: BLE001 - Redis trouble: the last known count stays in force
            self.warn.warning("beat", f"replica heartbeat failed, keeping the last count ({self.count}): "
                              f"{type(e).__name__}: {e}")
            return self.count
        self.count, self.known = max(1, n), True
        self.metrics.ratelimit_replicas.set(self.count)
        return self.count

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        """Stop beating and leave at once, so the others' share grows on their next heartbeat."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout_s):
                await self.redis.zrem(self.key, self.id)

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
from collections.abc import Callable

from .metrics import Metrics
from .redis_guard import RateLimitedLog
from .redis_topology import AnyRedis, ensure_initialized

log = logging.getLogger("llmgw.replicas")

# One round trip: announce, forget replicas not seen for `ttl`, count; and read the current usage of the limit keys
# this process used lately (request logs: entries in the window; token logs: the running sum, an upper bound), so its
# view is fresh when Redis goes away. Redis TIME: one clock for every replica.
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
local out = {redis.call('ZCARD', KEYS[1])}
for i = 2, #KEYS do
  if ARGV[2 + i] == 'r' then
    out[i] = redis.call('ZCOUNT', KEYS[i], '(' .. (now - window), '+inf')
  else
    out[i] = tonumber(redis.call('HGET', KEYS[i], '_sum') or '0')
  end
end
return out"""

MISSED_BEATS = 3  # a replica not seen for this many intervals is no longer counted


class ReplicaRegistry:
    def __init__(self, redis: AnyRedis, key: str, interval_s: float, metrics: Metrics, timeout_s: float = 1.0, *,
                 window_ms: int = 60_000, usage_keys: Callable[[], list[tuple[str, str, str]]] | None = None,
                 on_usage: Callable[[list[str], list[int]], None] | None = None) -> None:
        self.redis = redis
        self.key = key
        self.interval_s = interval_s
        self.ttl_ms = int(interval_s * MISSED_BEATS * 1000)
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.window_ms = window_ms
        self.usage_keys = usage_keys  # () -> [(limit key, key to read, kind r|t)]
        self.on_usage = on_usage  # (limit keys, usage now) after a beat
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
        usage = self.usage_keys() if self.usage_keys is not None else []
        try:
            async with asyncio.timeout(self.timeout_s):
                await ensure_initialized(self.redis)
                res = await self._beat(keys=[self.key, *(k for _, k, _ in usage)],
                                       args=[self.id, self.ttl_ms, self.window_ms, *(kind for _, _, kind in usage)])
        except Exception as e:  # noqa: BLE001 - Redis trouble: the last known count stays in force
            self.warn.warning("beat", f"replica heartbeat failed, keeping the last count ({self.count}): "
                              f"{type(e).__name__}: {e}")
            return self.count
        if usage and self.on_usage is not None:
            self.on_usage([key for key, _, _ in usage], [int(x) for x in res[1:]])
        self.count, self.known = max(1, int(res[0])), True
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

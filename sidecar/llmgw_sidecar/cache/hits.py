"""Hit counts per exact-cache entry, for `cache show` and GET /admin/cache/entry, with no Redis call on the hit path.

A hit only adds one to a dict in memory. Every `spend.flush_interval_s` the counts go to Redis in two pipelined round
trips: PTTL of each entry hit, then HINCRBY + PEXPIRE of its companion hash, so a count lives exactly as long as its
entry and no sweep is needed. No command touches two keys, so the companion `{p}:hits:exact:...` (`companion_key`)
need not share the entry's Redis Cluster slot (it does when the prefix carries a hash tag); it is under the key
prefix (ACL key patterns). Its field is the entry's `created` time, so an entry deleted and stored again starts from
zero. Approximate by design: the counts of the last interval are lost when the process
is killed, and past MAX_PENDING distinct entries in one interval, new ones are counted from the next interval on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from ..redis_guard import RedisGuard
from ..redis_topology import AnyRedis

log = logging.getLogger(__name__)

MAX_PENDING = 20_000  # distinct entries hit in one interval (~100 bytes each in memory)
BATCH = 500  # commands per pipeline round


def companion_key(prefix: str, entry_key: str) -> str:
    """`{prefix}:exact:<rest>` -> `{prefix}:hits:exact:<rest>`: outside the SCAN patterns of entries."""
    return f"{prefix}:hits:{entry_key.removeprefix(prefix + ':')}"


def created_field(created: float) -> str:
    return f"{created:.6f}"


class HitCounter:
    def __init__(self, redis: AnyRedis, guard: RedisGuard, prefix: str, interval_s: float,
                 max_pending: int = MAX_PENDING) -> None:
        self.redis = redis
        self.prefix = prefix
        self.guard = guard
        self.interval_s = interval_s
        self.max_pending = max_pending
        self.pending: dict[tuple[str, float], int] = {}
        self.not_counted = 0  # hits past max_pending (kept for tests and the debug log)
        self._task: asyncio.Task[None] | None = None

    def hit(self, key: str, created: float) -> None:
        """The hit path: a dict update, and the flush loop started on the first hit."""
        k = (key, created)
        n = self.pending.get(k)
        if n is not None:
            self.pending[k] = n + 1
        elif len(self.pending) < self.max_pending:
            self.pending[k] = 1
        else:
            self.not_counted += 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="llmgw-hit-counts")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> int:
        """Write what is pending; returns the entries written. Redis trouble: those counts are dropped."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, {}
        items = list(batch.items())
        written = 0
        for i in range(0, len(items), BATCH):
            chunk = items[i:i + BATCH]
            n = await self.guard.call("cache_hits", functools.partial(self._write, chunk), default=-1)
            if n < 0:
                log.debug("hit counts of %d entries not written (Redis unavailable)", len(items) - i)
                break
            written += n
        return written

    async def _write(self, chunk: list[tuple[tuple[str, float], int]]) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for (key, _created), _n in chunk:
            pipe.pttl(key)
        ttls = await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        live = 0
        for ((key, created), n), ttl in zip(chunk, ttls, strict=True):
            if ttl is None or int(ttl) <= 0:
                continue  # gone (expired or deleted) meanwhile: nothing to count against
            companion = companion_key(self.prefix, key)
            pipe.hincrby(companion, created_field(created), n)
            pipe.pexpire(companion, int(ttl))
            live += 1
        if live:
            await pipe.execute()
        return live

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


async def read_hits(redis: AnyRedis, prefix: str, entry_key: str, created: float) -> int:
    """The counted hits of one entry (0 when none were written yet)."""
    value = await redis.hget(companion_key(prefix, entry_key), created_field(created))
    return int(value or 0)

"""The one flusher of a gateway: drains handed-off batches into durable totals with a reliable-queue pattern.

    lock (SET NX PX + renewal, fencing token) -> move (LMOVE queue -> processing)
    -> commit + acknowledge (one fenced Lua script: totals += batch, LREM processing, RPUSH sink outbox)
    -> sinks (PostgreSQL, idempotent by record id) from the outbox, each batch popped once every sink has it

A flusher killed anywhere leaves its batch in `processing` (or the outbox); the next lock holder takes it first. Commit
and acknowledge are one atomic script and batch ids are remembered, so nothing is lost and nothing counted twice.
The Redis totals (what budgets read) never wait for a sink: a PostgreSQL outage only grows the outbox (bounded by
`spend.sink_backlog_batches`; beyond it the oldest batch is dropped and counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from importlib import resources
from typing import Any, Protocol

import orjson

from ..metrics import Metrics
from ..redis_guard import RateLimitedLog
from ..redis_topology import AnyRedis, ensure_initialized
from .keys import daily_totals_key
from .records import aggregate, record_from_dict

log = logging.getLogger("llmgw.spend.flusher")

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('INCR', KEYS[2]) end
return 0"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"""
# Recovery first: a batch left in processing by a dead flusher is committed before anything new is moved.
_MOVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local e = redis.call('LINDEX', KEYS[3], 0)
if e then return e end
return redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT')"""


_SINK_POP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return 0 end
redis.call('LPOP', KEYS[2])
return 1"""

_DEAD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('LREM', KEYS[2], 1, ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[2])
return 1"""


class Sink(Protocol):
    async def write(self, records: list[Any]) -> None: ...
    async def close(self) -> None: ...


class Fenced(Exception):
    """This flusher lost its lock: another one drains now."""


class Flusher:
    def __init__(self, redis: AnyRedis, base: str, prefix: str, ns: str, name: str, metrics: Metrics, *,
                 lock_ttl_s: float, sinks: list[Sink] | None = None, timeout_s: float = 5.0,
                 sink_backlog: int = 10_000) -> None:
        self.redis = redis
        self.keys = {k: f"{base}:{k}" for k in ("lock", "fence", "queue", "processing", "committed", "days", "dead",
                                               "outbox")}
        self.prefix, self.ns, self.name = prefix, ns, name
        self.metrics = metrics
        self.ttl_ms = int(lock_ttl_s * 1000)
        self.sinks = sinks or []
        self.sink_backlog = sink_backlog
        self.timeout_s = timeout_s
        self.token: str | None = None
        self.renewed_at = 0.0
        self.fence = 0  # monotonically increasing per acquisition: tells lock generations apart in logs/metrics
        self.warn = RateLimitedLog(log)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._move = redis.register_script(_MOVE)
        self._dead = redis.register_script(_DEAD)
        self._sink_pop = redis.register_script(_SINK_POP)
        self._commit = redis.register_script(resources.files("llmgw_sidecar").joinpath("lua", "commit.lua").read_text())

    @property
    def leader(self) -> bool:
        return self.token is not None

    async def acquire(self) -> bool:
        await ensure_initialized(self.redis)
        token = uuid.uuid4().hex
        fence = int(await self._acquire(keys=[self.keys["lock"], self.keys["fence"]], args=[token, self.ttl_ms]))
        if fence:
            self.token, self.fence, self.renewed_at = token, fence, time.monotonic()
            self.metrics.spend_flusher_leader.set(1)
            log.info("spend flusher lock acquired (fence %d)", fence)
        return bool(fence)

    async def renew(self) -> bool:
        if self.token is None:
            return False
        ok = bool(await self._renew(keys=[self.keys["lock"]], args=[self.token, self.ttl_ms]))
        if ok:
            self.renewed_at = time.monotonic()
        else:
            self._lost()
        return ok

    async def maybe_renew(self) -> None:
        if self.token is not None and time.monotonic() - self.renewed_at >= self.ttl_ms / 3000:
            await self.renew()

    async def release(self) -> None:
        if self.token is not None:
            await self._release(keys=[self.keys["lock"]], args=[self.token])
            self._lost()

    def _lost(self) -> None:
        self.token = None
        self.metrics.spend_flusher_leader.set(0)

    async def move(self) -> bytes | None:
        """Step 1: the batch to commit next (a recovered one first), now in processing. None: queue empty."""
        if self.token is None:
            raise Fenced
        k = self.keys
        batch: bytes | None = await self._move(keys=[k["lock"], k["queue"], k["processing"]], args=[self.token])
        return batch

    async def commit(self, element: bytes) -> str:
        """Step 2: totals + acknowledge (+ sink outbox) atomically. Returns ok | duplicate | dead_letter; raises
        Fenced."""
        if self.token is None:
            raise Fenced
        try:
            batch = orjson.loads(element)
            records = [record_from_dict(r) for r in batch["records"]]
            batch_id = str(batch["id"])
        except (ValueError, KeyError, TypeError) as e:
            # A batch no flusher can read would block the queue forever: park it, keep it, count it.
            if not await self._dead(keys=[self.keys["lock"], self.keys["processing"], self.keys["dead"]],
                                    args=[self.token, element]):
                self._lost()
                raise Fenced from e
            log.error("unreadable spend batch moved to %s: %s: %s", self.keys["dead"], type(e).__name__, e)
            return "dead_letter"
        incr, days = aggregate(records, self.prefix, self.ns, self.name)
        k = self.keys
        keys = [k["lock"], k["processing"], k["committed"], k["days"], k["outbox"], *incr]
        args: list[Any] = [self.token, element, batch_id, len(incr), self.sink_backlog if self.sinks else 0]
        display = {daily_totals_key(self.prefix, self.ns, self.name, d) for d in days}
        for key, fields in incr.items():
            args += ["1" if key in display else "0", len(fields)]
            for f, v in fields.items():
                args += [f, v]
        args += sorted(days)
        res = int(await self._commit(keys=keys, args=args))
        if res == 0:
            self._lost()
            raise Fenced
        if res == 3:
            self.metrics.spend_records.labels("sink_dropped").inc()  # a batch (not records: unknown here) left
            self.warn.warning("outbox", f"spend sink outbox full ({self.sink_backlog} batches): dropped the oldest "
                              "batch (the Redis totals have it; PostgreSQL will not)")
        result = "duplicate" if res == 2 else "ok"
        self.metrics.spend_records.labels("duplicate" if res == 2 else "committed").inc(len(records))
        return result

    async def drain_sinks(self, max_batches: int = 1000) -> int:
        """Step 3: hand committed batches to the sinks, oldest first; a batch leaves the outbox once every sink has it
        (writes are idempotent by record id, so a batch written twice after a crash inserts nothing twice). Raises
        on a sink failure: the batch stays first in the outbox and is retried next round."""
        done = 0
        k = self.keys
        while self.sinks and done < max_batches and self.token is not None:
            async with asyncio.timeout(self.timeout_s):
                element = await self.redis.lindex(k["outbox"], 0)
                if element is None:
                    break
                records = [record_from_dict(r) for r in orjson.loads(element)["records"]]
                for sink in self.sinks:
                    await sink.write(records)
                if int(await self._sink_pop(keys=[k["lock"], k["outbox"]], args=[self.token, element])) < 0:
                    self._lost()
                    raise Fenced
            self.metrics.spend_flushes.labels("sink_ok").inc()
            done += 1
        return done

    async def drain(self, max_batches: int = 1000) -> int:
        """Commit batches until the queue is empty (or max_batches). Returns batches committed."""
        done = 0
        while done < max_batches and self.token is not None:
            t0 = time.perf_counter()
            async with asyncio.timeout(self.timeout_s):
                await self.maybe_renew()
                if self.token is None:
                    break
                element = await self.move()
                if element is None:
                    break
                try:
                    result = await self.commit(element)
                except Fenced:
                    self.metrics.spend_flushes.labels("fenced").inc()
                    raise
            self.metrics.spend_flushes.labels(result).inc()
            self.metrics.spend_flush_latency.observe(time.perf_counter() - t0)
            done += 1
        return done

    async def depths(self) -> tuple[int, int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.keys["queue"])
        pipe.llen(self.keys["processing"])
        pipe.llen(self.keys["outbox"])
        q, p, o = await pipe.execute()
        self.metrics.spend_buffer_depth.labels("redis").set(q)
        self.metrics.spend_buffer_depth.labels("processing").set(p)
        self.metrics.spend_buffer_depth.labels("sink").set(o)
        return int(q), int(p)

    async def _sinks_round(self) -> None:
        """Sinks apart from the totals: a PostgreSQL outage is logged and counted, and the totals go on."""
        try:
            await self.drain_sinks()
        except Fenced:
            raise
        except Exception as e:  # noqa: BLE001 - the batch stays first in the outbox; retried next round
            self.metrics.spend_flushes.labels("sink_error").inc()
            self.warn.warning("sink", f"spend sink (PostgreSQL) failed, keeping its batches in the outbox: "
                              f"{type(e).__name__}: {e}")

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Forever: become leader when the lock is free, renew it, drain. Any error: back off, keep the batch."""
        renew_every = self.ttl_ms / 3000
        while not stop.is_set():
            try:
                async with asyncio.timeout(self.timeout_s):
                    if self.token is None:
                        await self.acquire()
                    else:
                        await self.maybe_renew()
                await self.drain()
                if self.token is not None:
                    await self.depths()
                    await self._sinks_round()
            except Fenced:
                log.warning("spend flusher lost its lock (fence %d); another replica drains now", self.fence)
            except Exception as e:  # noqa: BLE001 - the batch stays in processing; retry after the interval
                self.metrics.spend_flushes.labels("error").inc()
                self.warn.warning("flush", f"spend flush failed, will retry: {type(e).__name__}: {e}")
            try:
                await asyncio.wait_for(stop.wait(), timeout=min(interval_s, renew_every))
            except TimeoutError:
                pass

"""Per-process memory buffer and the hand-off of batches to Redis.

A batch leaves memory only once Redis confirmed it: RPUSH, then (same connection, on every topology) WAITAOF so the
batch is on disk when AOF is on, and/or on `spend.wait_replicas` replicas. A batch whose confirmation failed is
retried with the SAME batch id, so a hand-off whose reply was lost but which did land is committed once (the commit is
idempotent by batch id).
At the memory bound (`spend.max_buffered_records`) new records are dropped and counted (event "dropped"): memory stays
bounded during a long Redis outage and the loss is visible, never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ..metrics import Metrics
from ..redis_guard import RateLimitedLog, RedisHealth
from ..redis_topology import AnyRedis, ensure_initialized
from .records import SpendRecord

log = logging.getLogger("llmgw.spend")


class SpendBuffer:
    def __init__(self, redis: AnyRedis, queue_key: str, metrics: Metrics, *, batch_size: int, max_records: int,
                 wait_replicas: int = 0, cluster: bool = False, timeout_s: float = 2.0) -> None:
        self.redis = redis
        self.queue_key = queue_key
        self.metrics = metrics
        self.batch_size = batch_size
        self.max_records = max_records
        self.wait_replicas = wait_replicas
        # Cluster pipelines cannot route a keyless WAITAOF: there we talk to the queue's node on one connection.
        self.cluster = cluster
        self.timeout_s = timeout_s
        self.records: deque[SpendRecord] = deque()
        self.health: RedisHealth | None = None  # the runtime's one Redis health (set by build_spend)
        self.pending: tuple[str, bytes, int] | None = None  # (batch id, payload, records) awaiting confirmation
        self._pending_ts = 0.0  # wall time of the oldest record in `pending`
        self.dropped = 0
        self._aof: bool | None = None
        self._lock = asyncio.Lock()
        self.warn = RateLimitedLog(log)
        self._buffered = metrics.spend_records.labels("buffered")  # per-request path: resolve the children once
        self._memory = metrics.spend_buffer_depth.labels("memory")

    @property
    def depth(self) -> int:
        return len(self.records) + (self.pending[2] if self.pending else 0)

    def add(self, rec: SpendRecord) -> None:
        if self.depth >= self.max_records:
            self.dropped += 1
            self.metrics.spend_records.labels("dropped").inc()
            self.warn.warning("dropped", f"spend buffer full ({self.max_records} records): dropping new records "
                              f"({self.dropped} so far); Redis has not taken records for a while")
            return
        self.records.append(rec)
        self._buffered.inc()
        self._memory.set(self.depth)

    def _next_batch(self) -> tuple[str, bytes, int] | None:
        if self.pending is None and self.records:
            n = min(self.batch_size, len(self.records))
            recs = [self.records.popleft().to_dict() for _ in range(n)]
            bid = uuid.uuid4().hex
            self.pending = (bid, orjson.dumps({"id": bid, "records": recs}), n)
            self._pending_ts = recs[0]["ts"]
        return self.pending

    async def _one_connection(self, cmds: list[tuple[Any, ...]]) -> list[Any]:
        """Send commands back to back on ONE connection (WAITAOF/WAIT wait for that connection's writes).
        Errors come back in the list. Cluster: on a connection of the node that owns the queue's slot."""
        client = self.redis
        if not self.cluster or not isinstance(client, RedisCluster):
            pipe = client.pipeline(transaction=False)
            for c in cmds:
                pipe.execute_command(*c)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies
        await ensure_initialized(client)
        node = client.get_node_from_key(self.queue_key)
        if node is None:  # the queue's slot has no owner (a cluster that lost a shard): a Redis failure, not a bug
            raise RedisConnectionError(f"no cluster node serves the slot of {self.queue_key}")
        conn = node.acquire_connection()
        try:
            await conn.send_packed_command(conn.pack_commands(cmds))
            out: list[Any] = []
            for _ in cmds:
                try:
                    out.append(await conn.read_response())
                except ResponseError as e:
                    out.append(e)
            return out
        except BaseException:
            # Unread replies would poison the next user of this connection: drop it.
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise
        finally:
            node.release(conn)

    async def _confirm_mode(self) -> None:
        """Once: is AOF on (then WAITAOF can confirm the write is on disk)?"""
        if self._aof is not None:
            return
        [res] = await self._one_connection([("WAITAOF", 1, 0, 1)])
        # A ResponseError: "appendonly is disabled" (nothing to fsync-wait for) or WAITAOF unknown (Redis < 7.2).
        self._aof = not isinstance(res, Exception)
        if not self._aof:
            log.info("spend hand-off without local fsync confirmation: %s", res)

    async def handoff(self) -> int:
        """Hand every buffered record to Redis, batch by batch. Returns records handed; stops at the first failure."""
        handed = 0
        async with self._lock:
            while (batch := self._next_batch()) is not None:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await self._confirm_mode()
                        ok = await self._push(batch[1])
                except Exception as e:  # noqa: BLE001 - keep the batch and retry it later, same id
                    ok = False
                    if self.health is not None:
                        self.health.breaker.failure(e)
                    self.warn.warning("handoff", f"spend hand-off to Redis failed, keeping records: "
                                      f"{type(e).__name__}: {e}")
                if not ok:
                    self.metrics.spend_handoffs.labels("error").inc()
                    break
                self.pending = None
                if self.health is not None and not self.health.breaker.clean:
                    self.health.breaker.success()  # hand-offs go on while the breaker is open: they probe too
                handed += batch[2]
                self.metrics.spend_handoffs.labels("ok").inc()
                self.metrics.spend_records.labels("handed_off").inc(batch[2])
        self.metrics.spend_buffer_depth.labels("memory").set(self.depth)
        oldest = self._pending_ts if self.pending else (self.records[0].ts if self.records else None)
        self.metrics.spend_handoff_age.set(max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        return handed

    async def _push(self, payload: bytes) -> bool:
        wait_ms = max(1, int(self.timeout_s * 500))
        cmds: list[tuple[Any, ...]] = [("RPUSH", self.queue_key, payload)]
        if self._aof:
            cmds.append(("WAITAOF", 1, self.wait_replicas, wait_ms))
        elif self.wait_replicas:
            cmds.append(("WAIT", self.wait_replicas, wait_ms))
        res = await self._one_connection(cmds)
        for r in res:
            if isinstance(r, Exception):
                raise r
        if self._aof:
            local, replicas = res[1]
            return int(local) >= 1 and int(replicas) >= self.wait_replicas
        if self.wait_replicas:
            return int(res[1]) >= self.wait_replicas
        return True

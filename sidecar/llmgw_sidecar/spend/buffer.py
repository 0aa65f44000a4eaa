"""Per-process memory buffer and the hand-off of batches to Redis.

A batch leaves memory only once Redis confirmed it: RPUSH, then (same connection) WAITAOF so the batch is on disk when
AOF is on, and/or on `spend.wait_replicas` replicas. A batch whose confirmation failed is retried with the SAME batch
id, so a hand-off whose reply was lost but which did land is committed once (the commit is idempotent by batch id).
At the memory bound (`spend.max_buffered_records`) new records are dropped and counted (event "dropped"): memory stays
bounded during a long Redis outage and the loss is visible, never silent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from typing import Any

import orjson
from redis.exceptions import ResponseError

from ..metrics import Metrics
from ..redis_guard import RateLimitedLog
from .records import SpendRecord

log = logging.getLogger("llmgw.spend")


class SpendBuffer:
    def __init__(self, redis: Any, queue_key: str, metrics: Metrics, *, batch_size: int, max_records: int,
                 wait_replicas: int = 0, cluster: bool = False, timeout_s: float = 2.0) -> None:
        self.redis = redis
        self.queue_key = queue_key
        self.metrics = metrics
        self.batch_size = batch_size
        self.max_records = max_records
        self.wait_replicas = wait_replicas
        # Cluster pipelines cannot route a keyless WAITAOF to the queue's node: there the write's reply is the ack.
        self.cluster = cluster
        self.timeout_s = timeout_s
        self.records: deque[SpendRecord] = deque()
        self.pending: tuple[str, bytes, int] | None = None  # (batch id, payload, records) awaiting confirmation
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
        return self.pending

    async def _confirm_mode(self) -> None:
        """Once: is AOF on (then WAITAOF can confirm the write is on disk)?"""
        if self._aof is not None or self.cluster:
            return
        try:
            await self.redis.execute_command("WAITAOF", 0, 0, 1)
            self._aof = True
            await self.redis.execute_command("WAITAOF", 1, 0, 1)
        except ResponseError as e:
            # "appendonly is disabled": nothing to wait for locally. Other errors: WAITAOF unknown (Redis < 7.2).
            self._aof = False
            log.info("spend hand-off without local fsync confirmation: %s", e)

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
                    self.warn.warning("handoff", f"spend hand-off to Redis failed, keeping records: "
                                      f"{type(e).__name__}: {e}")
                if not ok:
                    self.metrics.spend_handoffs.labels("error").inc()
                    break
                self.pending = None
                handed += batch[2]
                self.metrics.spend_handoffs.labels("ok").inc()
                self.metrics.spend_records.labels("handed_off").inc(batch[2])
        self.metrics.spend_buffer_depth.labels("memory").set(self.depth)
        return handed

    async def _push(self, payload: bytes) -> bool:
        if self.cluster:
            await self.redis.rpush(self.queue_key, payload)
            return True
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self.queue_key, payload)
        wait_ms = max(1, int(self.timeout_s * 500))
        if self._aof:
            pipe.execute_command("WAITAOF", 1, self.wait_replicas, wait_ms)
        elif self.wait_replicas:
            pipe.execute_command("WAIT", self.wait_replicas, wait_ms)
        res = await pipe.execute()
        if self._aof:
            local, replicas = res[1]
            return int(local) >= 1 and int(replicas) >= self.wait_replicas
        if self.wait_replicas:
            return int(res[1]) >= self.wait_replicas
        return True

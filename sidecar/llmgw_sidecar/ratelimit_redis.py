"""The Redis side of the rate limiter: decisions and settlements, each batched per process.

Decisions: one script call at a time per process. An idle process sends a decision at once (no task, no future); while
a call is on its way, the decisions that arrive wait and go together in the next call (lua/admit.lua decides them one
after the other, atomically). A burst therefore needs one connection and one round trip per batch instead of one each:
no connection storm on a cold pool, no queue of round trips behind a slow Redis. A waiter's own deadline never cancels
a batch others wait on; whatever a decision may have reserved after its waiter gave up is given back.
Settlements: the answers are already out; the settlements of the last few ms go in one script call (lua/settle.lua).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .metrics import Metrics
from .redis_guard import RateLimitedLog
from .redis_topology import AnyRedis, ensure_initialized

log = logging.getLogger("llmgw.ratelimit")
ADMIT_BATCH_MAX = 64
SETTLE_BATCH_S = 0.005  # how long settlements gather before one script call sends them
SETTLE_BATCH_MAX = 200


def _lua(name: str) -> str:
    return resources.files("llmgw_sidecar").joinpath("lua", name).read_text()


def pack(args: list[Any]) -> str:
    """All ARGV in one string (the scripts split it on newlines): one bulk string to encode instead of dozens.
    No value contains a newline: Kubernetes names, model names from the config, numbers, hex ids."""
    return "\n".join(map(str, args))


@dataclass(slots=True)
class Decision:
    blocked: int  # index (1-based) of the blocking limit, or n_limits + budget index; 0 = admitted
    retry_s: float
    used: list[tuple[int, float]] = field(default_factory=list)  # (used, reset_ms) per limit
    budget_left: list[int] = field(default_factory=list)  # nano-USD per budget
    at_ms: int = 0


def _parse(res: list[Any], pos: int, n: int, nb: int) -> Decision:
    """The decision at `pos` of admit.lua's reply (res[0] is the Redis time)."""
    used = [(int(res[pos + 2 + 2 * i]), float(res[pos + 3 + 2 * i])) for i in range(n)]
    left = [int(float(x)) for x in res[pos + 2 + 2 * n:pos + 2 + 2 * n + nb]]
    return Decision(int(res[pos]), int(res[pos + 1]) / 1000, used, left, int(res[0]))


@dataclass(slots=True)
class _Waiting:
    keys: list[str]
    args: list[Any]  # member, n, nb, per limit (kind, limit, cost), per budget (field, max)
    n: int
    nb: int
    fut: asyncio.Future[Decision]


class RedisLimiter:
    def __init__(self, redis: AnyRedis, window_ms: int, lease_ms: int, timeout_s: float, metrics: Metrics,
                 cold_s: float = 1.0) -> None:
        self.redis = redis
        self.window_ms = window_ms
        self.lease_ms = lease_ms
        self.timeout_s = timeout_s
        # Until the first decision came back, the deadline also covers opening connections, discovering a cluster and
        # loading the script (redis.connect_timeout_ms based): a cold process is not a slow Redis.
        self.cold_s = cold_s
        self.warm = False
        self.metrics = metrics
        self.warn = RateLimitedLog(log)
        self._admit = redis.register_script(_lua("admit.lua"))
        self._settle = redis.register_script(_lua("settle.lua"))
        self._waiting: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None
        self._busy = False  # a decision call is on its way (direct or a batch)
        self._pending: list[tuple[list[str], list[Any]]] = []
        self._settler: asyncio.Task[None] | None = None

    @property
    def deadline_s(self) -> float:
        return self.timeout_s if self.warm else self.timeout_s + self.cold_s

    # --- decisions ---
    async def decide(self, keys: list[str], args: list[Any], n: int, nb: int) -> Decision:
        """One decision; raises what its call raised (the caller classifies it), or is cancelled by its deadline."""
        if self._busy:  # join the next batch
            w = _Waiting(keys, args, n, nb, asyncio.get_running_loop().create_future())
            self._waiting.append(w)
            return await w.fut
        self._busy = True
        try:
            async with asyncio.timeout(self.deadline_s):
                await ensure_initialized(self.redis)
                res = await self._admit(keys=keys, args=[pack([self.window_ms, self.lease_ms, 1, *args])])
        except BaseException:
            self.refund(keys, args, n, nb)  # cancelled or failed: the script may have run all the same
            raise
        finally:
            self._busy = False
            if self._waiting:  # what arrived meanwhile goes in one batch
                self._busy = True
                self._sender = asyncio.create_task(self._send_loop())
        self.warm = True
        return _parse(res, 1, n, nb)

    async def _send_loop(self) -> None:
        try:
            while self._waiting:
                batch = [w for w in self._waiting[:ADMIT_BATCH_MAX] if not w.fut.done()]  # done: its deadline passed
                del self._waiting[:ADMIT_BATCH_MAX]
                if batch:
                    await self._send(batch)
        finally:
            self._busy = False

    async def _send(self, batch: list[_Waiting]) -> None:
        args: list[Any] = [self.window_ms, self.lease_ms, len(batch)]
        for w in batch:
            args += w.args
        try:
            async with asyncio.timeout(self.deadline_s):
                await ensure_initialized(self.redis)
                res = await self._admit(keys=[k for w in batch for k in w.keys], args=[pack(args)])
        except asyncio.CancelledError:
            for w in batch:
                w.fut.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - every waiter gets the error and decides what it means
            for w in batch:
                self.refund(w.keys, w.args, w.n, w.nb)  # the script may have run all the same
                if not w.fut.done():
                    w.fut.set_exception(e)
            return
        self.warm = True
        pos = 1
        for w in batch:
            d = _parse(res, pos, w.n, w.nb)
            pos += 2 + 2 * w.n + w.nb
            if not w.fut.done():
                w.fut.set_result(d)
            elif d.blocked == 0:  # its deadline passed while the batch was on its way: give the reservation back
                self.refund(w.keys, w.args, w.n, w.nb)

    def refund(self, keys: list[str], args: list[Any], n: int, nb: int) -> None:
        """Take a decision's member out of every limit it may have been added to (a no-op where it was not).
        Queued behind the decision on the same process, so Redis always sees the decision first."""
        out: list[Any] = [args[0], n]
        for i in range(n):
            kind, cost = args[3 + 3 * i], args[5 + 3 * i]
            out += [kind, 1 if kind == "r" else 0, cost]
        self.queue_settle(keys[:len(keys) - nb], out)

    # --- settlements ---
    def queue_settle(self, keys: list[str], args: list[Any]) -> None:
        """member, n, then per limit (kind, action, estimate): see lua/settle.lua."""
        self._pending.append((keys, args))
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_loop())

    async def _settle_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(SETTLE_BATCH_S)
            await self.flush()

    async def flush(self) -> None:
        """Send the pending settlements now (also used by close and by tests)."""
        while self._pending:
            batch, self._pending = self._pending[:SETTLE_BATCH_MAX], self._pending[SETTLE_BATCH_MAX:]
            keys = [k for ks, _ in batch for k in ks]
            args: list[Any] = [self.window_ms, len(batch)]
            for _, a in batch:
                args += a
            try:
                async with asyncio.timeout(self.timeout_s * 4):
                    await ensure_initialized(self.redis)
                    await self._settle(keys=keys, args=[pack(args)])
            except Exception as e:  # noqa: BLE001 - leases expire by themselves; never fail an answer
                self.metrics.redis_errors.labels("ratelimit_settle").inc()
                self.warn.warning("settle", f"rate limit settle failed: {type(e).__name__}: {e}")

    def stop(self) -> None:
        for t in (self._sender, self._settler):
            if t is not None:
                t.cancel()

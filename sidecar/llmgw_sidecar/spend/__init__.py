"""Spend tracking: records buffered per process, handed to Redis in batches, drained by one fenced flusher into durable
totals (Redis hashes per day x model x scope, optionally PostgreSQL). See docs/limits-and-spend.md."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from typing import Any

from aiohttp import web

from ..config import Config, RedisMode
from ..context import RequestContext
from ..errors import ApiError
from ..metrics import Metrics
from ..pricing import NANO
from ..redis_guard import RedisHealth
from ..redis_topology import AnyRedis
from .buffer import SpendBuffer
from .flusher import Flusher, Sink
from .keys import breakdown_key, daily_totals_key, scope_totals_key, spend_base
from .postgres import PostgresSink
from .records import METRICS, RecordFactory, SpendRecord

__all__ = ["SpendService", "breakdown_key", "build_spend", "daily_totals_key", "read_totals", "scope_totals_key"]
log = logging.getLogger("llmgw.spend")


def _usd(fields: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in fields.items() if not k.endswith("_nusd")}
    out["cost_usd"] = round(fields.get("cost_nusd", 0) / NANO, 9)
    out["saved_usd"] = round(fields.get("saved_nusd", 0) / NANO, 9)
    return out


async def read_totals(redis: AnyRedis, prefix: str, ns: str, name: str, days: list[str] | None = None,
                      last: int = 31) -> dict[str, Any]:
    """Totals of a gateway by day, scope and model (what GET /spend serves). Integers are exact nano-USD sums."""
    base = spend_base(prefix, ns, name)
    if days is None:
        known = sorted(d.decode() if isinstance(d, bytes) else d for d in await redis.smembers(f"{base}:days"))
        days = known[-last:]
    out_days = []
    grand: dict[str, int] = dict.fromkeys(METRICS, 0)
    for day in days:
        pipe = redis.pipeline(transaction=False)
        pipe.hgetall(daily_totals_key(prefix, ns, name, day))
        pipe.hgetall(breakdown_key(prefix, ns, name, day))
        tot_raw, by_raw = await pipe.execute()
        tot = {m: int(_s(tot_raw, m) or 0) for m in METRICS}
        by: dict[tuple[str, str], dict[str, int]] = {}
        for f, v in by_raw.items():
            scope, model, metric = (f.decode() if isinstance(f, bytes) else f).split("\t")
            by.setdefault((scope, model), dict.fromkeys(METRICS, 0))[metric] = int(v)
        for m in METRICS:
            grand[m] += tot[m]
        out_days.append({
            "day": day, "totals": _usd(tot),
            "by_scope_model": [{"scope": s, "model": m, **_usd(v)} for (s, m), v in sorted(by.items())],
        })
    return {"gateway": f"{ns}/{name}", "currency": "USD", "totals": _usd(grand), "days": out_days}


def _s(h: dict[Any, Any], key: str) -> Any:
    return h.get(key.encode(), h.get(key))


def check_spend_query(request: web.Request) -> None:
    """A malformed ?day= or ?last= is the caller's mistake: 400 naming the parameter, not an empty 200."""
    for day in request.query.getall("day", []):
        try:
            ok = datetime.date.fromisoformat(day).isoformat() == day  # the stored keys use exactly this form
        except ValueError:
            ok = False
        if not ok:
            raise ApiError(400, f"day '{day[:40]}' is not a date: use YYYY-MM-DD (UTC)", code="invalid_day",
                           param="day")
    last = request.query.get("last")
    if last is not None and not last.isdigit():
        raise ApiError(400, f"last '{last[:40]}' is not a number of days", code="invalid_last", param="last")


class SpendService:
    def __init__(self, config: Config, redis: AnyRedis, metrics: Metrics, sinks: list[Sink] | None = None) -> None:
        self.cfg = config.spend
        self.redis = redis
        self.metrics = metrics
        g = config.gateway
        self.prefix, self.ns, self.name = config.redis.key_prefix, g.namespace, g.name
        base = spend_base(self.prefix, g.namespace, g.name)
        self.factory = RecordFactory(config)
        self.buffer = SpendBuffer(
            redis, f"{base}:queue", metrics, batch_size=self.cfg.batch_size, max_records=self.cfg.max_buffered_records,
            wait_replicas=self.cfg.wait_replicas, cluster=config.redis.mode == RedisMode.cluster,
        )
        if sinks is None:
            sinks = [PostgresSink(self.cfg.database_url, f"{g.namespace}/{g.name}")] if self.cfg.database_url else []
        self.flusher = Flusher(redis, base, self.prefix, g.namespace, g.name, metrics,
                               lock_ttl_s=self.cfg.lock_ttl_s, sinks=sinks, sink_backlog=self.cfg.sink_backlog_batches)
        self._children: dict[tuple[Any, ...], Any] = {}
        metrics.spend_flush_interval.set(self.cfg.flush_interval_s)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Background hand-off and flusher loops (call inside the running loop)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._handoff_loop(), name="spend-handoff"),
                           asyncio.create_task(self.flusher.run(self.cfg.flush_interval_s, self._stop),
                                               name="spend-flusher")]

    def record(self, ctx: RequestContext) -> None:
        if ctx.state.get("governor_rejected"):
            return  # refused before any work: no cost, and no Redis write for a flood of 429s
        try:
            rec = self.factory.from_ctx(ctx)
        except Exception:  # never fail an answer because of accounting
            log.exception("cannot build spend record")
            return
        self.add(rec)
        if not self._tasks:
            with contextlib.suppress(RuntimeError):
                self.start()

    def add(self, rec: SpendRecord) -> None:
        m = self.metrics
        if rec.cost_nusd:
            self._child(m.spend, rec.model).inc(rec.cost_nusd / NANO)
        if rec.saved_nusd:
            self._child(m.spend_saved, rec.model).inc(rec.saved_nusd / NANO)
        if rec.cache.startswith("hit"):
            m.top_scopes.add(rec.scope, rec.saved_nusd / NANO)
        if rec.estimated:
            self._child(m.spend_records, "estimated").inc()
        if not rec.priced:
            self._child(m.spend_records, "unpriced").inc()
        self.buffer.add(rec)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 10_000:
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child

    async def _handoff_loop(self) -> None:
        while not self._stop.is_set():
            await self.buffer.handoff()
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.cfg.flush_interval_s)
            except TimeoutError:
                pass

    async def totals(self, days: list[str] | None = None, last: int = 31) -> dict[str, Any]:
        out = await read_totals(self.redis, self.prefix, self.ns, self.name, days, last)
        out["pending_in_memory"] = self.buffer.depth
        out["dropped"] = self.buffer.dropped
        return out

    async def handle(self, request: web.Request) -> web.Response:
        """GET /spend[?day=YYYY-MM-DD&day=...][&last=N]: totals as JSON."""
        check_spend_query(request)
        days = request.query.getall("day", []) or None
        try:
            last = max(1, min(400, int(request.query.get("last", "31"))))
        except ValueError:
            last = 31
        try:
            async with asyncio.timeout(5):
                body = await self.totals(days, last)
        except Exception as e:  # noqa: BLE001 - the endpoint reports, never crashes
            return web.json_response({"error": {"message": f"spend totals unavailable: {type(e).__name__}: {e}",
                                                "type": "api_error", "code": "spend_unavailable"}}, status=503)
        return web.json_response(body)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Hand off what is buffered (bounded time), stop the loops, give up the lock."""
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await self.buffer.handoff()
                if self.flusher.leader:
                    await self.flusher.drain()
                    await self.flusher.drain_sinks()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await self.flusher.release()
        for s in self.flusher.sinks:
            with contextlib.suppress(Exception):
                await s.close()


class NullSpend:
    """spend.enabled: false."""

    def record(self, ctx: RequestContext) -> None:
        return None

    async def handle(self, request: web.Request) -> web.Response:
        raise ApiError(404, "spend tracking is disabled (spend.enabled: false)", code="spend_disabled")

    async def close(self) -> None:
        return None


def build_spend(config: Config, redis: AnyRedis, metrics: Metrics, health: RedisHealth | None = None
                ) -> SpendService | NullSpend:
    """Inside a running loop (the app's start-up) the hand-off and flusher loops start at once: every replica is a
    flusher candidate, so a replica that serves nothing still drains what a dead one handed off."""
    if not config.spend.enabled:
        return NullSpend()
    svc = SpendService(config, redis, metrics)
    svc.buffer.health = health  # hand-off failures and successes feed the runtime's one breaker
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        svc.start()
    return svc

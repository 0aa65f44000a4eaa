"""Sentinel with a failover during load, and Redis Cluster: limits keep deciding and spend stays exact."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis as redis_sync

from llmgw_sidecar.errors import ApiError
from llmgw_sidecar.ratelimit import build_governor
from llmgw_sidecar.spend import SpendService, daily_totals_key
from tests.limits.helpers import client, config, ctx, metrics
from tests.redis_servers import start_cluster, start_sentinel
from tests.spend.helpers import day_totals, expected, make_records, today


def _failover(sentinel_port: int, timeout: float = 20.0) -> None:
    """SENTINEL FAILOVER, retried while the sentinels do not yet know a promotable replica (NOGOODSLAVE)."""
    s = redis_sync.Redis(port=sentinel_port)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                s.execute_command("SENTINEL", "FAILOVER", "mymaster")
                return
            except redis_sync.ResponseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        s.close()


async def _totals(svc: SpendService, prefix: str) -> dict[str, int]:
    try:
        return await day_totals(svc.redis, daily_totals_key(prefix, "team-a", "gw", today()))
    except Exception:  # noqa: BLE001 - mid-failover: ask again
        return {}


async def test_sentinel_failover_during_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    topo = start_sentinel(tmp_path)
    try:
        cfg = config({"mode": "sentinel", "sentinels": topo.sentinel_addrs, "op_timeout_ms": 500},
                     {"rpm": 100_000}, spend={"flush_interval_s": 0.05, "wait_replicas": 1, "lock_ttl_s": 2})
        r = client(cfg)
        m = metrics()
        svc = SpendService(cfg, r, m)
        svc.start()
        gov = build_governor(cfg, r, m)
        assert gov is not None
        pool = make_records(3000)
        recs = []
        old_master = topo.current_master_port()
        failover = asyncio.get_running_loop().run_in_executor(None, _failover, topo.sentinels[0].port)
        done_at: float | None = None
        t0 = time.monotonic()
        for rec in pool:  # load before, during and 1 s after the failover
            if done_at is not None and time.monotonic() - done_at > 1.0:
                break
            if done_at is None and failover.done():
                failover.result()
                done_at = time.monotonic()
            recs.append(rec)
            svc.add(rec)
            try:
                await gov.admit(ctx(cfg))  # decisions go on (Redis or the local fallback), never an exception
            except ApiError as e:
                raise AssertionError(f"unexpected rejection: {e.message}") from e
            await asyncio.sleep(0.005)
        assert done_at is not None, "failover did not happen under load"
        deadline = time.monotonic() + 40
        while (await _totals(svc, cfg.redis.key_prefix)).get("requests") != len(recs):
            assert time.monotonic() < deadline, f"totals {await _totals(svc, cfg.redis.key_prefix)}"
            await asyncio.sleep(0.1)
        assert topo.current_master_port() != old_master
        tot = await _totals(svc, cfg.redis.key_prefix)
        assert tot["cost_nusd"] == expected(recs)["cost_nusd"]
        await asyncio.sleep(0.5)  # a late duplicate would show up now
        assert (await _totals(svc, cfg.redis.key_prefix))["requests"] == len(recs)
        print(f"failover test: {time.monotonic() - t0:.1f}s, handoff errors "
              f"{m.spend_handoffs.labels('error')._value.get()}")
        await svc.close()
        await r.aclose()
    finally:
        topo.stop()


async def test_cluster_spend_and_totals(tmp_path: Path) -> None:
    """Own cluster with AOF switched on: hand-offs are fsync-confirmed (WAITAOF on the queue node's connection)."""
    topo = start_cluster(tmp_path)
    try:
        for n in topo.nodes:
            c = redis_sync.Redis(port=n.port)
            c.config_set("appendonly", "yes")
            c.close()
        cfg = config({"mode": "cluster", "nodes": topo.startup_nodes}, spend={"batch_size": 30})
        r = client(cfg)
        svc = SpendService(cfg, r, metrics())
        recs = make_records(100)
        for rec in recs:
            svc.add(rec)
        deadline = time.monotonic() + 10
        handed = 0
        while svc.buffer.depth:  # an unconfirmed batch (AOF just switched on) stays and is retried
            handed += await svc.buffer.handoff()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert handed == 100 and svc.buffer._aof is True
        assert await svc.flusher.acquire()
        assert await svc.flusher.drain() == 4
        out = await svc.totals()
        assert out["totals"]["requests"] == 100
        assert out["totals"]["cost_usd"] == round(expected(recs)["cost_nusd"] / 1e9, 9)
        await r.aclose()
    finally:
        topo.stop()

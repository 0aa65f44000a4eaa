"""Loss and double counting under crashes, with real processes:
- a sidecar killed with SIGKILL after handing records to Redis loses none;
- a flusher killed between move and commit loses none and double-counts none;
- Redis killed (SIGKILL) and restarted with AOF loses none (hand-offs are confirmed with WAITAOF);
- records produced while Redis is down are kept and delivered later, up to the memory bound (the rest counted)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from llmgw_sidecar.spend import SpendService, daily_totals_key
from llmgw_sidecar.spend.keys import spend_base
from tests.limits.helpers import client, config, metrics
from tests.spend.helpers import day_totals, expected, make_records, today
from tests.spend.procs import REPO, metric_value, sidecar_config, start_sidecars, stop_all


async def _wait(pred: Callable[[], Awaitable[bool]], timeout: float = 15.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(every)


async def _try_acquire(svc: SpendService) -> bool:
    """Like the flusher loop: a connection error (Redis just came back) is one failed attempt."""
    try:
        return await svc.flusher.acquire()
    except Exception:  # noqa: BLE001
        return False


async def _queued_records(r: Any, key: str) -> int:
    return sum(len(orjson.loads(e)["records"]) for e in await r.lrange(key, 0, -1))


async def test_sidecar_sigkill_after_handoff_loses_nothing(redis_standalone: str, tmp_path: Path) -> None:
    cfg = sidecar_config({"url": redis_standalone})
    prefix = cfg["redis"]["key_prefix"]
    base = spend_base(prefix, "team-a", "gw")
    r = client(config({"url": redis_standalone}))
    await r.set(f"{base}:lock", "test-holds-it", px=60_000)  # nobody flushes: records stay handed-off, uncommitted
    n = 40
    [car] = start_sidecars(tmp_path, cfg)
    second = []
    try:
        usage = []
        async with aiohttp.ClientSession() as s:
            for i in range(n):
                body = {"model": "m", "messages": [{"role": "user", "content": f"q{i} " + "w" * i}]}
                async with s.post(car.url + "/v1/chat/completions", json=body) as resp:
                    assert resp.status == 200
                    usage.append((await resp.json())["usage"])
        await _wait(lambda: _eq(_queued_records(r, f"{base}:queue"), n))
        car.kill()  # SIGKILL: no shutdown hook runs
        await r.delete(f"{base}:lock")
        second = start_sidecars(tmp_path, cfg)  # another replica takes the flusher role
        key = daily_totals_key(prefix, "team-a", "gw", today())
        await _wait(lambda: _eq(_field(r, key, "requests"), n))
        tot = await day_totals(r, key)
        want = sum(u["prompt_tokens"] * 1000 + u["completion_tokens"] * 3000 for u in usage)
        assert tot["cost_nusd"] == want and tot["prompt_tokens"] == sum(u["prompt_tokens"] for u in usage)
        assert await r.llen(f"{base}:processing") == 0 and await r.llen(f"{base}:queue") == 0
        assert metric_value(second[0].metrics_text(), "llmgw_spend_records_total", event="committed") == n
    finally:
        stop_all([car, *second])
        await r.aclose()


async def _eq(aw: Awaitable[int], want: int) -> bool:
    return (await aw) == want


async def _field(r: Any, key: str, field: str) -> int:
    v = await r.hget(key, field)
    return int(v) if v is not None else -1


async def test_flusher_killed_between_move_and_commit(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, spend={"batch_size": 25})
    r = client(cfg)
    svc = SpendService(cfg, r, metrics())
    recs = make_records(100)
    for rec in recs:
        svc.add(rec)
    assert await svc.buffer.handoff() == 100
    proc = subprocess.Popen([sys.executable, "-m", "tests.spend.flusher_harness", redis_standalone,
                             cfg.redis.key_prefix], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)  # type: ignore[union-attr]
        assert line.strip() == b"moved", line
        proc.kill()
        proc.wait(10)
        keys = svc.flusher.keys
        assert await r.llen(keys["processing"]) == 1 and await r.llen(keys["queue"]) == 3
        await _wait(lambda: _try_acquire(svc), timeout=5)  # its lock expires (1 s): we take over
        assert await svc.flusher.drain() == 4
        tot = await day_totals(r, daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today()))
        exp = expected(recs)
        assert tot["requests"] == 100 and tot["cost_nusd"] == exp["cost_nusd"] and tot["saved_nusd"] == exp["saved_nusd"]
        assert await r.llen(keys["processing"]) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def test_redis_sigkill_and_restart_with_aof_loses_nothing(redis_own) -> None:
    cfg = config({"url": redis_own.url}, spend={"batch_size": 50, "lock_ttl_s": 1})
    r = client(cfg)
    svc = SpendService(cfg, r, metrics())
    first, second = make_records(120, seed=2), make_records(180, seed=3)
    for rec in first:
        svc.add(rec)
    await svc.buffer.handoff()
    await svc.flusher.acquire()
    await svc.flusher.drain()  # committed totals must survive too
    for rec in second:
        svc.add(rec)
    assert await svc.buffer.handoff() == 180  # confirmed by WAITAOF: on disk
    assert svc.buffer._aof is True
    redis_own.kill()  # SIGKILL right after the confirmation
    redis_own.start()
    await _wait(lambda: _try_acquire(svc), timeout=15, every=0.2)  # the old lock is still there until it expires
    await svc.flusher.drain()
    tot = await day_totals(r, daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today()))
    assert tot["requests"] == 300 and tot["cost_nusd"] == expected(first + second)["cost_nusd"]


async def test_records_made_while_redis_is_down_are_delivered_up_to_the_bound(redis_own) -> None:
    cfg = config({"url": redis_own.url, "op_timeout_ms": 200}, spend={"max_buffered_records": 100, "lock_ttl_s": 1})
    r = client(cfg)
    m = metrics()
    svc = SpendService(cfg, r, m)
    redis_own.kill()
    recs = make_records(130)
    for rec in recs[:60]:
        svc.add(rec)
    assert await svc.buffer.handoff() == 0  # kept in memory
    for rec in recs[60:]:
        svc.add(rec)
    assert svc.buffer.depth == 100 and svc.buffer.dropped == 30
    assert m.spend_records.labels("dropped")._value.get() == 30
    assert m.spend_handoffs.labels("error")._value.get() >= 1
    redis_own.start()
    await _wait(lambda: _ge(svc.buffer.handoff(), 0), timeout=10)
    await _wait(lambda: _eq(_depth(svc), 0), timeout=10)
    await _wait(lambda: _try_acquire(svc), timeout=15, every=0.2)
    await svc.flusher.drain()
    tot = await day_totals(r, daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today()))
    assert tot["requests"] == 100 and tot["cost_nusd"] == expected(recs[:100])["cost_nusd"]


async def _ge(aw: Awaitable[int], n: int) -> bool:
    return (await aw) >= n


async def _depth(svc: SpendService) -> int:
    await svc.buffer.handoff()
    return svc.buffer.depth

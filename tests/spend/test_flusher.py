"""Hand-off and flusher against real Redis: exact totals, idempotent re-delivery, lock exclusivity and fencing,
records built from requests (estimated usage flagged, hits as savings, unknown prices flagged)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from llmgw_sidecar.context import Usage
from llmgw_sidecar.spend import SpendService, daily_totals_key, read_totals
from llmgw_sidecar.spend.flusher import Fenced, Flusher
from llmgw_sidecar.spend.keys import spend_base
from llmgw_sidecar.spend.records import RecordFactory
from tests.limits.helpers import client, config, ctx, metrics
from tests.spend.helpers import day_totals, expected, make_records, today


def _service(cfg, r=None, **kw) -> SpendService:
    return SpendService(cfg, r or client(cfg), metrics(), **kw)


async def test_totals_are_exact_by_day_scope_and_model(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, spend={"batch_size": 100})
    svc = _service(cfg)
    recs = make_records(1000, days=(0.0, 86400.0))
    for rec in recs:
        svc.add(rec)
    assert await svc.buffer.handoff() == 1000
    assert await svc.flusher.acquire()
    assert await svc.flusher.drain() == 10
    prefix = cfg.redis.key_prefix
    out = await read_totals(svc.redis, prefix, "team-a", "gw")
    assert len(out["days"]) == 2
    exp = expected(recs)
    for k in ("requests", "prompt_tokens", "completion_tokens", "hits"):
        assert out["totals"][k] == exp[k]
    assert out["totals"]["cost_usd"] == round(exp["cost_nusd"] / 1e9, 9)
    day = [r for r in recs if r.day == today()]
    tot = await day_totals(svc.redis, daily_totals_key(prefix, "team-a", "gw", today()))
    assert tot["cost_nusd"] == sum(r.cost_nusd for r in day) and tot["saved_nusd"] == sum(r.saved_nusd for r in day)
    human = await svc.redis.hget(daily_totals_key(prefix, "team-a", "gw", today()), "cost_usd")
    assert abs(float(human) - tot["cost_nusd"] / 1e9) < 1e-9
    today_out = next(d for d in out["days"] if d["day"] == today())
    cell = next(c for c in today_out["by_scope_model"] if c["scope"].endswith("ns:ns0") and c["model"] == "m")
    sel = [r for r in day if r.namespace == "ns0" and r.model == "m"]
    assert cell["requests"] == len(sel) and cell["cost_usd"] == round(sum(r.cost_nusd for r in sel) / 1e9, 9)
    assert await svc.redis.llen(svc.flusher.keys["processing"]) == 0


async def test_redelivered_batch_is_counted_once(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone})
    svc = _service(cfg)
    for rec in make_records(50):
        svc.add(rec)
    await svc.buffer.handoff()
    q = svc.flusher.keys["queue"]
    # A hand-off whose reply was lost is retried with the same batch: the queue then holds it twice.
    element = await svc.redis.lindex(q, 0)
    await svc.redis.rpush(q, element)
    await svc.flusher.acquire()
    assert await svc.flusher.drain() == 2
    tot = await day_totals(svc.redis, daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today()))
    assert tot["requests"] == 50
    assert svc.metrics.spend_flushes.labels("duplicate")._value.get() == 1


async def test_one_flusher_at_a_time_and_a_stale_one_is_fenced(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone})
    r = client(cfg)
    svc = _service(cfg, r)
    recs = make_records(30)
    for rec in recs:
        svc.add(rec)
    await svc.buffer.handoff()
    base = spend_base(cfg.redis.key_prefix, "team-a", "gw")
    a = Flusher(r, base, cfg.redis.key_prefix, "team-a", "gw", metrics(), lock_ttl_s=0.5)
    b = Flusher(r, base, cfg.redis.key_prefix, "team-a", "gw", metrics(), lock_ttl_s=0.5)
    assert await a.acquire()
    assert not await b.acquire()
    element = await a.move()  # A takes the batch ... and stalls past its lock's lifetime
    assert element is not None
    for _ in range(40):
        if await b.acquire():
            break
        await asyncio.sleep(0.05)
    assert b.leader and b.fence == a.fence + 1
    assert await b.drain() == 1  # B recovers A's batch from processing
    with pytest.raises(Fenced):
        await a.commit(element)
    tot = await day_totals(r, daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today()))
    assert tot["requests"] == 30 and tot["cost_nusd"] == expected(recs)["cost_nusd"]


async def test_service_loops_deliver_and_close_hands_off(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone}, spend={"flush_interval_s": 0.05})
    svc = _service(cfg)
    svc.start()
    recs = make_records(20)
    for rec in recs[:10]:
        svc.add(rec)
    key = daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today())
    for _ in range(100):
        if (await day_totals(svc.redis, key)).get("requests") == 10:
            break
        await asyncio.sleep(0.05)
    assert svc.flusher.leader
    for rec in recs[10:]:
        svc.add(rec)
    await svc.close()  # hands off and drains what is left, then releases the lock
    assert (await day_totals(svc.redis, key))["requests"] == 20
    assert await svc.redis.get(svc.flusher.keys["lock"]) is None


def test_records_from_requests() -> None:
    cfg = config({"url": "redis://127.0.0.1:1/0"}, models=[
        {"name": "m", "provider": "mock", "pricing": {"input_per_1m": 2.0, "output_per_1m": 8.0,
                                                      "cached_input_per_1m": 0.5}},
        {"name": "gpt-4o-mini-2024-07-18", "provider": "mock"},
        {"name": "mystery", "provider": "mock"},
    ])
    f = RecordFactory(cfg)
    c = ctx(cfg, "x" * 400, max_tokens=50)
    c.usage = Usage(1000, 100, 400)
    r = f.from_ctx(c)  # 600 x 2000 + 400 x 500 + 100 x 8000 nano-USD
    assert (r.cost_nusd, r.saved_nusd, r.estimated) == (600 * 2000 + 400 * 500 + 100 * 8000, 0, False)
    c.cache_result = "hit-exact"
    hit = f.from_ctx(c)
    assert hit.cost_nusd == 0 and hit.saved_nusd == r.cost_nusd
    c2 = ctx(cfg, "x" * 400, max_tokens=50)  # success without usage: estimated, never zero
    est = f.from_ctx(c2)
    assert est.estimated and est.prompt_tokens == 100 + 4 + 1 and est.completion_tokens == 50 and est.cost_nusd > 0
    c2.status = 502
    assert f.from_ctx(c2).cost_nusd == 0  # failed calls are not billed
    c3 = ctx(cfg)
    c3.model = cfg.models[1]  # dated snapshot -> built-in gpt-4o-mini price
    c3.usage = Usage(1_000_000, 1_000_000)
    assert f.from_ctx(c3).cost_nusd == round((0.15 + 0.60) * 1e9)
    c3.model = cfg.models[2]
    unknown = f.from_ctx(c3)
    assert not unknown.priced and unknown.cost_nusd == 0
    assert orjson.loads(orjson.dumps(unknown.to_dict()))["priced"] is False


async def test_version_skew_tolerated_and_unreadable_batch_parked(redis_standalone: str) -> None:
    cfg = config({"url": redis_standalone})
    svc = _service(cfg)
    q = svc.flusher.keys["queue"]
    rec = next(r for r in make_records(20) if r.cost_nusd).to_dict()
    newer = {**rec, "some_future_field": 1}  # a newer sidecar's record
    older = {k: v for k, v in rec.items() if k not in ("priced", "status")}  # an older one's
    await svc.redis.rpush(q, b"not json at all")
    await svc.redis.rpush(q, orjson.dumps({"id": "b1", "records": [newer]}))
    await svc.redis.rpush(q, orjson.dumps({"id": "b2", "records": [older]}))
    await svc.flusher.acquire()
    assert await svc.flusher.drain() == 3  # the unreadable one does not block the queue
    tot = await day_totals(svc.redis, daily_totals_key(cfg.redis.key_prefix, "team-a", "gw", today()))
    assert tot["requests"] == 2 and tot["cost_nusd"] == 2 * rec["cost_nusd"]
    assert await svc.redis.lrange(svc.flusher.keys["dead"], 0, -1) == [b"not json at all"]
    assert svc.metrics.spend_flushes.labels("dead_letter")._value.get() == 1
    assert await svc.redis.llen(svc.flusher.keys["processing"]) == 0

"""Spend test helpers: synthetic records with known costs, and exact expected totals."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from llmgw_sidecar.spend.records import SpendRecord


def make_records(n: int, seed: int = 1, days: tuple[float, ...] = (0.0,)) -> list[SpendRecord]:
    rnd = random.Random(seed)
    now = time.time()
    out = []
    for i in range(n):
        hit = rnd.random() < 0.2
        cost = rnd.randrange(1, 5_000_000)
        out.append(SpendRecord(
            id=uuid.uuid4().hex, ts=now - days[i % len(days)], scope=f"gw:team-a/gw|ns:ns{i % 2}",
            namespace=f"ns{i % 2}", service_account="app", pod=f"pod-{i % 3}", api_key_hash=None,
            model=("m", "m2")[i % 2], prompt_tokens=rnd.randrange(1, 500), completion_tokens=rnd.randrange(0, 500),
            cached_tokens=0, cost_nusd=0 if hit else cost, saved_nusd=cost if hit else 0,
            cache="hit-exact" if hit else "miss", status=200, estimated=False, priced=True,
        ))
    return out


def expected(records: list[SpendRecord]) -> dict[str, int]:
    return {
        "requests": len(records),
        "cost_nusd": sum(r.cost_nusd for r in records),
        "saved_nusd": sum(r.saved_nusd for r in records),
        "prompt_tokens": sum(r.prompt_tokens for r in records),
        "completion_tokens": sum(r.completion_tokens for r in records),
        "hits": sum(1 for r in records if r.cache.startswith("hit")),
    }


async def day_totals(redis: Any, key: str) -> dict[str, int]:
    raw = await redis.hgetall(key)
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()
            if not (k.decode() if isinstance(k, bytes) else k).endswith("_usd")}


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())

"""Reads the sidecars' spend aggregates from Redis for the gateway's status. Isolated on purpose: the key layout
belongs to the sidecar (llmgw_sidecar.spend.keys), and if it changes only this function has to follow.

Layout (written by the sidecars' spend flusher): `{prefix}:spend:{ns/name}:day:YYYY-MM-DD`, a hash with integer
fields requests, hits, cost_nusd, saved_nusd (nano-USD) and decimal strings cost_usd, saved_usd. Every key of one
gateway shares the hash tag {ns/name}, so on Redis Cluster one pipeline reaches them all on one node.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from llmgw_sidecar.cache import generation as gen
from llmgw_sidecar.spend import scopes
from llmgw_sidecar.spend.keys import daily_totals_key

NANO = 1_000_000_000


def _decode(h: dict[Any, Any]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in (h or {}).items()}


def _num(h: dict[str, str], key: str) -> float:
    try:
        return float(h.get(key, 0))
    except ValueError:
        return 0.0


def _usd(h: dict[str, str], field: str) -> float:
    # Integer nano-USD is exact; the decimal string is the fallback for writers that only keep it.
    nano = _num(h, f"{field}_nusd")
    return nano / NANO if nano else _num(h, f"{field}_usd")


def read_spend(client: Any, namespace: str, name: str, today: dt.date, prefix: str = "llmgw") -> dict[str, Any]:
    """status.spend for `today` (UTC) and the month so far. `client` is a sync redis-py Redis or RedisCluster."""
    days = [today.replace(day=d) for d in range(1, today.day + 1)]
    pipe = client.pipeline(transaction=False)
    for d in days:
        pipe.hgetall(daily_totals_key(prefix, namespace, name, d.isoformat()))
    hashes = [_decode(h) for h in pipe.execute()]
    today_h = hashes[-1]
    requests = int(_num(today_h, "requests"))
    hits = int(_num(today_h, "hits"))
    return {
        "day": today.isoformat(),
        "todayUsd": round(_usd(today_h, "cost"), 6),
        "todayRequests": requests,
        "todayCacheHits": hits,
        "todaySavedUsd": round(_usd(today_h, "saved"), 6),
        "todayHitRatio": round(hits / requests, 4) if requests else 0.0,
        "monthUsd": round(sum(_usd(h, "cost") for h in hashes), 6),
        "monthRequests": int(sum(_num(h, "requests") for h in hashes)),
    }


def read_top_scopes(client: Any, namespace: str, name: str, today: dt.date, prefix: str = "llmgw",
                    top: int = 5) -> list[dict[str, Any]]:
    """status.spend.topScopes: the cache scopes that saved the most this month, from the per-day breakdowns."""
    days = [today.replace(day=d).isoformat() for d in range(1, today.day + 1)]
    pipe = client.pipeline(transaction=False)
    for k in scopes.breakdown_keys(prefix, namespace, name, days):
        pipe.hgetall(k)
    rows = scopes.aggregate(pipe.execute(), f"{namespace}/{name}", top=top)
    return [{"scope": r["scope"], "hits": r["hits"], "misses": r["misses"], "savedTokens": r["saved_tokens"],
             "savedUsd": round(r["saved_usd"], 6)} for r in rows]


def read_generations(client: Any, namespace: str, name: str, generation: int, now: float,
                     prefix: str = "llmgw") -> dict[str, int]:
    """status.cache: how many sidecars report serving `generation` (reports older than two minutes do not count;
    reports older than a day are removed)."""
    key = gen.generation_key(prefix, namespace, name)
    summary, stale = gen.summarize(client.hgetall(key), generation, now)
    if stale:
        client.hdel(key, *stale)
    return summary

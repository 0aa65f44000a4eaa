"""Reads the sidecars' spend aggregates from Redis for the gateway's status. Isolated on purpose: the key layout
belongs to the sidecar (llmgw_sidecar.spend.keys), and if it changes only this function has to follow.

Layout (written by the sidecars' spend flusher): `{prefix}:spend:{ns/name}:day:YYYY-MM-DD`, a hash with integer
fields requests, hits, cost_nusd, saved_nusd (nano-USD) and decimal strings cost_usd, saved_usd. Every key of one
gateway shares the hash tag {ns/name}, so on Redis Cluster one pipeline reaches them all on one node.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

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

"""Per-tenant cache figures: hits, misses, tokens and USD saved per cache scope, from the spend flusher's per-day
breakdown hashes in Redis (`{p}:spend:{ns/name}:day:D:by`, field "<scope>\\t<model>\\t<metric>").

Kept in Redis, not in Prometheus labels: a scope can be a pod or an API key, so the set is unbounded. Served as JSON by
GET /spend/scopes and `llmgw-sidecar cache savings`, and read by the operator for status.spend.topScopes.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from .keys import breakdown_key, spend_base

NANO = 1_000_000_000
FIGURES = ("requests", "hits", "misses", "saved_tokens", "prompt_tokens", "completion_tokens", "cost_nusd",
           "saved_nusd")


def relative_scope(scope: str, gateway: str) -> str:
    """`gw:ns/name|ns:team-a` -> `ns:team-a`; the gateway's own scope -> `gateway`; `global` stays."""
    gw = f"gw:{gateway}"
    if scope == gw:
        return "gateway"
    return scope.removeprefix(gw + "|")


def scope_matches(rel: str, wanted: str | None) -> bool:
    """`ns:team-a` selects that scope and the narrower ones inside it (`ns:team-a|sa:app`)."""
    return wanted is None or rel == wanted or rel.startswith(wanted + "|")


def recent_days(today: dt.date, last: int) -> list[str]:
    return [(today - dt.timedelta(days=i)).isoformat() for i in range(last - 1, -1, -1)]


def breakdown_keys(prefix: str, ns: str, name: str, days: list[str]) -> list[str]:
    return [breakdown_key(prefix, ns, name, d) for d in days]


def aggregate(hashes: list[dict[Any, Any]], gateway: str, scope: str | None = None,
              top: int | None = None) -> list[dict[str, Any]]:
    """Sum breakdown hashes (any number of days) per scope, biggest saver first."""
    per: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIGURES, 0))
    models: dict[str, set[str]] = defaultdict(set)
    for h in hashes:
        for f, v in (h or {}).items():
            f = f.decode() if isinstance(f, bytes) else f
            try:
                sc, model, metric = f.split("\t")
            except ValueError:
                continue
            if metric not in FIGURES:
                continue
            rel = relative_scope(sc, gateway)
            if not scope_matches(rel, scope):
                continue
            per[rel][metric] += int(v)
            models[rel].add(model)
    rows: list[dict[str, Any]] = []
    for rel, f in per.items():
        looked_up = f["hits"] + f["misses"]
        rows.append({
            "scope": rel, "requests": f["requests"], "hits": f["hits"], "misses": f["misses"],
            "hit_ratio": round(f["hits"] / looked_up, 4) if looked_up else 0.0,
            "saved_tokens": f["saved_tokens"], "saved_usd": round(f["saved_nusd"] / NANO, 9),
            "cost_usd": round(f["cost_nusd"] / NANO, 9),
            "tokens": f["prompt_tokens"] + f["completion_tokens"], "models": sorted(models[rel]),
        })
    rows.sort(key=lambda r: (-r["saved_usd"], -r["hits"], r["scope"]))
    return rows[:top] if top is not None else rows


async def read_scopes(redis: Any, prefix: str, ns: str, name: str, *, days: list[str] | None = None, last: int = 30,
                      scope: str | None = None, top: int | None = None,
                      today: dt.date | None = None) -> dict[str, Any]:
    """The /spend/scopes document (async redis client). Every key shares the gateway's hash tag: one node."""
    days = days or recent_days(today or dt.datetime.now(dt.UTC).date(), last)
    pipe = redis.pipeline(transaction=False)
    for k in breakdown_keys(prefix, ns, name, days):
        pipe.hgetall(k)
    hashes = await pipe.execute()
    gateway = f"{ns}/{name}"
    rows = aggregate(hashes, gateway, scope, top)
    return {"gateway": gateway, "currency": "USD", "days": [days[0], days[-1]], "scope": scope, "scopes": rows,
            "source": f"{spend_base(prefix, ns, name)}:day:*:by"}

"""One spend record per answered request, and the aggregation of a batch into hash increments."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from ..caller_scope import all_subjects
from ..config import Config, ModelConfig
from ..context import Caller, RequestContext, Usage
from ..pricing import Price, cost_nusd, estimate_completion_tokens, estimate_prompt_tokens, price_for
from .keys import breakdown_key, daily_totals_key, scope_totals_key

METRICS = ("requests", "hits", "misses", "estimated", "unpriced", "prompt_tokens", "completion_tokens",
           "cached_tokens", "saved_tokens", "cost_nusd", "saved_nusd")


@dataclass(slots=True)
class SpendRecord:
    id: str
    ts: float  # unix seconds
    scope: str
    namespace: str
    service_account: str
    pod: str
    api_key_hash: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_nusd: int  # what the upstream call cost (0 on hits), nano-USD
    saved_nusd: int  # what a cache hit would have cost
    cache: str  # hit-exact | hit-semantic | miss | bypass
    status: int
    estimated: bool  # usage counted by us because the upstream sent none
    priced: bool  # False: no price known for the model (cost 0, counted as unpriced)

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: it deep-copies every value, a measurable cost per request
        return {f: getattr(self, f) for f in _FIELDS}

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.ts, UTC).strftime("%Y-%m-%d")


class RecordFactory:
    def __init__(self, config: Config) -> None:
        self.default_max = config.limits.default_max_tokens
        self._prices: dict[str, Price | None] = {}

    def price(self, model: ModelConfig) -> Price | None:
        if model.name not in self._prices:
            self._prices[model.name] = price_for(model)
        return self._prices[model.name]

    def from_ctx(self, ctx: RequestContext) -> SpendRecord:
        hit = ctx.cache_result.startswith("hit")
        usage = ctx.usage
        if usage is None:
            if ctx.status >= 400 or hit:
                usage = Usage()  # a failed call is not billed; a hit without stored usage saved an unknown amount
            else:
                # A success without usage: count ourselves and say so, never a silent zero.
                usage = Usage(estimate_prompt_tokens(ctx.body),
                              estimate_completion_tokens(ctx.body, ctx.endpoint, self.default_max), 0, True)
        price = self.price(ctx.model)
        amount = cost_nusd(price, usage) if price else 0
        c: Caller = ctx.caller
        return SpendRecord(
            id=uuid.uuid4().hex, ts=ctx.wall_started, scope=ctx.scope, namespace=c.namespace,
            service_account=c.service_account, pod=c.pod, api_key_hash=c.api_key_hash, model=ctx.model.name,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_prompt_tokens, cost_nusd=0 if hit else amount, saved_nusd=amount if hit else 0,
            cache=ctx.cache_result, status=ctx.status, estimated=usage.estimated, priced=price is not None,
        )


_FIELDS = tuple(f.name for f in fields(SpendRecord))


_DEFAULTS: dict[str, Any] = {"api_key_hash": None, "cached_tokens": 0, "saved_nusd": 0, "status": 200,
                             "estimated": False, "priced": True}


def record_from_dict(d: dict[str, Any]) -> SpendRecord:
    """Tolerant of version skew during a rolling upgrade: unknown fields are ignored, newer optional ones defaulted.
    Raises KeyError/TypeError only when a required field is missing (the batch then goes to the dead-letter list)."""
    return SpendRecord(**{f: d[f] if f in d else _DEFAULTS[f] for f in _FIELDS})


def _values(r: SpendRecord) -> dict[str, int]:
    hit = r.cache.startswith("hit")
    return {
        # misses: looked up and not found (bypass and refusals are neither); saved_tokens: what hits did not send
        "requests": 1, "hits": int(hit), "misses": int(r.cache == "miss"), "estimated": int(r.estimated),
        "saved_tokens": r.prompt_tokens + r.completion_tokens if hit else 0,
        "unpriced": int(not r.priced), "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
        "cached_tokens": r.cached_tokens, "cost_nusd": r.cost_nusd, "saved_nusd": r.saved_nusd,
    }


def aggregate(records: list[SpendRecord], prefix: str, ns: str, name: str) -> tuple[dict[str, dict[str, int]], set[str]]:
    """{hash key: {field: delta}} for a batch, and the days it touches. Display keys are the daily totals."""
    incr: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    days: set[str] = set()
    for r in records:
        day = r.day
        days.add(day)
        vals = _values(r)
        tot = incr[daily_totals_key(prefix, ns, name, day)]
        by = incr[breakdown_key(prefix, ns, name, day)]
        for k, v in vals.items():
            if v:
                tot[k] += v
                by[f"{r.scope}\t{r.model}\t{k}"] += v
        if r.cost_nusd:
            caller = Caller(r.namespace, r.pod, r.service_account, r.api_key_hash)
            for subject in all_subjects(caller):
                incr[scope_totals_key(prefix, ns, name, "day", day)][subject] += r.cost_nusd
                incr[scope_totals_key(prefix, ns, name, "month", day[:7])][subject] += r.cost_nusd
    return {k: dict(v) for k, v in incr.items()}, days

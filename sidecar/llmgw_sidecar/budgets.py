"""Budgets: max spend per caller scope per UTC day or month. The spent amount is read from the durable totals the spend
flusher writes (`spend.keys.scope_totals_key`) inside the same atomic Lua decision as the rate limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .caller_scope import subject as caller_subject
from .config import Budget
from .context import Caller
from .pricing import NANO
from .spend.keys import scope_totals_key


def period_id(period: str, now: datetime) -> str:
    return now.strftime("%Y-%m-%d") if period == "day" else now.strftime("%Y-%m")


def period_end(period: str, now: datetime) -> datetime:
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return start + timedelta(days=1)
    start = start.replace(day=1)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    name: str  # metric label, e.g. "budget:namespace:day"
    key: str  # totals hash
    field: str  # caller subject
    max_nusd: int
    retry_after_s: int  # until the period ends


def budget_checks(budgets: list[Budget], caller: Caller, prefix: str, ns: str, name: str,
                  now: datetime | None = None) -> list[BudgetCheck]:
    now = now or datetime.now(UTC)
    out = []
    for b in budgets:
        subject = caller_subject(b.scope, caller)
        out.append(BudgetCheck(
            name=f"budget:{b.scope.value}:{b.period}",
            key=scope_totals_key(prefix, ns, name, b.period, period_id(b.period, now)),
            field=subject,
            max_nusd=round(b.max_usd * NANO),
            retry_after_s=max(1, int((period_end(b.period, now) - now).total_seconds()) + 1),
        ))
    return out

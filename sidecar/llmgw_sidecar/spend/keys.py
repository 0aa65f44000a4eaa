"""Redis key layout of spend (the caller subjects in it come from caller_scope.py). Every key
of one gateway carries the hash tag `{ns/name}`, so one Lua script can touch limits, budgets and spend totals
atomically, also on Redis Cluster (they all live in one slot).

    {p}:spend:{ns/name}:day:YYYY-MM-DD          HASH gateway daily totals (requests, cost_usd, saved_usd, tokens, ...)
    {p}:spend:{ns/name}:day:YYYY-MM-DD:by       HASH "<scope>\\t<model>\\t<metric>" -> integer (breakdown)
    {p}:spend:{ns/name}:day:YYYY-MM-DD:scope    HASH caller scope ("ns:a", "sa:a/b", ...) -> cost_nusd (budgets)
    {p}:spend:{ns/name}:month:YYYY-MM:scope     HASH as above, per month
    {p}:spend:{ns/name}:days                    SET of days that have totals
    {p}:spend:{ns/name}:queue / :processing     LIST of handed-off batches / batches a flusher is committing
    {p}:spend:{ns/name}:lock / :fence / :committed   flusher lock, fencing counter, ZSET of committed batch ids

Rate-limit keys live next to the rate limiter (ratelimit_keys.py); they share the hash tag.
"""

from __future__ import annotations


def gateway_tag(ns: str, name: str) -> str:
    return "{" + f"{ns}/{name}" + "}"


def spend_base(prefix: str, ns: str, name: str) -> str:
    return f"{prefix}:spend:{gateway_tag(ns, name)}"


def daily_totals_key(prefix: str, ns: str, name: str, day: str) -> str:
    """The gateway's totals of one UTC day (YYYY-MM-DD): a hash the operator reads for its status.
    Fields: requests, hits, estimated, prompt_tokens, completion_tokens, cached_tokens, cost_nusd, saved_nusd
    (integers, nano-USD) and cost_usd, saved_usd (decimal strings for people)."""
    return f"{spend_base(prefix, ns, name)}:day:{day}"


def breakdown_key(prefix: str, ns: str, name: str, day: str) -> str:
    return daily_totals_key(prefix, ns, name, day) + ":by"


def scope_totals_key(prefix: str, ns: str, name: str, period: str, period_id: str) -> str:
    """Cost per caller scope for one day ("day", "YYYY-MM-DD") or month ("month", "YYYY-MM")."""
    return f"{spend_base(prefix, ns, name)}:{period}:{period_id}:scope"

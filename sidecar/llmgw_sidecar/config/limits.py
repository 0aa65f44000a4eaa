"""The `limits`, `budgets` and `spend` sections: per-caller limits, the decision deadline and outage settings,
budgets and spend recording."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Scope, StrictModel


class ScopeLimit(StrictModel):
    scope: Scope = Field(description="Which callers share this limit (namespace, service_account, pod, api_key).")
    rpm: int | None = Field(None, ge=1, description="Requests per minute per caller of this scope.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute per caller of this scope.")
    max_parallel: int | None = Field(None, ge=1, description="Requests in flight per caller of this scope.")

    @model_validator(mode="after")
    def _some_limit(self) -> ScopeLimit:
        if self.rpm is None and self.tpm is None and self.max_parallel is None:
            raise ValueError("set at least one of rpm, tpm, max_parallel")
        return self


class LimitsConfig(StrictModel):
    scopes: list[ScopeLimit] = Field(default_factory=list, description="Per-caller limits.")
    fail_open: bool = Field(True, description="When Redis is unreachable: admit with a local limiter that gives this "
                            "process its share of each limit (limit / replicas), or answer 503.")
    default_max_tokens: int = Field(1024, ge=1, description="Completion estimate when a request sets no max_tokens.")
    window_s: float = Field(60.0, ge=0.1, le=3600, description="Length of the sliding window that rpm/tpm count in "
                            "(60 = per minute; shorter only for tests and demos).")
    parallel_lease_s: float = Field(660.0, gt=0, description="A max_parallel slot held by a crashed replica frees "
                                    "itself after this long (keep above the longest request).")
    decision_timeout_ms: int = Field(
        250, ge=1, le=60_000, description="Deadline of one limit decision in Redis (separate from redis.op_timeout_ms, the "
        "cache deadline). A slower decision answers that request 503 rate_limiter_timeout; it never falls back to the "
        "local limiter.")
    unreachable_after_s: float = Field(
        2.0, gt=0, le=3600, description="Decisions that keep timing out for this long (no reply at all) count as Redis "
        "unreachable, like a refused connection: the process then decides locally with its share.")
    heartbeat_interval_s: float = Field(
        2.0, ge=0.1, le=60, description="How often each sidecar announces itself in Redis. The replica count (those "
        "seen in the last 3 intervals) sizes each process's share of a limit while Redis is unreachable.")


class Budget(StrictModel):
    scope: Scope = Field(description="Which callers share this budget.")
    period: Literal["day", "month"] = Field("day", description="Budget window (UTC).")
    max_usd: float = Field(gt=0, description="Spend after which requests get 429 budget_exceeded.")


class SpendConfig(StrictModel):
    enabled: bool = Field(True, description="Record the cost of every call.")
    flush_interval_s: float = Field(1.0, gt=0, description="How often buffered records are handed to Redis.")
    batch_size: int = Field(500, ge=1, description="Records per hand-off and per flush batch.")
    max_buffered_records: int = Field(100_000, ge=100, description="Memory bound while Redis is down.")
    database_url: str | None = Field(None, description="Optional PostgreSQL sink (postgresql://...). The Redis "
                                     "totals (and budgets) never wait for it.")
    sink_backlog_batches: int = Field(10_000, ge=1, description="Committed batches kept in Redis for the PostgreSQL "
                                      "sink while it is down; beyond this the oldest is dropped (and counted).")
    wait_replicas: int = Field(0, ge=0, le=5, description="Replicas that must acknowledge a hand-off before records "
                               "leave memory (sentinel: 1 makes a failover lossless).")
    lock_ttl_s: float = Field(10.0, ge=0.5, le=300, description="Flusher lock lifetime; renewed every third of it.")

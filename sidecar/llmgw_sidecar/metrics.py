"""Every Prometheus metric of the sidecar is defined here and nowhere else (documented in docs/metrics.md).

One `Metrics` object per app, on its own registry, so tests and several apps in one process never share counters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# Latency buckets from 0.5 ms (an exact hit) to a minute (a long generation).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
DISTANCE_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class TopScopes(Collector):
    """Per cache scope savings with bounded cardinality: the `top_n` scopes that saved the most in this process get
    their own series, everything else is summed into scope="other" (so sum() over scopes is the process total). The
    full per-scope figures live in Redis (GET /spend/scopes); this is the dashboard's "top savers" view."""

    MAX_TRACKED = 10_000  # scopes remembered in memory; beyond it new scopes go straight to "other"

    def __init__(self, top_n: int = 10) -> None:
        self.top_n = top_n
        self._lock = threading.Lock()
        self._saved: dict[str, float] = {}
        self._hits: dict[str, int] = {}
        self._other_saved = 0.0
        self._other_hits = 0

    def add(self, scope: str, saved_usd: float) -> None:
        with self._lock:
            if scope not in self._saved and len(self._saved) >= self.MAX_TRACKED:
                self._other_saved += saved_usd
                self._other_hits += 1
                return
            self._saved[scope] = self._saved.get(scope, 0.0) + saved_usd
            self._hits[scope] = self._hits.get(scope, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        saved = CounterMetricFamily("llmgw_cache_scope_saved_usd", "USD saved by cache hits for the top "
                                    "metrics.top_scopes cache scopes of this process; the rest as scope=\"other\".",
                                    labels=["scope"])
        hits = CounterMetricFamily("llmgw_cache_scope_hits", "Cache hits of the same top cache scopes (and "
                                   "scope=\"other\").", labels=["scope"])
        with self._lock:
            ranked = sorted(self._saved, key=lambda s: (-self._saved[s], s))
            top, rest = ranked[:self.top_n], ranked[self.top_n:]
            for s in top:
                saved.add_metric([s], self._saved[s])
                hits.add_metric([s], self._hits[s])
            saved.add_metric(["other"], self._other_saved + sum(self._saved[s] for s in rest))
            hits.add_metric(["other"], self._other_hits + sum(self._hits[s] for s in rest))
        yield saved
        yield hits


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, top_scopes: int = 10) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry

        # --- requests (core) ---
        self.requests = Counter(
            "llmgw_requests", "Requests answered, by endpoint, model, HTTP status and cache result.",
            ["endpoint", "model", "status", "cache"], registry=r,
        )
        self.request_latency = Histogram(
            "llmgw_request_duration_seconds", "Time from request to the last byte of the answer.",
            ["endpoint", "cache"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_latency = Histogram(
            "llmgw_upstream_duration_seconds", "Time of an upstream call until its last byte (retries included).",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "llmgw_upstream_errors", "Failed upstream attempts, by model and kind (status code, timeout, connect, "
            "connect_timeout, read, error_body: an error body not read within its deadline).",
            ["model", "kind"], registry=r,
        )
        self.upstream_retries = Counter(
            "llmgw_upstream_retries", "Upstream attempts that were retried.", ["model"], registry=r,
        )
        self.tokens = Counter(
            "llmgw_tokens", "Tokens processed, by model and kind (prompt, completion).", ["model", "kind"], registry=r,
        )
        self.tokens_saved = Counter(
            "llmgw_cache_tokens_saved", "Tokens not sent upstream thanks to cache hits, by model and kind.",
            ["model", "kind"], registry=r,
        )

        # --- exact cache (core) ---
        self.cache_lookups = Counter(
            "llmgw_cache_lookups", "Cache lookups by cache kind (exact, semantic) and result (hit, miss, error, ...).",
            ["cache", "result"], registry=r,
        )
        self.cache_stores = Counter(
            "llmgw_cache_stores", "Cache writes by cache kind and result (stored, too_large, error, skipped).",
            ["cache", "result"], registry=r,
        )

        # --- redis health (core) ---
        self.redis_errors = Counter(
            "llmgw_redis_errors", "Redis operations that failed or timed out (the request went on), by operation.",
            ["op"], registry=r,
        )
        self.redis_command_errors = Counter(
            "llmgw_redis_command_errors", "Redis refused a command because of its values (e.g. an out-of-range TTL); "
            "not a Redis failure: the breaker ignores these. By operation.", ["op"], registry=r,
        )
        self.redis_fail_open = Counter(
            "llmgw_redis_fail_open", "Operations skipped because the circuit breaker was open, by operation.",
            ["op"], registry=r,
        )
        self.redis_capability_ok = Gauge(
            "llmgw_redis_capability_ok", "1 when Redis passed the capability check (version >= 7; search module when "
            "the semantic cache is on), 0 when the cache is degraded (reason in /readyz and the log).", registry=r,
        )
        self.redis_auth = Counter(
            "llmgw_redis_auth", "IAM token events (redis.iam): refresh (a new token, result ok or error) and reauth "
            "(a live connection authenticated again with the new token).", ["event", "result"], registry=r,
        )
        self.circuit_state = Gauge(
            "llmgw_redis_circuit_open", "1 while the Redis circuit breaker is open (Redis treated as down).", registry=r,
        )
        self.config_reloads = Counter(
            "llmgw_config_reloads", "Configuration file reloads by result (ok, invalid).", ["result"], registry=r,
        )

        # --- semantic cache (issue: semantic cache) ---
        self.semantic_lookups = Counter(
            "llmgw_semantic_lookups", "Semantic lookups by result (hit, miss, guard_rejected, ineligible, error).",
            ["result"], registry=r,
        )
        self.semantic_guard_rejections = Counter(
            "llmgw_semantic_guard_rejections", "Semantic candidates rejected, by guard.", ["guard"], registry=r,
        )
        self.semantic_distance = Histogram(
            "llmgw_semantic_best_distance", "Cosine distance of the best semantic candidate.",
            buckets=DISTANCE_BUCKETS, registry=r,
        )
        self.embedding_latency = Histogram(
            "llmgw_embedding_duration_seconds", "Time to embed one text (queueing included), by provider.",
            ["provider"], buckets=FAST_BUCKETS, registry=r,
        )
        self.embedding_batch_size = Histogram(
            "llmgw_embedding_batch_size", "Texts per embedding batch.", buckets=BATCH_BUCKETS, registry=r,
        )

        # --- rate limits, budgets, spend (issue: limits and spend) ---
        self.ratelimit_decisions = Counter(
            "llmgw_ratelimit_decisions", "Limit and budget decisions by limit (e.g. model:rpm, namespace:tpm, "
            "budget:namespace:day, redis) and result (admitted, rejected, fail_open, local_rejected, fail_closed, "
            "timeout).", ["limit", "result"], registry=r,
        )
        self.ratelimit_replicas = Gauge(
            "llmgw_ratelimit_replicas", "Sidecars of this gateway seen by the latest heartbeat (kept while Redis is "
            "unreachable): each process's local share of a limit is limit / replicas.", registry=r,
        )
        self.ratelimit_remaining = Gauge(
            "llmgw_ratelimit_remaining", "Remaining requests/tokens of a limit after the latest decision.",
            ["limit"], registry=r,
        )
        self.budget_remaining = Gauge(
            "llmgw_budget_remaining_usd", "Remaining USD of a budget after the latest decision.", ["budget"], registry=r,
        )
        self.budget_used = Gauge(
            "llmgw_budget_used_ratio", "Share of a budget used (0-1+) by the caller of the latest decision.",
            ["budget"], registry=r,
        )
        self.spend = Counter(
            "llmgw_spend_usd", "USD spent upstream, by model (estimated costs included). Per scope: GET /spend.",
            ["model"], registry=r,
        )
        self.spend_saved = Counter(
            "llmgw_spend_saved_usd", "USD cache hits saved (what they would have cost), by model. Per scope: "
            "llmgw_cache_scope_saved_usd (top N) and GET /spend/scopes.",
            ["model"], registry=r,
        )
        self.spend_records = Counter(
            "llmgw_spend_records", "Spend records by event: buffered, handed_off, committed, duplicate, dropped, "
            "estimated (usage counted by us), unpriced (model has no price), sink_dropped (a batch the full PostgreSQL "
            "outbox gave up; counts batches).", ["event"], registry=r,
        )
        self.spend_buffer_depth = Gauge(
            "llmgw_spend_buffer_depth", "Spend records waiting, by stage: memory (this process), redis (queue), "
            "processing (taken by a flusher, not yet committed), sink (committed, waiting for PostgreSQL); redis stages in "
            "batches.", ["stage"], registry=r,
        )
        self.spend_handoffs = Counter(
            "llmgw_spend_handoffs", "Batches handed from memory to Redis, by result (ok, error).", ["result"], registry=r,
        )
        self.spend_flushes = Counter(
            "llmgw_spend_flushes",
            "Batches committed to the durable totals, by result (ok, duplicate, error, fenced, dead_letter), and "
            "handed to the PostgreSQL sink (sink_ok, sink_error).",
            ["result"], registry=r,
        )
        self.spend_flush_latency = Histogram(
            "llmgw_spend_flush_duration_seconds", "Time to commit one batch (move, sinks, commit, acknowledge).",
            buckets=FAST_BUCKETS, registry=r,
        )
        self.spend_handoff_age = Gauge(
            "llmgw_spend_handoff_age_seconds", "Age of the oldest spend record of this process not yet handed to "
            "Redis (0 when none waits).", registry=r,
        )
        self.spend_flush_interval = Gauge(
            "llmgw_spend_flush_interval_seconds", "spend.flush_interval_s: how often records are handed to Redis "
            "(alerts compare the hand-off age with it).", registry=r,
        )
        self.spend_flusher_leader = Gauge(
            "llmgw_spend_flusher_leader", "1 while this process holds the flusher lock.", registry=r,
        )

        # --- gateway mode: caller identity (issue: shared gateway) ---
        self.auth_decisions = Counter(
            "llmgw_auth_decisions", "Gateway mode: caller identification by method (token_review, virtual_key, "
            "anonymous, none) and result (ok, cached, denied, forbidden, error).", ["method", "result"], registry=r,
        )
        self.auth_review_latency = Histogram(
            "llmgw_auth_review_duration_seconds", "Time of one TokenReview (or namespace read) call to the Kubernetes "
            "API (cache hits make none).", buckets=LATENCY_BUCKETS, registry=r,
        )

        # --- operations (issue: operate it) ---
        self.cache_invalidations = Counter(
            "llmgw_cache_invalidations", "Cache entries this process deleted (admin API, LiteLLM's /cache routes, the "
            "generation sweep), by cache kind and selector (key, scope, model, age, generation, all and their "
            "combinations). The CLI's deletions are logged, not counted: a CLI process is never scraped.",
            ["cache", "by"], registry=r,
        )
        self.top_scopes = TopScopes(top_scopes)
        r.register(self.top_scopes)
    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, resolved once: the per-request path counts without re-hashing label values."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 10_000:  # label values come from config (models), but bound it anyway
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child

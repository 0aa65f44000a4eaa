"""Distributed rate limits and budgets: atomic Lua decisions in Redis (lua/admit.lua), settled with the real usage
afterwards (lua/settle.lua).

Algorithm: sliding-window log on Redis TIME. Every admitted request is a sorted-set member scored by the Redis clock, so
"at most `limit` requests (tokens) in any window of `window_s` seconds" holds exactly across all replicas. Tokens are
reserved up front (prompt estimate + max_tokens or `limits.default_max_tokens`) and the reservation is replaced by the
real usage when the answer is complete.

Two stages per request: `admit` (scope limits and budgets: every request, cache hits included) before the cache
lookup, `admit_model` (model limits: they protect the upstream) only on the way upstream, so a cache hit is never
refused by a model limit. A request the cache cannot answer decides both in one call (`admit(ctx, with_model=True)`).

A decision has its own deadline (`limits.decision_timeout_ms`). A slow decision refuses that one request (503, its
possible reservation is refunded); only an unreachable Redis (refused or broken connection, or no reply at all for
`limits.unreachable_after_s`) switches to the local limiter, which admits this process's share (ratelimit_local.py).
Whether Redis is unreachable is the runtime's one Redis health's to say (redis_guard.FallbackGate over its breaker):
what the caches and spend see counts too, and any reply ends the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

from .budgets import BudgetCheck, budget_checks
from .config import Budget, Config, Scope
from .context import RequestContext
from .errors import ApiError
from .metrics import Metrics
from .pricing import NANO, estimate_completion_tokens, estimate_prompt_tokens
from .ratelimit_keys import LimitSpec, model_specs, replicas_key, rl_base, scope_specs, with_tokens
from .ratelimit_local import LocalLimiter
from .ratelimit_redis import Decision, RedisLimiter
from .redis_guard import RateLimitedLog, RedisHealth
from .redis_topology import AnyRedis
from .replicas import ReplicaRegistry

__all__ = ["LimitSpec", "RedisGovernor", "Reservation", "build_governor", "estimate_completion_tokens",
           "estimate_prompt_tokens", "format_reset"]
log = logging.getLogger("llmgw.ratelimit")
_MAX_CACHED = 10_000  # per-caller caches are bounded: pods come and go


@dataclass(slots=True)
class Reservation:
    member: str
    estimate: int
    parts: list[tuple[list[LimitSpec], bool]] = field(default_factory=list)  # (specs, decided locally) per stage
    shown: list[tuple[LimitSpec, tuple[int, float]]] = field(default_factory=list)  # (spec, (used, reset ms))
    at_ms: int = 0  # Redis TIME of the first admission (0 = decided locally): one clock for every replica
    model: bool = False  # model limits decided (or none apply)


def format_reset(ms: float) -> str:
    """OpenAI's style: "120ms", "1s", "6m0s"."""
    if ms < 1000:
        return f"{max(0, int(ms))}ms"
    s = ms / 1000
    if s < 59.5:
        return f"{s:.3g}s"
    m, sec = divmod(round(s), 60)
    return f"{m}m{sec}s"


class _Slow(Exception):
    """The decision missed its deadline while Redis may still be there."""


class RedisGovernor:
    def __init__(self, config: Config, redis: AnyRedis, metrics: Metrics, health: RedisHealth | None = None) -> None:
        self.cfg = config
        self.limits = lim = config.limits
        self.redis = redis
        self.metrics = metrics
        self.window_ms = int(lim.window_s * 1000)
        self.lease_ms = int(lim.parallel_lease_s * 1000)
        g = config.gateway
        self.base = rl_base(config.redis.key_prefix, g.namespace, g.name)
        self.timeout_s = lim.decision_timeout_ms / 1000
        self.local = LocalLimiter(lim.window_s, lim.parallel_lease_s)
        self.replicas = ReplicaRegistry(redis, replicas_key(config.redis.key_prefix, g.namespace, g.name),
                                        lim.heartbeat_interval_s, metrics, window_ms=self.window_ms,
                                        usage_keys=self.local.hot_keys, on_usage=self.local.refresh)
        # The runtime's one Redis health (a private one when the governor is used alone, as in tests). The gate is
        # the limits' policy over it: the local limiter only while Redis is unreachable (one refused connection is
        # enough; a slow one never is); after redis.circuit_breaker.reset_after_s one decision probes Redis again.
        self.health = health or RedisHealth(config.redis.op_timeout_ms / 1000, config.redis.circuit_breaker, metrics)
        self.gate = self.health.fallback_gate(lim.unreachable_after_s)
        self._model_specs = {m.name: model_specs(self.base, m) for m in config.models}
        self._scope_cache: dict[Any, list[LimitSpec]] = {}
        self._budget_cache: dict[Any, tuple[float, list[BudgetCheck]]] = {}
        self._budget_seen: dict[tuple[str, str], int] = {}  # (key, field) -> nano-USD left at the latest decision
        self._children: dict[tuple[str, ...], Any] = {}
        self.warn = RateLimitedLog(log)
        self.rl = RedisLimiter(redis, self.window_ms, self.lease_ms, self.timeout_s, metrics,
                               cold_s=config.redis.connect_timeout_ms / 1000 * 2)

    def start(self) -> None:
        """Background heartbeat (inside the running loop; idempotent)."""
        self.replicas.start()

    # --- which limits apply ---
    def _scope_specs(self, ctx: RequestContext) -> list[LimitSpec]:
        # Key strings are built once per caller, not per request.
        specs = self._scope_cache.get(ctx.caller)
        if specs is None:
            if len(self._scope_cache) > _MAX_CACHED:
                self._scope_cache.clear()
            specs = self._scope_cache[ctx.caller] = scope_specs(self.base, self.limits, ctx.caller)
        return specs

    def _budgets(self, ctx: RequestContext) -> list[BudgetCheck]:
        # Keys change at most at midnight UTC: recompute once a second per caller, not per request.
        now = time.monotonic()
        hit = self._budget_cache.get(ctx.caller)
        if hit is not None and hit[0] > now:
            return hit[1]
        if len(self._budget_cache) > _MAX_CACHED:
            self._budget_cache.clear()
        g = self.cfg.gateway
        budgets = self.cfg.budgets
        kp = ctx.caller.policy
        if kp is not None and kp.budget_usd is not None:
            budgets = [*budgets, Budget(scope=Scope.api_key, period=kp.budget_period, max_usd=kp.budget_usd)]
        checks = budget_checks(budgets, ctx.caller, self.cfg.redis.key_prefix, g.namespace, g.name)
        self._budget_cache[ctx.caller] = (now + 1.0, checks)
        return checks

    def _estimate(self, ctx: RequestContext) -> int:
        return estimate_prompt_tokens(ctx.body) + estimate_completion_tokens(
            ctx.body, ctx.endpoint, self.limits.default_max_tokens)

    def _count(self, limit: str, result: str) -> None:
        child = self._children.get(("d", limit, result))
        if child is None:
            child = self._children[("d", limit, result)] = self.metrics.ratelimit_decisions.labels(limit, result)
        child.inc()

    def _remaining(self, limit: str, value: float) -> None:
        child = self._children.get(("r", limit))
        if child is None:
            child = self._children[("r", limit)] = self.metrics.ratelimit_remaining.labels(limit)
        child.set(value)

    # --- admit ---
    async def admit(self, ctx: RequestContext, *, with_model: bool = True) -> None:
        """Scope limits and budgets (every request). `with_model`: decide the model limits in the same call, for a
        request the cache cannot answer; otherwise call `admit_model` on the way upstream."""
        specs = self._scope_specs(ctx)
        mspecs = self._model_specs[ctx.model.name] if with_model else []
        budgets = self._budgets(ctx) if self.cfg.budgets or ctx.caller.policy is not None else []
        if not specs and not mspecs and not budgets:
            return  # nothing to decide before the cache (the cheap path of a hit with model limits only)
        res = Reservation(uuid.uuid4().hex, self._estimate(ctx))
        await self._reserve(ctx, res, with_tokens([*specs, *mspecs], res.estimate), budgets)
        res.model = with_model
        ctx.state["ratelimit"] = res

    async def admit_model(self, ctx: RequestContext) -> None:
        """Model limits, on the way upstream (after a cache miss). A no-op when they were decided already."""
        res: Reservation | None = ctx.state.get("ratelimit")
        mspecs = self._model_specs[ctx.model.name]
        if (res is not None and res.model) or not mspecs:
            return
        if res is None:
            res = Reservation(uuid.uuid4().hex, self._estimate(ctx))
        try:
            await self._reserve(ctx, res, with_tokens(mspecs, res.estimate), [])
        except ApiError:
            # Refused (or undecided) on the way upstream: the request never ran, so it takes nothing from its scopes.
            ctx.state.pop("ratelimit", None)
            self._release(res)
            raise
        res.model = True
        ctx.state["ratelimit"] = res

    async def _reserve(self, ctx: RequestContext, res: Reservation, specs: list[LimitSpec],
                       budgets: list[BudgetCheck]) -> None:
        self.replicas.start()
        d, local = await self._decide(specs, budgets, res.member)
        shown = [*res.shown, *zip(specs, d.used, strict=True)]
        self._headers(ctx, shown, budgets, d)
        if d.blocked:
            self._reject(ctx, specs, budgets, d)
        for s in specs:
            self._count(s.name, "admitted")
        res.parts.append((specs, local))
        res.shown = shown
        res.at_ms = res.at_ms or d.at_ms

    async def _decide(self, specs: list[LimitSpec], budgets: list[BudgetCheck], member: str) -> tuple[Decision, bool]:
        """(decision, made locally). Raises ApiError 503 when the decision was too slow (or Redis is unreachable and
        limits.fail_open is false)."""
        if self.gate.use_redis():
            try:
                d = await self._redis_admit(specs, budgets, member)
            except _Slow:
                self._count("redis", "timeout")  # what the decision may have taken is given back (ratelimit_redis)
                raise ApiError(503, f"The rate limit decision took longer than {self.limits.decision_timeout_ms} ms "
                               "(Redis is slow); retry.", code="rate_limiter_timeout",
                               headers={"Retry-After": "1"}) from None
            if d is not None:
                self.local.observe(specs, d.used, member, not d.blocked)
                return d, False
        if not self.limits.fail_open:
            self._count("redis", "fail_closed")
            raise ApiError(503, "Rate limiter unavailable (Redis is unreachable) and limits.fail_open is false.",
                           code="rate_limiter_unavailable", headers={"Retry-After": "1"})
        blocked, retry, used = self.local.admit(specs, member, self.replicas.count)
        d = Decision(blocked, retry, used)
        # Budgets cannot be read without Redis; one that was spent at the latest decision stays spent.
        for j, b in enumerate(budgets, len(specs) + 1):
            left = self._budget_seen.get((b.key, b.field))
            d.budget_left.append(b.max_nusd if left is None else left)
            if not d.blocked and left is not None and left <= 0:
                d.blocked = j
        if d.blocked and budgets and d.blocked > len(specs):
            self.local.settle(specs, member, 0, refund=True)
        self._count("redis", "local_rejected" if d.blocked else "fail_open")
        return d, True

    async def _redis_admit(self, specs: list[LimitSpec], budgets: list[BudgetCheck], member: str) -> Decision | None:
        """The decision from Redis; None when Redis is unreachable; raises _Slow when it missed its deadline."""
        keys: list[str] = [k for s in specs for k in s.keys] + [b.key for b in budgets]
        args: list[Any] = [member, len(specs), len(budgets)]
        for s in specs:
            args += [s.kind, s.limit, s.cost]
        for b in budgets:
            args += [b.field, b.max_nusd]
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self.rl.deadline_s):
                d = await self.rl.decide(keys, args, len(specs), len(budgets))
        except (TimeoutError, RedisTimeoutError) as e:
            self.metrics.redis_errors.labels("ratelimit").inc()
            # Slow is not down: only when no reply has come for unreachable_after_s is Redis treated as gone.
            silent = self.gate.timed_out(t0)
            if silent is None:
                self.warn.warning("slow", f"rate limit decision missed its {self.limits.decision_timeout_ms} ms "
                                  f"deadline: {type(e).__name__}")
                raise _Slow from None
            self._unreachable(f"no reply for {silent:.1f}s")
            return None
        except Exception as e:  # noqa: BLE001 - refused/broken connection, failover, read-only, ...: unreachable
            self.metrics.redis_errors.labels("ratelimit").inc()
            self.health.breaker.failure(e)
            self.health.breaker.mark_down()  # whatever it was, this decision cannot be made in Redis
            self._unreachable(f"{type(e).__name__}: {e}")
            return None
        self.health.breaker.success()  # a reply: not slow, not down (for every user of the health)
        if budgets:
            if len(self._budget_seen) > _MAX_CACHED:
                self._budget_seen.clear()
            for b, v in zip(budgets, d.budget_left, strict=True):
                self._budget_seen[(b.key, b.field)] = v
        return d

    def _unreachable(self, why: str) -> None:
        self.warn.warning("down", f"Redis unreachable for rate limits ({why}): deciding locally with this process's "
                          f"share (replicas: {self.replicas.count})")

    def _headers(self, ctx: RequestContext, shown: list[tuple[LimitSpec, tuple[int, float]]],
                 budgets: list[BudgetCheck], d: Decision) -> None:
        """The most restrictive of the limits that decided this request, per kind (a cache hit: scope limits only)."""
        for kind, word in (("r", "requests"), ("t", "tokens")):
            best: tuple[int, int, float] | None = None  # (remaining, limit, reset_ms)
            for s, (used, reset) in shown:
                if s.kind != kind:
                    continue
                rem = max(0, s.limit - used)
                self._remaining(s.name, rem)
                if best is None or rem < best[0]:
                    best = (rem, s.limit, reset)
            if best is not None:
                ctx.headers[f"x-ratelimit-limit-{word}"] = str(best[1])
                ctx.headers[f"x-ratelimit-remaining-{word}"] = str(best[0])
                ctx.headers[f"x-ratelimit-reset-{word}"] = format_reset(best[2])
        if budgets and d.budget_left:
            for b, left in zip(budgets, d.budget_left, strict=True):
                self.metrics.budget_remaining.labels(b.name).set(max(0, left) / NANO)
                self.metrics.budget_used.labels(b.name).set(1 - left / b.max_nusd if b.max_nusd else 0.0)
            ctx.headers["x-llmgw-budget-remaining"] = f"{max(0, min(d.budget_left)) / NANO:.6f}"

    def _reject(self, ctx: RequestContext, specs: list[LimitSpec], budgets: list[BudgetCheck], d: Decision) -> None:
        ctx.state["governor_rejected"] = True  # nothing was spent: the spend recorder skips this request
        n = len(specs)
        if d.blocked > n:
            b = budgets[d.blocked - n - 1]
            self._count(b.name, "rejected")
            ctx.headers["Retry-After"] = str(b.retry_after_s)
            raise ApiError(429, f"Budget exceeded: {b.name} for {b.field} is spent ({b.max_nusd / NANO:.2f} USD).",
                           code="budget_exceeded", headers=dict(ctx.headers))
        s = specs[d.blocked - 1]
        self._count(s.name, "rejected")
        ctx.headers["Retry-After"] = str(max(1, math.ceil(d.retry_s)))
        what = {"r": "requests", "t": "tokens", "p": "parallel requests"}[s.kind]
        raise ApiError(429, f"Rate limit reached for {s.name} ({s.limit} {what}"
                       f"{'' if s.kind == 'p' else f' per {self.limits.window_s:g}s'}). Retry after "
                       f"{ctx.headers['Retry-After']}s.", code="rate_limit_exceeded", headers=dict(ctx.headers))

    # --- settle ---
    async def settle(self, ctx: RequestContext) -> None:
        res: Reservation | None = ctx.state.pop("ratelimit", None)
        if res is None:
            return
        hit = ctx.cache_result.startswith("hit")
        if hit or (ctx.usage is None and ctx.status >= 400):
            tokens = 0  # nothing reached (or was billed by) the upstream
        elif ctx.usage is not None:
            tokens = ctx.usage.total_tokens
        else:
            tokens = res.estimate  # a success without usage: keep the estimate
        for specs, local in res.parts:
            # A hit never reaches the upstream: model limits decided before the lookup give their request back.
            if local:
                self.local.settle([s for s in specs if not (hit and s.upstream)], res.member, tokens, refund=False)
                self.local.settle([s for s in specs if hit and s.upstream], res.member, 0, refund=True)
                continue
            self.local.release(specs, res.member)
            if not any(s.kind != "r" or (hit and s.upstream) for s in specs):
                continue  # only request counts that stay counted: nothing to change in Redis
            args: list[Any] = [res.member, len(specs)]
            for s in specs:
                action = tokens if s.kind == "t" else (1 if s.kind == "r" and hit and s.upstream else 0)
                args += [s.kind, action, s.cost]
            self.rl.queue_settle([k for s in specs for k in s.keys], args)

    def _release(self, res: Reservation) -> None:
        """Give back everything a reservation took (the request was refused before it ran)."""
        for specs, local in res.parts:
            if local:
                self.local.settle(specs, res.member, 0, refund=True)
            else:
                self.local.release(specs, res.member)
                self._refund(specs, res.member)
        res.parts.clear()

    def _refund(self, specs: list[LimitSpec], member: str) -> None:
        """Remove a member from every key of these limits in Redis (a no-op where it was never added)."""
        args: list[Any] = [member, len(specs)]
        for s in specs:
            args += [s.kind, 1 if s.kind == "r" else 0, s.cost]
        self.rl.queue_settle([k for s in specs for k in s.keys], args)

    async def flush(self) -> None:
        """Send the pending settlements now (also used by close and by tests)."""
        await self.rl.flush()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.rl.flush()
        self.rl.stop()
        await self.replicas.close()


def build_governor(config: Config, redis: AnyRedis, metrics: Metrics, health: RedisHealth | None = None
                   ) -> RedisGovernor | None:
    """None when no model, scope or budget limit is configured and no virtual key (which may carry its own) can
    exist (the app then skips the stage). Inside a running loop the heartbeat starts at once, so every replica is
    counted before it serves (and before any outage)."""
    if not config.budgets and not config.limits.scopes and not config.auth.virtual_keys.dir and not any(
        m.limits.rpm or m.limits.tpm or m.limits.max_parallel for m in config.models
    ):
        return None
    gov = RedisGovernor(config, redis, metrics, health)
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        gov.start()
    return gov

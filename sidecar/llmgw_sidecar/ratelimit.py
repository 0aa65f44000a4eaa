"""Distributed rate limits and budgets: one atomic Lua decision per request (lua/admit.lua), settled with the real
usage afterwards (lua/settle.lua).

Algorithm: sliding-window log on Redis TIME. Every admitted request is a sorted-set member scored by the Redis clock, so
"at most `limit` requests (tokens) in any window of `window_s` seconds" holds exactly across all replicas: there is no
per-replica share and no fixed-window boundary burst. Tokens are reserved up front (prompt estimate + max_tokens or
`limits.default_max_tokens`) and the reservation is replaced by the real usage when the answer is complete.
When Redis is down the decision falls back to an in-process limiter with the same limits (fail_open) or answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .budgets import BudgetCheck, budget_checks
from .config import Budget, Config, Scope
from .context import RequestContext
from .errors import ApiError
from .metrics import Metrics
from .pricing import NANO, estimate_completion_tokens, estimate_prompt_tokens
from .redis_guard import CircuitBreaker, RateLimitedLog
from .redis_topology import ensure_initialized
from .spend.keys import caller_scope_key, rl_base

log = logging.getLogger("llmgw.ratelimit")
_KIND_SUFFIX = {"r": "rpm", "t": "tpm", "p": "par"}
SETTLE_BATCH_S = 0.005  # how long settlements gather before one script call sends them
SETTLE_BATCH_MAX = 200


def _lua(name: str) -> str:
    return resources.files("llmgw_sidecar").joinpath("lua", name).read_text()


@dataclass(frozen=True, slots=True)
class LimitSpec:
    name: str  # metric label: "model:rpm", "namespace:tpm", ...
    kind: str  # r = requests, t = tokens, p = parallel
    keys: tuple[str, ...]
    limit: int
    cost: int  # 1 for r and p; the token estimate for t
    upstream: bool  # a model limit: refunded on cache hits, which never reach the upstream


@dataclass(slots=True)
class Reservation:
    member: str
    specs: list[LimitSpec]
    estimate: int
    local: bool
    at_ms: int = 0  # Redis TIME of the admission (0 = decided locally): one clock for every replica


class LocalLimiter:
    """The same sliding-window semantics in one process, used while Redis is unavailable (fail_open)."""

    def __init__(self, window_s: float, lease_s: float) -> None:
        self.window = window_s
        self.lease = lease_s
        self.logs: dict[str, deque[tuple[float, str, int]]] = {}
        self.sums: dict[str, int] = {}
        self.inflight: dict[str, dict[str, float]] = {}

    def _prune(self, key: str, now: float) -> deque[tuple[float, str, int]]:
        q = self.logs.setdefault(key, deque())
        while q and q[0][0] <= now - self.window:
            self.sums[key] = self.sums.get(key, 0) - q.popleft()[2]
        return q

    def admit(self, specs: list[LimitSpec], member: str) -> tuple[int, float]:
        """(index of the blocking limit, 0 = admitted; retry-after seconds)."""
        now = time.monotonic()
        for i, s in enumerate(specs, 1):
            key = s.keys[0]
            if s.kind == "p":
                live = {m: d for m, d in self.inflight.get(key, {}).items() if d > now}
                self.inflight[key] = live
                if len(live) + 1 > s.limit:
                    return i, 1.0
                continue
            q = self._prune(key, now)
            used = len(q) if s.kind == "r" else self.sums.get(key, 0)
            if (s.kind == "r" and used + 1 > s.limit) or (s.kind == "t" and used > 0 and used + s.cost > s.limit):
                return i, max(0.001, q[0][0] + self.window - now)
        for s in specs:
            key = s.keys[0]
            if s.kind == "p":
                self.inflight[key][member] = now + self.lease
            else:
                self.logs[key].append((now, member, s.cost))
                self.sums[key] = self.sums.get(key, 0) + s.cost
        return 0, 0.0

    def usage(self, specs: list[LimitSpec]) -> list[tuple[int, float]]:
        """(used, reset ms) per limit, for the x-ratelimit-* headers of a local decision."""
        now = time.monotonic()
        out = []
        for s in specs:
            key = s.keys[0]
            if s.kind == "p":
                out.append((len(self.inflight.get(key, {})), 0.0))
                continue
            q = self.logs.get(key) or deque()
            used = len(q) if s.kind == "r" else self.sums.get(key, 0)
            out.append((used, (q[0][0] + self.window - now) * 1000 if q else 0.0))
        return out

    def settle(self, specs: list[LimitSpec], member: str, tokens: int, hit: bool) -> None:
        for s in specs:
            key = s.keys[0]
            if s.kind == "p":
                self.inflight.get(key, {}).pop(member, None)
                continue
            q = self.logs.get(key, deque())
            for j, (t, m, c) in enumerate(q):
                if m == member:
                    new = tokens if s.kind == "t" else (0 if hit and s.upstream else c)
                    q[j] = (t, m, new)
                    self.sums[key] = self.sums.get(key, 0) + new - c
                    if s.kind == "r" and new == 0:
                        del q[j]
                    break


def _pack(args: list[Any]) -> str:
    """All ARGV in one string (the scripts split it on newlines): one bulk string to encode instead of dozens.
    No value contains a newline: Kubernetes names, model names from the config, numbers, hex ids."""
    return "\n".join(map(str, args))


def format_reset(ms: float) -> str:
    """OpenAI's style: "120ms", "1s", "6m0s"."""
    if ms < 1000:
        return f"{max(0, int(ms))}ms"
    s = ms / 1000
    if s < 59.5:
        return f"{s:.3g}s"
    m, sec = divmod(round(s), 60)
    return f"{m}m{sec}s"


@dataclass(slots=True)
class _Decision:
    blocked: int
    retry_s: float
    used: list[tuple[int, float]] = field(default_factory=list)  # (used, reset_ms) per limit
    budget_left: list[int] = field(default_factory=list)  # nano-USD per budget
    at_ms: int = 0


class RedisGovernor:
    def __init__(self, config: Config, redis: Any, metrics: Metrics) -> None:
        self.cfg = config
        self.limits = config.limits
        self.redis = redis
        self.metrics = metrics
        self.window_ms = int(config.limits.window_s * 1000)
        self.lease_ms = int(config.limits.parallel_lease_s * 1000)
        self.base = rl_base(config.redis.key_prefix, config.gateway.namespace, config.gateway.name)
        self.timeout_s = max(config.redis.op_timeout_ms / 1000, 0.001)
        self.local = LocalLimiter(config.limits.window_s, config.limits.parallel_lease_s)
        self.breaker = CircuitBreaker(config.redis.circuit_breaker)
        self._spec_cache: dict[tuple[str, Any], list[LimitSpec]] = {}
        self._budget_cache: dict[Any, tuple[float, list[BudgetCheck]]] = {}
        self._children: dict[tuple[str, ...], Any] = {}
        self._pending: list[tuple[list[str], list[Any]]] = []
        self._settler: asyncio.Task[None] | None = None
        self.warn = RateLimitedLog(log)
        self._admit = redis.register_script(_lua("admit.lua"))
        self._settle = redis.register_script(_lua("settle.lua"))

    # --- which limits apply ---
    def _spec(self, name: str, kind: str, subject: str, limit: int, cost: int, upstream: bool) -> LimitSpec:
        key = f"{self.base}:{subject}:{_KIND_SUFFIX[kind]}"
        keys = (key, key + ":amt") if kind == "t" else (key,)
        return LimitSpec(name, kind, keys, limit, cost, upstream)

    def specs(self, ctx: RequestContext, tokens: int) -> list[LimitSpec]:
        """The limits of this model and caller; key strings are built once per (model, caller) and cached."""
        ck = (ctx.model.name, ctx.caller)
        base = self._spec_cache.get(ck)
        if base is None:
            if len(self._spec_cache) > 10_000:  # bounded: pods come and go
                self._spec_cache.clear()
            base = self._spec_cache[ck] = self._build_specs(ctx)
        return [LimitSpec(b.name, b.kind, b.keys, b.limit, tokens, b.upstream) if b.kind == "t" else b for b in base]

    def _build_specs(self, ctx: RequestContext) -> list[LimitSpec]:
        tokens = 0
        out: list[LimitSpec] = []
        ml = ctx.model.limits
        subj = f"model:{ctx.model.name}"
        for kind, lim in (("r", ml.rpm), ("t", ml.tpm), ("p", ml.max_parallel)):
            if lim:
                out.append(self._spec(f"model:{_KIND_SUFFIX[kind]}", kind, subj, lim, tokens if kind == "t" else 1, True))
        for sl in self.limits.scopes:
            subject = caller_scope_key(sl.scope, ctx.caller)
            if subject is None:
                continue
            for kind, lim in (("r", sl.rpm), ("t", sl.tpm), ("p", sl.max_parallel)):
                if lim:
                    out.append(self._spec(f"{sl.scope.value}:{_KIND_SUFFIX[kind]}", kind, subject, lim,
                                          tokens if kind == "t" else 1, False))
        kp = ctx.caller.policy  # a virtual key's own limits (gateway mode)
        if kp is not None and ctx.caller.api_key_hash:
            for kind, lim in (("r", kp.rpm), ("t", kp.tpm), ("p", kp.max_parallel)):
                if lim:
                    out.append(self._spec(f"virtual_key:{_KIND_SUFFIX[kind]}", kind, f"vkey:{ctx.caller.api_key_hash}",
                                          lim, tokens if kind == "t" else 1, False))
        return out

    def _budgets(self, ctx: RequestContext) -> list[BudgetCheck]:
        # Keys change at most at midnight UTC: recompute once a second per caller, not per request.
        now = time.monotonic()
        hit = self._budget_cache.get(ctx.caller)
        if hit is not None and hit[0] > now:
            return hit[1]
        if len(self._budget_cache) > 10_000:
            self._budget_cache.clear()
        g = self.cfg.gateway
        budgets = self.cfg.budgets
        kp = ctx.caller.policy
        if kp is not None and kp.budget_usd is not None:
            budgets = [*budgets, Budget(scope=Scope.api_key, period=kp.budget_period, max_usd=kp.budget_usd)]
        checks = budget_checks(budgets, ctx.caller, self.cfg.redis.key_prefix, g.namespace, g.name)
        self._budget_cache[ctx.caller] = (now + 1.0, checks)
        return checks

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
    async def admit(self, ctx: RequestContext) -> None:
        tokens = estimate_prompt_tokens(ctx.body) + estimate_completion_tokens(
            ctx.body, ctx.endpoint, self.limits.default_max_tokens)
        specs = self.specs(ctx, tokens)
        budgets = self._budgets(ctx) if self.cfg.budgets or ctx.caller.policy is not None else []
        if not specs and not budgets:
            return
        member = uuid.uuid4().hex
        decision = await self._redis_admit(specs, budgets, member) if self.breaker.allow() else None
        local = decision is None
        if local:
            if not self.limits.fail_open:
                self.metrics.ratelimit_decisions.labels("redis", "fail_closed").inc()
                raise ApiError(503, "Rate limiter unavailable (Redis is down) and limits.fail_open is false.",
                               code="rate_limiter_unavailable", headers={"Retry-After": "1"})
            blocked, retry = self.local.admit(specs, member)
            decision = _Decision(blocked, retry, self.local.usage(specs))
            self.metrics.ratelimit_decisions.labels("redis", "fail_open" if not blocked else "local_rejected").inc()
        self._headers(ctx, specs, budgets, decision)
        if decision.blocked:
            self._reject(ctx, specs, budgets, decision)
        for s in specs:
            self._count(s.name, "admitted")
        ctx.state["ratelimit"] = Reservation(member, specs, tokens, local, decision.at_ms)

    async def _redis_admit(self, specs: list[LimitSpec], budgets: list[BudgetCheck], member: str) -> _Decision | None:
        keys: list[str] = [k for s in specs for k in s.keys] + [b.key for b in budgets]
        args: list[Any] = [self.window_ms, member, self.lease_ms, len(specs), len(budgets)]
        for s in specs:
            args += [s.kind, s.limit, s.cost]
        for b in budgets:
            args += [b.field, b.max_nusd]
        try:
            async with asyncio.timeout(self.timeout_s):
                await ensure_initialized(self.redis)
                res = await self._admit(keys=keys, args=[_pack(args)])
        except Exception as e:  # noqa: BLE001 - any Redis trouble: decide locally
            self.breaker.failure()
            self.metrics.redis_errors.labels("ratelimit").inc()
            self.warn.warning("admit", f"rate limit decision without Redis: {type(e).__name__}: {e}")
            return None
        self.breaker.success()
        n = len(specs)
        used = [(int(res[4 + 2 * i]), float(res[5 + 2 * i])) for i in range(n)]
        left = [int(float(x)) for x in res[4 + 2 * n:]]
        return _Decision(int(res[1]), int(res[2]) / 1000, used, left, int(res[3]))

    def _headers(self, ctx: RequestContext, specs: list[LimitSpec], budgets: list[BudgetCheck], d: _Decision) -> None:
        for kind, word in (("r", "requests"), ("t", "tokens")):
            best: tuple[int, int, float] | None = None  # (remaining, limit, reset_ms)
            for i, s in enumerate(specs):
                if s.kind != kind:
                    continue
                used, reset = d.used[i] if d.used else (0, 0.0)
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
            ctx.headers["x-llmgw-budget-remaining"] = f"{max(0, min(d.budget_left)) / NANO:.6f}"

    def _reject(self, ctx: RequestContext, specs: list[LimitSpec], budgets: list[BudgetCheck], d: _Decision) -> None:
        ctx.state["governor_rejected"] = True  # nothing was spent: the spend recorder skips this request
        n = len(specs)
        if d.blocked > n:
            b = budgets[d.blocked - n - 1]
            self.metrics.ratelimit_decisions.labels(b.name, "rejected").inc()
            ctx.headers["Retry-After"] = str(b.retry_after_s)
            raise ApiError(429, f"Budget exceeded: {b.name} for {b.field} is spent ({b.max_nusd / NANO:.2f} USD).",
                           code="budget_exceeded", headers=dict(ctx.headers))
        s = specs[d.blocked - 1]
        self.metrics.ratelimit_decisions.labels(s.name, "rejected").inc()
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
        if res.local:
            self.local.settle(res.specs, res.member, tokens, hit)
            return
        if not any(s.kind != "r" or (hit and s.upstream) for s in res.specs):
            return  # only request counts that stay counted: nothing to change in Redis
        keys = [k for s in res.specs for k in s.keys]
        args: list[Any] = [res.member, len(res.specs)]
        for s in res.specs:
            action = tokens if s.kind == "t" else (1 if s.kind == "r" and hit and s.upstream else 0)
            args += [s.kind, action, s.cost]
        # Batched: the answer is already out; one script call per few ms settles every request of that interval.
        self._pending.append((keys, args))
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_loop())

    async def _settle_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(SETTLE_BATCH_S)
            await self.flush()

    async def flush(self) -> None:
        """Send the pending settlements now (also used by close and by tests)."""
        while self._pending:
            batch, self._pending = self._pending[:SETTLE_BATCH_MAX], self._pending[SETTLE_BATCH_MAX:]
            keys = [k for ks, _ in batch for k in ks]
            args: list[Any] = [self.window_ms, len(batch)]
            for _, a in batch:
                args += a
            try:
                async with asyncio.timeout(self.timeout_s * 4):
                    await self._settle(keys=keys, args=[_pack(args)])
            except Exception as e:  # noqa: BLE001 - leases expire by themselves; never fail an answer
                self.metrics.redis_errors.labels("ratelimit_settle").inc()
                self.warn.warning("settle", f"rate limit settle failed: {type(e).__name__}: {e}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.flush()
        if self._settler is not None:
            self._settler.cancel()


def build_governor(config: Config, redis: Any, metrics: Metrics) -> RedisGovernor | None:
    """None when no model, scope or budget limit is configured and no virtual key (which may carry its own) can
    exist (the app then skips the stage)."""
    if not config.budgets and not config.limits.scopes and not config.auth.virtual_keys.dir and not any(
        m.limits.rpm or m.limits.tpm or m.limits.max_parallel for m in config.models
    ):
        return None
    return RedisGovernor(config, redis, metrics)

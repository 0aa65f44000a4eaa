"""Everything built from one Config: Redis client and its health, caches, optional stages and upstream providers.

A reload builds a new Runtime and swaps it in; requests in flight finish on the one they started with. The old one
is retired: it waits for its last in-flight request and its background work, hands its spend records off (to Redis,
or what Redis would not take to its successor), and only then closes. A closed runtime refuses new work loudly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .auth import Identity, build_identity
from .cache.exact import ExactCache
from .config import Config, ConfigError, ModelConfig, load_config
from .context import CachedAnswer, Caller, RequestContext
from .lifecycle import RequestLifecycle
from .metrics import Metrics
from .pipeline import Governor, SemanticLayer, SpendRecorder
from .ratelimit import build_governor
from .redact import REDACTOR
from .redis_capabilities import Capabilities
from .redis_guard import RedisHealth
from .redis_topology import AnyRedis, close_client, ensure_initialized, make_client
from .spend import NullSpend, build_spend
from .spend.records import record_from_dict
from .upstream import UpstreamProvider, make_provider

log = logging.getLogger("llmgw")

# Optional stages, each built by its own module from the Config (None when not configured).
StageFactory = Callable[..., Awaitable[Any] | Any]


def caller_from_env(cfg: Config, environ: dict[str, str] | None = None) -> Caller:
    """Pod identity from the downward API env the injector sets; sensible values when run by hand."""
    env = os.environ if environ is None else environ
    return Caller(
        namespace=env.get("POD_NAMESPACE") or cfg.gateway.namespace,
        pod=env.get("POD_NAME") or socket.gethostname(),
        service_account=env.get("POD_SERVICE_ACCOUNT") or "default",
    )


class RuntimeClosedError(RuntimeError):
    """Work was handed to a runtime that is already closed: a bug (the work would be lost silently otherwise)."""


@dataclass(eq=False)
class Runtime:
    config: Config
    metrics: Metrics
    redis: AnyRedis
    health: RedisHealth  # the one breaker of this runtime: exact cache, semantic index, limits and spend share it
    models: dict[str, ModelConfig]
    providers: dict[str, UpstreamProvider]
    caller: Caller
    exact: ExactCache | None = None
    semantic: SemanticLayer | None = None
    governor: Governor | None = None
    spend: SpendRecorder = field(default_factory=NullSpend)  # a no-op stage until build_spend runs
    identity: Identity | None = None  # gateway mode: who the caller is comes from its bearer token
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    capabilities: Capabilities | None = None  # what this Redis can do (issue 12)
    inflight: int = 0
    closing: bool = False  # retired: no longer current, finishing what it has
    closed: bool = False
    _idle: asyncio.Event | None = None

    @property
    def guard(self) -> RedisHealth:
        return self.health

    # --- requests -----------------------------------------------------------------------------------------------
    def lifecycle(self, endpoint: str, request_id: str) -> RequestLifecycle:
        return RequestLifecycle(self, endpoint, request_id)

    def enter(self) -> None:
        if self.closed:
            log.error("a request reached a closed runtime (config generation replaced): refused")
            raise RuntimeClosedError("runtime is closed")
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._idle is not None:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request is in flight on this runtime (True) or the timeout passed (False)."""
        if self.inflight:
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
            except TimeoutError:
                return False
        return True

    # --- background work ----------------------------------------------------------------------------------------
    def background(self, coro: Coroutine[Any, Any, Any], what: str = "background work") -> None:
        """Run after the answer, owned by this runtime: referenced until done, awaited before the runtime closes."""
        if self.closed:
            coro.close()
            log.error("%s handed to a closed runtime: refused", what)
            raise RuntimeClosedError(f"{what} handed to a closed runtime")
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background work failed: %s: %s", type(exc).__name__, exc, exc_info=exc)

    def store(self, ctx: RequestContext, make_answer: Callable[[], CachedAnswer]) -> None:
        """Store a complete answer in the background; building the stored form is part of that work."""
        exact, semantic = self.exact, self.semantic
        if exact is None and (semantic is None or ctx.endpoint != "chat"):
            return

        async def store() -> None:
            answer = make_answer()
            if exact is not None and ctx.cache_key:
                await exact.put(ctx.cache_key, answer, ctx.directives.ttl_s)
            if semantic is not None and ctx.endpoint == "chat":
                semantic.store(ctx, answer)

        self.background(store(), "cache store")

    # --- the end ------------------------------------------------------------------------------------------------
    async def retire(self, successor: Callable[[], Runtime | None], drain_s: float | None = None) -> None:
        """After a reload: let in-flight requests finish (up to the longest upstream deadline), then close, handing
        spend records Redis would not take to the successor so that nothing is lost or counted twice."""
        self.closing = True
        limit = drain_s if drain_s is not None else max(m.timeouts.total_s for m in self.config.models) + 5
        if not await self.drain(limit):
            log.warning("retiring runtime: %d request(s) still in flight after %.0fs; closing anyway",
                        self.inflight, limit)
        await self.close(successor=successor)

    async def close(self, grace_s: float = 5.0, successor: Callable[[], Runtime | None] | None = None) -> None:
        if self.closed:
            return
        # Requests that are still running may add work until they end; wait for that work too (bounded).
        deadline = time.monotonic() + grace_s
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self.tasks), timeout=max(0.0, deadline - time.monotonic()))
        self.closed = True
        for stage in (self.exact, self.semantic, self.governor, self.spend, self.identity):
            if stage is not None:
                try:
                    await stage.close()
                except Exception:  # closing must go on for the other stages
                    log.exception("closing %s failed", type(stage).__name__)
        heir = successor() if successor is not None else None  # asked now: reloads may have followed meanwhile
        if heir is not None and heir is not self and not heir.closed:
            hand_over_spend(self.spend, heir.spend)
        await close_client(self.redis)


def hand_over_spend(old: SpendRecorder, new: SpendRecorder) -> int:
    """Move the spend records a closing runtime could not hand to Redis into its successor's buffer (same batch id
    for a batch whose hand-off may have landed: the commit is idempotent by id). Returns the records moved."""
    old_buf, new_buf = getattr(old, "buffer", None), getattr(new, "buffer", None)  # NullSpend has none
    if old_buf is None or new_buf is None or not old_buf.depth:
        return 0
    moved: int = old_buf.depth
    pending, old_buf.pending = old_buf.pending, None
    if pending is not None:
        if new_buf.pending is None:
            new_buf.pending = pending
        else:
            new_buf.records.extend(record_from_dict(d) for d in orjson.loads(pending[1])["records"])
    new_buf.records.extend(old_buf.records)
    old_buf.records.clear()
    log.info("handed %d spend record(s) of the retired runtime to the new one", moved)
    return moved


async def build_runtime(config: Config, metrics: Metrics, session: aiohttp.ClientSession) -> Runtime:
    REDACTOR.add_config(config)  # before anything can log or relay a message that might quote a credential
    redis = make_client(config.redis, on_auth_event=lambda kind, result: metrics.redis_auth.labels(kind, result).inc())
    health = RedisHealth(config.redis.op_timeout_ms / 1000, config.redis.circuit_breaker, metrics)
    rt = Runtime(
        config=config,
        metrics=metrics,
        redis=redis,
        health=health,
        models=config.model_by_name(),
        providers={m.name: make_provider(m, session, metrics) for m in config.models},
        caller=caller_from_env(config),
        identity=build_identity(config, metrics),
    )
    # Cluster clients initialise lazily and race on a burst of first commands: do it once now (Redis may be down:
    # then the stages initialise on first use).
    await health.call("initialize", lambda: ensure_initialized(redis), default=None,
                     timeout_s=config.redis.connect_timeout_ms / 1000 * 4)
    capabilities = rt.capabilities = Capabilities(metrics, need_search=config.cache.semantic.enabled)
    await health.call("capabilities", lambda: capabilities.check(redis), default=None,
                     timeout_s=config.redis.connect_timeout_ms / 1000 * 4)
    if config.cache.exact.enabled:
        rt.exact = ExactCache(redis, health, metrics, config.cache.exact.ttl_s, config.cache.exact.max_entry_bytes,
                              prefix=config.redis.key_prefix, hits_interval_s=config.spend.flush_interval_s)
    await _build_stages(rt)
    return rt


async def _build_stages(rt: Runtime) -> None:
    """The optional stages live in their own modules; each returns None (or a no-op) when its feature is off."""
    cfg = rt.config
    if cfg.cache.semantic.enabled:
        # Imported only when enabled: the embedding runtime (onnxruntime, tokenizers) is heavy.
        from .cache.semantic_build import build_semantic

        rt.semantic = await _maybe_await(build_semantic(cfg, rt.redis, rt.metrics, health=rt.health))
    rt.governor = build_governor(cfg, rt.redis, rt.metrics, health=rt.health)
    rt.spend = build_spend(cfg, rt.redis, rt.metrics, health=rt.health)


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        return await value
    return value


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    # A ConfigMap update swaps a symlink: stat() follows it, so inode and mtime both change.
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


class ConfigWatcher:
    """Polls the config file and hands each new valid Config to `apply`; an invalid file keeps the old config."""

    def __init__(self, path: Path, apply: Callable[[Config], Awaitable[None]], metrics: Metrics,
                 interval_s: float = 2.0) -> None:
        self.path = path
        self.apply = apply
        self.metrics = metrics
        self.interval_s = interval_s
        self.stamp = _file_stamp(path)

    async def check(self) -> bool:
        """One poll; True when a new config was applied."""
        stamp = _file_stamp(self.path)
        if stamp is None or stamp == self.stamp:
            return False
        self.stamp = stamp
        try:
            cfg = await asyncio.to_thread(load_config, self.path)
        except ConfigError as e:
            self.metrics.config_reloads.labels("invalid").inc()
            log.error("config %s changed but is invalid, keeping the running config: %s", self.path, e)
            return False
        await self.apply(cfg)
        self.metrics.config_reloads.labels("ok").inc()
        log.info("config %s reloaded at %s", self.path, time.strftime("%H:%M:%S"))
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # the watcher must survive anything
                log.exception("config reload failed")

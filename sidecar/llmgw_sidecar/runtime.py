"""Everything built from one Config: Redis client, caches, optional stages and upstream providers.

A reload builds a new Runtime and swaps it in; requests in flight finish on the one they started with, and the old
one is closed after a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .auth import Identity, build_identity
from .cache.exact import ExactCache
from .config import Config, ConfigError, ModelConfig, load_config
from .context import Caller
from .metrics import Metrics
from .pipeline import Governor, SemanticLayer, SpendRecorder
from .ratelimit import build_governor
from .redis_capabilities import Capabilities
from .redis_guard import RedisGuard
from .redis_topology import AnyRedis, close_client, ensure_initialized, make_client
from .spend import build_spend
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


@dataclass
class Runtime:
    config: Config
    metrics: Metrics
    redis: AnyRedis
    guard: RedisGuard
    models: dict[str, ModelConfig]
    providers: dict[str, UpstreamProvider]
    caller: Caller
    exact: ExactCache | None = None
    semantic: SemanticLayer | None = None
    governor: Governor | None = None
    spend: SpendRecorder | None = None
    identity: Identity | None = None  # gateway mode: who the caller is comes from its bearer token
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    capabilities: Capabilities | None = None  # what this Redis can do (issue 12)

    def background(self, coro: Awaitable[Any]) -> None:
        """Fire and forget, but keep a reference (so it is not garbage collected) and wait for it on close."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self, grace_s: float = 5.0) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace_s)
        for stage in (self.semantic, self.governor, self.spend, self.identity):
            if stage is not None:
                try:
                    await stage.close()
                except Exception:  # closing must go on for the other stages
                    log.exception("closing %s failed", type(stage).__name__)
        await close_client(self.redis)


async def build_runtime(config: Config, metrics: Metrics, session: aiohttp.ClientSession) -> Runtime:
    redis = make_client(config.redis, on_auth_event=lambda kind, result: metrics.redis_auth.labels(kind, result).inc())
    guard = RedisGuard(config.redis.op_timeout_ms / 1000, config.redis.circuit_breaker, metrics)
    rt = Runtime(
        config=config,
        metrics=metrics,
        redis=redis,
        guard=guard,
        models=config.model_by_name(),
        providers={m.name: make_provider(m, session, metrics) for m in config.models},
        caller=caller_from_env(config),
        identity=build_identity(config, metrics),
    )
    # Cluster clients initialise lazily and race on a burst of first commands: do it once now (Redis may be down:
    # then the stages initialise on first use).
    await guard.call("initialize", lambda: ensure_initialized(redis), default=None,
                     timeout_s=config.redis.connect_timeout_ms / 1000 * 4)
    rt.capabilities = Capabilities(metrics, need_search=config.cache.semantic.enabled)
    await guard.call("capabilities", lambda: rt.capabilities.check(redis), default=None,
                     timeout_s=config.redis.connect_timeout_ms / 1000 * 4)
    if config.cache.exact.enabled:
        rt.exact = ExactCache(redis, guard, metrics, config.cache.exact.ttl_s, config.cache.exact.max_entry_bytes)
    await _build_stages(rt)
    return rt


async def _build_stages(rt: Runtime) -> None:
    """The optional stages live in their own modules; each returns None (or a no-op) when its feature is off."""
    cfg = rt.config
    if cfg.cache.semantic.enabled:
        # Imported only when enabled: the embedding runtime (onnxruntime, tokenizers) is heavy.
        from .cache.semantic import build_semantic

        rt.semantic = await _maybe_await(build_semantic(cfg, rt.redis, rt.metrics))
    rt.governor = build_governor(cfg, rt.redis, rt.metrics)
    rt.spend = build_spend(cfg, rt.redis, rt.metrics)


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

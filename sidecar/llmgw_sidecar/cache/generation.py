"""Each sidecar reports the cache generation it serves, so the operator can say in the gateway's status how many
sidecars have applied a bumped `spec.cache.generation` (they pick it up through the config reload).

    {prefix}:gen:{ns/name}   HASH  pod name -> "<generation> <unix seconds>"   (same hash tag as the spend keys)
    {prefix}:gen:{ns/name}:swept:<generation>   STRING  the pod that swept older generations (a lock, 1 day)

The first sidecar that serves a generation also deletes the gateway's entries of every other generation in the
background (once per generation across all replicas, thanks to the lock): older entries would only age out by TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..spend.keys import gateway_tag

log = logging.getLogger("llmgw.generation")
REPORT_EVERY_S = 15.0
FRESH_S = 120.0  # a report older than this is a sidecar that went away
KEEP_S = 86400.0  # reports older than this are removed by the reader
SWEEP_DEADLINE_S = 600.0


def sweep_lock_key(prefix: str, ns: str, name: str, generation: int) -> str:
    return f"{generation_key(prefix, ns, name)}:swept:{generation}"


async def sweep_once(rt: Any) -> dict[str, int] | None:
    """Delete the gateway's entries of other generations, if no replica did it for this generation yet."""
    from .admin import CacheAdmin, Selector  # admin imports the cache modules; keep this module light

    cfg = rt.config
    g = cfg.gateway
    lock = sweep_lock_key(cfg.redis.key_prefix, g.namespace, g.name, cfg.cache.generation)
    if not await rt.redis.set(lock, rt.caller.pod, nx=True, ex=int(KEEP_S)):
        return None
    admin = CacheAdmin(rt.redis, cfg, rt.metrics)
    async with asyncio.timeout(SWEEP_DEADLINE_S):
        return await admin.delete(Selector(stale_generations=True), who=f"generation-sweep pod={rt.caller.pod}")


def generation_key(prefix: str, ns: str, name: str) -> str:
    return f"{prefix}:gen:{gateway_tag(ns, name)}"


async def report_loop(runtime: Callable[[], Any], stop: asyncio.Event, every_s: float = REPORT_EVERY_S,
                      tick_s: float = 1.0) -> None:
    """Report the current runtime's generation at start, within `tick_s` of a reload that changes it, and every
    `every_s` otherwise, until `stop` is set. Redis trouble is logged once per failure streak, never raised.
    (Stopped by an event, not by cancellation: redis-py may turn a cancellation inside a command into a connection
    error, which this loop would then swallow and go on.)"""
    failing = False
    last: tuple[int, float] | None = None  # (generation reported, when)
    swept: int | None = None
    sweep: asyncio.Task[Any] | None = None
    while not stop.is_set():
        rt = runtime()
        cfg = rt.config
        gen_now = cfg.cache.generation
        if last is None or last[0] != gen_now or time.monotonic() - last[1] >= every_s:
            key = generation_key(cfg.redis.key_prefix, cfg.gateway.namespace, cfg.gateway.name)
            try:
                async with asyncio.timeout(2):
                    await rt.redis.hset(key, rt.caller.pod, f"{gen_now} {int(time.time())}")
                    await rt.redis.expire(key, int(KEEP_S))
                last, failing = (gen_now, time.monotonic()), False
                if swept != gen_now and (sweep is None or sweep.done()):
                    swept = gen_now
                    sweep = asyncio.create_task(_sweep_logged(rt), name="cache-generation-sweep")
            except Exception as e:  # noqa: BLE001 - a report is best effort
                if not failing:
                    log.warning("cannot report the cache generation: %s: %s", type(e).__name__, e)
                failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick_s)
    if sweep is not None and not sweep.done():
        sweep.cancel()  # a sweep is resumable: the next generation change (or the CLI) finishes it


async def _sweep_logged(rt: Any) -> None:
    try:
        await sweep_once(rt)
    except Exception as e:  # noqa: BLE001 - best effort; `llmgw-sidecar cache purge --stale-generations` remains
        log.warning("sweep of older cache generations failed: %s: %s", type(e).__name__, e)


def summarize(reports: dict[Any, Any], generation: int, now: float) -> tuple[dict[str, int], list[str]]:
    """({sidecarsReporting, sidecarsApplied}, stale fields to delete) from the hash's contents."""
    reporting = applied = 0
    stale: list[str] = []
    for pod, value in reports.items():
        pod = pod.decode() if isinstance(pod, bytes) else str(pod)
        value = value.decode() if isinstance(value, bytes) else str(value)
        try:
            gen_s, ts_s = value.split(" ", 1)
            gen, ts = int(gen_s), float(ts_s)
        except ValueError:
            stale.append(pod)
            continue
        if now - ts > KEEP_S:
            stale.append(pod)
        elif now - ts <= FRESH_S:
            reporting += 1
            applied += int(gen == generation)
    return {"sidecarsReporting": reporting, "sidecarsApplied": applied}, stale


def start(app: Any, runtime: Callable[[], Any]) -> None:
    """aiohttp hooks: start the report loop with the app, stop it on shutdown."""
    holder: dict[str, Any] = {}

    async def on_startup(_: Any) -> None:
        holder["stop"] = stop = asyncio.Event()
        holder["task"] = asyncio.create_task(report_loop(runtime, stop), name="cache-generation-report")

    async def on_cleanup(_: Any) -> None:
        task = holder.pop("task", None)
        if task is not None:
            holder["stop"].set()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=5)  # at most one report in flight (2 s deadline)

    app.on_startup.append(on_startup)
    app.on_cleanup.insert(0, on_cleanup)  # before the runtime (and its Redis client) is closed

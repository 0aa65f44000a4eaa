"""Cost and accuracy of rate limits + budgets + spend tracking, against a real local Redis. Prints one JSON object.

1. CPU per decision: process CPU (the sidecar's own; Redis runs in its own process) of the limit decisions +
   settlement + spend.record of an exact-hit request and of a miss, as the app calls them (two-stage API: scope limits
   and budgets before the cache, model limits only on a miss; the one-stage API of older trees is driven when that is
   what the tree has, so before/after can be measured back-to-back: PYTHONPATH=<old tree>/sidecar python bench/...).
   The hand-off and flusher loops run in the same event loop (their CPU is included).
2. Over-admission under slow Redis: 4 real sidecar processes share one rpm limit L; Redis pauses 60 ms every 100 ms
   (DEBUG SLEEP); each trial sends 4L distinct requests at once and counts the 200s (default deadlines).

Usage: python bench/limits_bench.py [--n 3000] [--concurrency 1] [--trials 10] [--skip-slow]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import redis
import yaml

from llmgw_sidecar.config import Config, parse_config
from llmgw_sidecar.context import Caller, RequestContext, Usage
from llmgw_sidecar.devredis import free_port, standalone
from llmgw_sidecar.errors import ApiError
from llmgw_sidecar.metrics import Metrics
from llmgw_sidecar.ratelimit import build_governor
from llmgw_sidecar.redis_topology import make_client
from llmgw_sidecar.spend import build_spend

PROFILES: dict[str, dict[str, Any]] = {
    "lean": {"model_limits": {"rpm": 10_000_000}, "scopes": [], "budgets": []},
    "full": {"model_limits": {"rpm": 10_000_000, "tpm": 10**12, "max_parallel": 100_000},
             "scopes": [{"scope": "namespace", "rpm": 10_000_000, "tpm": 10**12}],
             "budgets": [{"scope": "namespace", "period": "day", "max_usd": 1e9}]},
}


def make_config(url: str, profile: dict[str, Any]) -> Config:
    return parse_config({
        "gateway": {"name": "bench", "namespace": "bench"},
        "redis": {"url": url, "key_prefix": f"b{uuid.uuid4().hex[:8]}", "op_timeout_ms": 1000},
        "models": [{"name": "gpt-4o-mini", "provider": "mock", "limits": profile["model_limits"]}],
        "limits": {"scopes": profile["scopes"]},
        "budgets": profile["budgets"],
        "spend": {"flush_interval_s": 0.2},
    })


def make_ctx(cfg: Config, i: int, hit: bool) -> RequestContext:
    c = RequestContext(
        request_id=str(i), endpoint="chat", model=cfg.models[0],
        body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {i} " * 8}],
              "max_tokens": 256},
        caller=Caller("bench", f"pod-{i % 4}", "app"), scope="gw:bench/bench|ns:bench",
    )
    c.cache_result = "hit-exact" if hit else "miss"
    c.usage = Usage(40, 120)
    return c


async def run_case(cfg: Config, n: int, hit: bool, concurrency: int) -> dict[str, float]:
    redis = make_client(cfg.redis)
    metrics = Metrics()
    gov = build_governor(cfg, redis, metrics)
    spend = build_spend(cfg, redis, metrics)
    assert gov is not None
    ctxs = [make_ctx(cfg, i, hit) for i in range(n + 200)]
    lat: list[float] = []
    two_stage = hasattr(gov, "admit_model")
    undecided = 0
    decisions = 0  # limit decisions sent to Redis (one-stage trees: one per request)
    if hasattr(gov, "rl"):
        decide = gov.rl.decide

        async def counted(*a: Any) -> Any:
            nonlocal decisions
            decisions += 1
            return await decide(*a)

        gov.rl.decide = counted

    async def one(c: RequestContext) -> None:
        nonlocal undecided
        t = time.perf_counter()
        try:
            if two_stage:  # as the app: the cache is consulted, so model limits are decided only on a miss
                await gov.admit(c, with_model=False)
                if not hit:
                    await gov.admit_model(c)
            else:
                await gov.admit(c)
        except ApiError:  # a decision past its deadline (the machine stalled): counted, the run goes on
            undecided += 1
        await gov.settle(c)
        spend.record(c)
        lat.append(time.perf_counter() - t)

    for c in ctxs[:200]:  # warm-up: scripts loaded, pool filled
        await one(c)
    lat.clear()
    decisions = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    work = ctxs[200:]
    for k in range(0, n, concurrency):
        await asyncio.gather(*(one(c) for c in work[k:k + concurrency]))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await spend.close()  # waits for the last hand-off and flush
    await redis.aclose()
    lat.sort()
    return {
        "api": "two-stage" if two_stage else "one-stage",
        "cpu_ms_per_request": round(cpu / n * 1000, 4),  # decisions + settlement + spend record of one request
        "decisions_per_request": round(decisions / n if two_stage else 1.0, 2),
        "cpu_ms_per_decision": round(cpu / (decisions if two_stage else n) * 1000, 4) if decisions or not two_stage
        else None,
        "wall_p50_ms": round(statistics.median(lat) * 1000, 3),
        "wall_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 3),
        "requests_per_s": round(n / wall, 1),
        "undecided_503": undecided,
    }


class _Pauser:
    """Redis slow, not down: DEBUG SLEEP 60 ms every 100 ms."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.client.execute_command("DEBUG", "SLEEP", 0.06)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


async def _post(s: aiohttp.ClientSession, url: str, content: str) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 16}
    async with s.post(url + "/v1/chat/completions", json=body) as r:
        await r.read()
        return r.status


async def slow_redis(tmp: Path, trials: int, limit: int = 20, n_sidecars: int = 4) -> dict[str, Any]:
    """Admitted per trial of 4L concurrent requests while Redis pauses; default deadlines, exact cache on."""
    r = standalone(free_port(), tmp / "redis-slow", extra=["--enable-debug-command", "yes"]).start()
    prefix = f"b{uuid.uuid4().hex[:8]}"
    cfg = {"gateway": {"name": "bench", "namespace": "bench"}, "redis": {"url": r.url, "key_prefix": prefix},
           "models": [{"name": "m", "provider": "mock", "limits": {"rpm": limit}}]}
    path = tmp / "slow.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ports = [free_port() for _ in range(n_sidecars)]
    procs = [subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "--log-level", "error", "serve", "--config",
                               str(path), "--port", str(p)], env={**os.environ, "POD_NAME": f"pod-{i}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i, p in enumerate(ports)]
    pauser = _Pauser(r.url)
    sync = redis.Redis.from_url(r.url, socket_timeout=5)
    try:
        for p in ports:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{p}/healthz", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError("sidecar not ready") from None
                    time.sleep(0.1)
        pauser.thread.start()
        admitted, timeouts = [], 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            for t in range(trials):
                sync.delete(f"{prefix}:rl:{{bench/bench}}:model:m:rpm")
                tag = uuid.uuid4().hex[:6]
                codes = await asyncio.gather(*(_post(s, f"http://127.0.0.1:{p}", f"{tag} q{t}-{i}-{j}")
                                               for i in range(limit) for j, p in enumerate(ports)))
                admitted.append(sum(c == 200 for c in codes))
                timeouts += sum(c == 503 for c in codes)
        return {"limit": limit, "sidecars": n_sidecars, "offered_per_trial": limit * n_sidecars, "trials": trials,
                "admitted_per_trial": admitted, "max_over_admission": max(admitted) - limit,
                "mean_admitted": round(statistics.mean(admitted), 1), "undecided_503": timeouts}
    finally:
        pauser.stop.set()
        pauser.thread.join(5)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        sync.close()
        r.kill()


async def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the run with the median CPU is reported")
    ap.add_argument("--trials", type=int, default=10, help="slow-Redis trials of 4L concurrent requests")
    ap.add_argument("--skip-slow", action="store_true", help="only the CPU figures")
    ap.add_argument("--skip-cpu", action="store_true", help="only the slow-Redis figure")
    ap.add_argument("--profile", choices=sorted(PROFILES), help="only this CPU profile")
    ap.add_argument("--case", choices=["hit", "miss"], help="only this CPU case")
    args = ap.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="llmgw-bench-"))
    r = standalone(free_port(), tmp / "redis").start()
    try:
        out: dict[str, Any] = {"n": args.n, "concurrency": args.concurrency, "repeat": args.repeat,
                               "target_cpu_ms_hit": 0.3}
        for name, profile in ({} if args.skip_cpu else PROFILES).items():
            if args.profile and name != args.profile:
                continue
            out[name] = {}
            for case, hit in (("hit", True), ("miss", False)):
                if args.case and case != args.case:
                    continue
                # A fresh gateway (key prefix) per run; the machine is shared, so report the median run.
                runs = [await run_case(make_config(r.url, profile), args.n, hit, args.concurrency)
                        for _ in range(args.repeat)]
                runs.sort(key=lambda x: x["cpu_ms_per_request"])
                out[name][case] = runs[len(runs) // 2]
        if not args.skip_slow:
            out["slow_redis"] = await slow_redis(tmp, args.trials)
        return out
    finally:
        r.kill()


if __name__ == "__main__":
    result = asyncio.run(main())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")

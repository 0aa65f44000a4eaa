"""Added cost of rate limits + budgets + spend tracking per request, against a real local Redis.

Measures process CPU (the sidecar's own; Redis runs in its own process) of governor.admit + governor.settle +
spend.record for an exact-hit request and a miss, with the hand-off and flusher loops running in the same event loop
(their CPU is included). Prints one JSON object. Usage: python bench/limits_bench.py [--n 3000] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from llmgw_sidecar.config import Config, parse_config
from llmgw_sidecar.context import Caller, RequestContext, Usage
from llmgw_sidecar.devredis import free_port, standalone
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

    async def one(c: RequestContext) -> None:
        t = time.perf_counter()
        await gov.admit(c)
        await gov.settle(c)
        spend.record(c)
        lat.append(time.perf_counter() - t)

    for c in ctxs[:200]:  # warm-up: scripts loaded, pool filled
        await one(c)
    lat.clear()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    work = ctxs[200:]
    for k in range(0, n, concurrency):
        await asyncio.gather(*(one(c) for c in work[k:k + concurrency]))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await spend.close()  # waits for the last hand-off and flush
    await redis.aclose()
    lat.sort()
    return {
        "cpu_ms_per_request": round(cpu / n * 1000, 4),
        "wall_p50_ms": round(statistics.median(lat) * 1000, 3),
        "wall_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 3),
        "requests_per_s": round(n / wall, 1),
    }


async def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the run with the median CPU is reported")
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
        for name, profile in PROFILES.items():
            out[name] = {}
            for case, hit in (("hit", True), ("miss", False)):
                # A fresh gateway (key prefix) per run; the machine is shared, so report the median run.
                runs = [await run_case(make_config(r.url, profile), args.n, hit, args.concurrency)
                        for _ in range(args.repeat)]
                runs.sort(key=lambda x: x["cpu_ms_per_request"])
                out[name][case] = runs[len(runs) // 2]
        return out
    finally:
        r.kill()


if __name__ == "__main__":
    result = asyncio.run(main())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")

"""Cache administration at scale: list and purge by model over a Redis holding N exact entries of two gateways, and
what it does to Redis latency meanwhile (PING round trips measured while the purge runs: SCAN pages, not KEYS, so
Redis keeps answering). Prints one JSON object. Not a test: `python bench/cache_admin_bench.py [--entries 100000]`.

Entries are written in the sidecar's own key layout (cache.keys.exact_key) and value format (cache.exact.encode).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "sidecar"))
from llmgw_sidecar.cache.admin import CacheAdmin, Selector  # noqa: E402
from llmgw_sidecar.cache.exact import encode  # noqa: E402
from llmgw_sidecar.cache.keys import exact_key  # noqa: E402
from llmgw_sidecar.config import parse_config  # noqa: E402
from llmgw_sidecar.context import CachedAnswer, Usage  # noqa: E402
from llmgw_sidecar.devredis import free_port, standalone  # noqa: E402
from llmgw_sidecar.redis_topology import make_client  # noqa: E402

TIME_CAP_S = 300.0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0.0


_PROBE = """
import json, select, sys, time, redis
r = redis.Redis.from_url(sys.argv[1]); out = []; end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end and len(out) < 100000 and not select.select([sys.stdin], [], [], 0)[0]:
    t = time.perf_counter(); r.ping(); out.append((time.perf_counter() - t) * 1000); time.sleep(0.002)
print(json.dumps(out))
"""


async def start_probe(url: str) -> asyncio.subprocess.Process:
    """PING every 2 ms from a child process (a thread here would measure this process's GIL, not Redis)."""
    return await asyncio.create_subprocess_exec(sys.executable, "-c", _PROBE, url, str(TIME_CAP_S),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)


async def stop_probe(proc: asyncio.subprocess.Process) -> list[float]:
    out, _ = await proc.communicate(b"stop\n")
    return json.loads(out)


async def main(entries: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = standalone(free_port(), Path(tmp)).start()
        try:
            return await run(server.url, entries)
        finally:
            server.kill()


async def run(url: str, entries: int) -> dict:
    cfg = parse_config({"gateway": {"namespace": "team-a", "name": "gw"}, "redis": {"url": url, "key_prefix": "b"},
                        "models": [{"name": "m1", "provider": "mock"}, {"name": "m2", "provider": "mock"}]})
    redis = make_client(cfg.redis)
    blob = encode(CachedAnswer(body=b'{"choices":[{"message":{"content":"' + b"x" * 400 + b'"}}]}',
                               created=time.time(), usage=Usage(20, 100)))
    t0 = time.perf_counter()
    for start in range(0, entries, 5000):
        pipe = redis.pipeline(transaction=False)
        for i in range(start, min(entries, start + 5000)):
            gw = "team-a/gw" if i % 4 else "team-b/gw"  # a quarter belongs to another gateway
            key = exact_key("b", f"gw:{gw}|ns:t{i % 50}", None, f"{i:064x}", generation=0, model=f"m{1 + i % 2}")
            pipe.set(key, blob, ex=3600)
        await pipe.execute()
    fill_s = time.perf_counter() - t0
    admin = CacheAdmin(redis, cfg)

    t0 = time.perf_counter()
    listed = 0
    async for _ in admin.iter(Selector(model="m1")):
        listed += 1
    list_s = time.perf_counter() - t0

    idle = await start_probe(url)
    await asyncio.sleep(2.0)
    baseline = await stop_probe(idle)
    busy = await start_probe(url)
    t0 = time.perf_counter()
    async with asyncio.timeout(TIME_CAP_S):
        counts = await admin.delete(Selector(model="m1"), who="bench")
    purge_s = time.perf_counter() - t0
    pings = await stop_probe(busy)
    other_left = sum([1 async for _ in redis.scan_iter(match="b:exact:gw:team-b/gw|*", count=1000)])
    await redis.aclose()
    return {
        "entries": entries, "fill_s": round(fill_s, 2),
        "list_by_model": {"matched": listed, "seconds": round(list_s, 2)},
        "purge_by_model": {"deleted": counts["exact"], "seconds": round(purge_s, 2),
                           "entries_per_s": round(counts["exact"] / purge_s) if purge_s else None},
        "other_gateway_entries_left": other_left, "other_gateway_entries_written": entries // 4,
        "redis_ping_ms_idle": {"p50": round(pct(baseline, 0.5), 3), "p99": round(pct(baseline, 0.99), 3)},
        "redis_ping_ms_during_purge": {"p50": round(pct(pings, 0.5), 3), "p99": round(pct(pings, 0.99), 3),
                                       "max": round(max(pings), 3) if pings else None, "samples": len(pings)},
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.entries)), indent=2))

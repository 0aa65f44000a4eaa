"""Core benchmark: direct-to-upstream vs through the sidecar, same run, upstream delay 0. Prints one JSON object.

Phases: start-up to ready; exact hits at concurrency 1 and 32; misses (unique prompts) at concurrency 1, direct and
through the sidecar; server CPU per request from the sidecar process's own CPU time; RSS after >= 10,000 requests.
Every loop is bounded in count and time. Not a test: run `make bench`.
`--baseline PATH` instead compares exact-hit CPU per request with another checkout, interleaved in one run;
`--callgrind HITS` counts instructions per exact hit under valgrind (with --baseline: for both trees).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import uvloop
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "sidecar"))
from llmgw_sidecar.devredis import free_port, standalone  # noqa: E402

TIME_CAP_S = 60.0  # no phase runs longer than this


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


async def load(session: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    lat: list[float] = []
    it = iter(bodies)
    deadline = time.monotonic() + TIME_CAP_S
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}

    async def worker() -> None:
        for body in it:
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "p50_ms": round(pct(lat, 0.5), 3), "p99_ms": round(pct(lat, 0.99), 3),
            "rps": round(len(lat) / wall, 1)}


def body(i: int | str) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"Benchmark question number {i}: what is the capital of France?"}]}).encode()


async def measure(side: psutil.Process, session: aiohttp.ClientSession, url: str, bodies: list[bytes],
                  conc: int) -> dict[str, float]:
    cpu0 = sum(side.cpu_times()[:2])
    res = await load(session, url, bodies, conc)
    res["server_cpu_ms_per_req"] = round((sum(side.cpu_times()[:2]) - cpu0) * 1000 / res["requests"], 3)
    return res


async def run(work: Path) -> dict[str, object]:
    redis = standalone(free_port(), work / "redis").start()
    up_port, side_port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up_port)])
    wait_for = time.monotonic() + 20
    cfg = {"listen": {"port": side_port}, "redis": {"url": redis.url},
           "models": [{"name": "gpt-4o-mini", "base_url": f"http://127.0.0.1:{up_port}/v1", "api_key": "sk-up"}]}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "sidecar")}
    t0 = time.perf_counter()
    sidecar = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "--log-level", "warning", "serve", "--config",
                                str(work / "config.yaml")], env=env)
    out: dict[str, object] = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
            while True:
                try:
                    async with s.get(f"http://127.0.0.1:{side_port}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > wait_for:
                    raise TimeoutError("sidecar not ready")
                await asyncio.sleep(0.005)
            out["startup_to_ready_s"] = round(time.perf_counter() - t0, 3)
            while True:  # the upstream answers once it accepts connections
                try:
                    async with s.post(f"http://127.0.0.1:{up_port}/v1/chat/completions", data=body("w")) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.01)
            side = psutil.Process(sidecar.pid)
            direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
            via = f"http://127.0.0.1:{side_port}/v1/chat/completions"
            hot = body("hot")
            await load(s, via, [hot] * 200, 1)  # warm-up: the first is a miss, then hits
            out["exact_hit_c1"] = await measure(side, s, via, [hot] * 2000, 1)
            out["exact_hit_c32"] = await measure(side, s, via, [hot] * 7000, 32)
            out["direct_c1"] = await load(s, direct, [body(f"d{i}") for i in range(1000)], 1)
            out["miss_c1"] = await measure(side, s, via, [body(f"m{i}") for i in range(1000)], 1)
            out["miss_overhead_p50_ms"] = round(out["miss_c1"]["p50_ms"] - out["direct_c1"]["p50_ms"], 3)
            total = sum(v["requests"] for k, v in out.items() if k in ("exact_hit_c1", "exact_hit_c32", "miss_c1"))
            out["requests_served"] = total + 200
            out["rss_mb_after_requests"] = round(side.memory_info().rss / 2**20, 1)
    finally:
        sidecar.terminate()
        upstream.terminate()
        sidecar.wait(10)
        upstream.wait(10)
        redis.kill()
    targets = {
        "exact_hit_cpu_ms_le_1.0": out["exact_hit_c1"]["server_cpu_ms_per_req"] <= 1.0,
        "exact_hit_p50_ms_c1_le_1.5": out["exact_hit_c1"]["p50_ms"] <= 1.5,
        "rps_c32_ge_1500": out["exact_hit_c32"]["rps"] >= 1500,
        "miss_overhead_p50_ms_le_2": out["miss_overhead_p50_ms"] <= 2.0,
        "ready_s_le_1.5": out["startup_to_ready_s"] <= 1.5,
        "rss_mb_le_80": out["rss_mb_after_requests"] <= 80,
    }
    out["targets_met"] = targets
    out["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    return out


async def _ready(s: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with s.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise TimeoutError(f"not ready: {url}")
        await asyncio.sleep(0.01)


async def compare(work: Path, baseline: Path, rounds: int, per_round: int) -> dict[str, object]:
    """Exact-hit CPU per request of THIS tree and of `baseline` (another checkout), side by side in one run: same
    Redis, same upstream, blocks of `per_round` hits alternating between the two, so machine load hits both alike.
    The medians of the rounds are compared."""
    redis = standalone(free_port(), work / "redis").start()
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up_port)])
    sides: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name, root in (("baseline", baseline), ("this_tree", ROOT)):
            port = free_port()
            cfg = {"listen": {"port": port}, "redis": {"url": redis.url, "key_prefix": f"bench-{name}"},
                   "models": [{"name": "gpt-4o-mini", "base_url": f"http://127.0.0.1:{up_port}/v1",
                               "api_key": "sk-up"}]}
            (work / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
            proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "--log-level", "warning", "serve",
                                     "--config", str(work / f"{name}.yaml")],
                                    env={**os.environ, "PYTHONPATH": str(root / "sidecar")}, cwd=root)
            sides[name] = (proc, f"http://127.0.0.1:{port}")
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        p50: dict[str, list[float]] = {name: [] for name in sides}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as s:
            for proc, url in sides.values():
                await _ready(s, url + "/readyz", proc)
            hot = body("hot")
            for _, url in sides.values():
                await load(s, url + "/v1/chat/completions", [hot] * 300, 1)  # miss, then hits; warm
            for r in range(rounds):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))
                for name in order:
                    proc, url = sides[name]
                    res = await measure(psutil.Process(proc.pid), s, url + "/v1/chat/completions", [hot] * per_round, 1)
                    cpu[name].append(res["server_cpu_ms_per_req"])
                    p50[name].append(res["p50_ms"])
    finally:
        for proc, _ in sides.values():
            proc.terminate()
            proc.wait(10)
        upstream.terminate()
        upstream.wait(10)
        redis.kill()

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    out: dict[str, object] = {name: {"exact_hit_cpu_ms_per_req_median": median(cpu[name]),
                                     "exact_hit_cpu_ms_per_req_min": min(cpu[name]),
                                     "exact_hit_p50_ms_median": median(p50[name]), "rounds_cpu_ms": cpu[name]}
                              for name in sides}
    out["cpu_ratio_this_over_baseline"] = round(median(cpu["this_tree"]) / median(cpu["baseline"]), 3)
    # Each round measures both back to back: the median of the per-round ratios cancels most of the machine's drift;
    # the ratio of the minima is the least disturbed view on a busy machine.
    out["cpu_ratio_paired_median"] = round(median([t / b for t, b in zip(cpu["this_tree"], cpu["baseline"],
                                                                         strict=True)]), 3)
    out["cpu_ratio_of_minima"] = round(min(cpu["this_tree"]) / min(cpu["baseline"]), 3)
    out["baseline_tree"] = str(baseline)
    out["machine"] = {"cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2)}
    return out


async def instructions(work: Path, root: Path, hits: int) -> int:
    """Instructions per exact hit of the sidecar from `root`, counted by valgrind's callgrind around `hits` hits only
    (warm-up excluded): independent of how busy the machine is. Spend is off so that its background loops (which
    run more often in valgrind's slow time) do not count."""
    import glob

    redis = standalone(free_port(), work / "redis").start()
    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up_port)])
    cfg = {"spend": {"enabled": False}, "listen": {"port": port},
           "redis": {"url": redis.url, "key_prefix": "bench-cg", "op_timeout_ms": 5000},
           "models": [{"name": "gpt-4o-mini", "base_url": f"http://127.0.0.1:{up_port}/v1", "api_key": "sk-up"}]}
    (work / "cg.yaml").write_text(yaml.safe_dump(cfg))
    out = work / "callgrind.out"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                             sys.executable, "-m", "llmgw_sidecar", "--log-level", "warning", "serve", "--config",
                             str(work / "cg.yaml")], env={**os.environ, "PYTHONPATH": str(root / "sidecar")},
                            cwd=root, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        hot = body("hot")
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 600  # start-up under valgrind takes a while
            while True:
                try:
                    async with s.get(url + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise TimeoutError("sidecar under valgrind not ready")
                await asyncio.sleep(0.5)
            await load(s, url + "/v1/chat/completions", [hot] * 100, 1)
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
            await load(s, url + "/v1/chat/completions", [hot] * hits, 1)
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=True)
    finally:
        proc.terminate()
        proc.wait(120)
        upstream.terminate()
        upstream.wait(10)
        redis.kill()
    total = 0
    for f in glob.glob(f"{out}*"):
        for line in Path(f).read_text().splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return round(total / hits)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--baseline", type=Path, help="another checkout (e.g. `git worktree add /tmp/base <commit>`): "
                   "compare exact-hit CPU per request with it, interleaved in one run")
    p.add_argument("--callgrind", type=int, metavar="HITS", help="instead: instructions per exact hit (valgrind "
                   "callgrind, HITS hits; with --baseline for both trees): a figure a busy machine does not move")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--per-round", type=int, default=1500)
    a = p.parse_args()
    uvloop.install()
    with tempfile.TemporaryDirectory() as d:
        if a.callgrind:
            result: dict[str, object] = {}
            for name, root in (("baseline", a.baseline), ("this_tree", ROOT)):
                if root is not None:
                    (Path(d) / name).mkdir()
                    result[f"{name}_instructions_per_exact_hit"] = asyncio.run(
                        instructions(Path(d) / name, root.resolve(), a.callgrind))
        elif a.baseline:
            result = asyncio.run(compare(Path(d), a.baseline.resolve(), a.rounds, a.per_round))
        else:
            result = asyncio.run(run(Path(d)))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

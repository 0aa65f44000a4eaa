"""Semantic cache benchmark: the real sidecar process (`llmgw-sidecar serve`), a real Redis Stack, the local model.

Measured end to end over HTTP, like the LiteLLM reference (16 ms per semantic hit):
  - semantic hit p50/p99 at concurrency 1, 16 and 32 (exact-cache miss + first stage + KNN + verification + full
    model + answer); every request is a paraphrase of a stored question, never an exact repeat
  - misses in the SAME conversation context as the stored questions (so the KNN finds candidates, as in real
    traffic): latency and sidecar CPU per request with the semantic cache on, and the same with it off
  - embedding alone in-process (fp32 and int8), mean micro-batch size under concurrency 16
  - the sidecar's RSS with the model loaded
`--compare DIR` runs the very same measurements, in the same run, against the sidecar source in DIR (e.g. a checkout
of an older commit: `git worktree add /tmp/before <commit>`), alternating before/after per phase, and prints both
plus the ratios. Prints one JSON object. Not a test: numbers depend on the machine.
Usage: python bench/semantic_bench.py [--n 400] [--compare DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import yaml

from llmgw_sidecar.devredis import free_port, standalone

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / ".cache" / "models" / "all-MiniLM-L6-v2-onnx"
PAIRS = REPO / "sidecar" / "llmgw_sidecar" / "embeddings" / "pairs" / "semantic_pairs.jsonl"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000, 2)


def config(redis_url: str, port: int, semantic: bool, precision: str = "fp32") -> dict:
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "gateway": {"name": "bench", "namespace": "bench"},
        "redis": {"url": redis_url, "key_prefix": f"b{uuid.uuid4().hex[:8]}", "op_timeout_ms": 200},
        "models": [{"name": "gpt-4o-mini", "provider": "mock", "mock": {"latency_ms": 0}}],
        "spend": {"enabled": False},
        # exact cache off: a repeated paraphrase must be a semantic hit every time, not an exact hit from the second on
        "cache": {"exact": {"enabled": False},
                  # a deadline that a busy 2-core machine meets at 32 clients: measure throughput, not timeouts
                  "semantic": {"enabled": semantic, "embedding": {"model_dir": str(MODEL_DIR), "precision": precision,
                                                                  "timeout_ms": 2000},
                               **({"first_stage_distance": float(os.environ["BENCH_FIRST_STAGE_DISTANCE"])}
                                  if os.environ.get("BENCH_FIRST_STAGE_DISTANCE") else {})}},
    }


async def start_sidecar(cfg: dict, workdir: Path, source: Path | None = None) -> subprocess.Popen:
    path = workdir / f"sidecar-{cfg['listen']['port']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if source is not None:  # another version of the sidecar (the --compare baseline)
        env["PYTHONPATH"] = f"{source / 'sidecar'}:{source}"
    proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "--log-level", "warning", "serve", "--config",
                             str(path)], env=env, stdout=subprocess.DEVNULL, stderr=open(workdir / "sidecar.log", "ab"))
    url = f"http://127.0.0.1:{cfg['listen']['port']}/readyz"
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("sidecar did not become ready")


async def ask(s: aiohttp.ClientSession, base: str, q: str, system: str = "bench") -> tuple[float, str]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}]}
    t0 = time.perf_counter()
    async with s.post(base + "/v1/chat/completions", json=body) as r:
        await r.read()
        return time.perf_counter() - t0, r.headers.get("x-llmgw-cache", "")


async def run_load(s: aiohttp.ClientSession, base: str, questions: list[str], n: int, conc: int) -> dict:
    lat: list[float] = []
    kinds: dict[str, int] = {}
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            dt, kind = await ask(s, base, questions[i % len(questions)])
            lat.append(dt)
            kinds[kind] = kinds.get(kind, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    wall = time.perf_counter() - t0
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "req_per_s": round(n / wall, 1), "results": kinds}


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def scrape(s: aiohttp.ClientSession, base: str, name: str) -> float:
    async with s.get(base + "/metrics") as r:
        text = await r.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


async def embed_only() -> dict:
    from llmgw_sidecar.embeddings.local import LocalEmbedder

    out = {}
    for precision in ("fp32", "int8"):
        e = LocalEmbedder(MODEL_DIR, precision=precision)
        q = "Which city is the capital of France?"
        for _ in range(20):
            e.embed_sync([q])
        lat = []
        for _ in range(200):
            t0 = time.perf_counter()
            e.embed_sync([q])
            lat.append(time.perf_counter() - t0)
        out[precision] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
        await e.close()
    return out


# questions on other topics than the stored ones (blind batches 3 and 4: ~350, so that one miss phase is long enough
# to measure CPU on a busy machine)
MISSES = [PAIRS.with_name(f"semantic_pairs_blind{n}.jsonl") for n in (3, 4)]


def miss_questions() -> list[str]:
    return sorted({p["a"] for f in MISSES for p in (json.loads(line) for line in f.read_text().splitlines()
                                                      if line.strip())})


async def measure(s: aiohttp.ClientSession, base: str, pid: int, paraphrases: list[dict], n: int) -> dict:
    """Store the originals, find the paraphrases that hit, then time hits and misses on one running sidecar."""
    for p in paraphrases:  # store the originals (misses, stored in the background)
        await ask(s, base, p["a"])
    await asyncio.sleep(1.0)
    hits = []
    for p in paraphrases:
        _, kind = await ask(s, base, p["b"])
        if kind == "hit-semantic":
            hits.append(p["b"])
    if not hits:
        raise RuntimeError("no paraphrase hit: nothing to measure")
    await run_load(s, base, hits, 50, 1)  # warm-up
    cpu0 = cpu_s(pid)
    c1 = await run_load(s, base, hits, n, 1)
    # CPU per hit: less sensitive than wall time to other processes on a shared machine
    c1["sidecar_cpu_ms_per_request"] = round((cpu_s(pid) - cpu0) / n * 1000, 2)
    batches_before = (await scrape(s, base, "llmgw_embedding_batch_size_sum"),
                      await scrape(s, base, "llmgw_embedding_batch_size_count"))
    c16 = await run_load(s, base, hits, n * 2, 16)
    batches_after = (await scrape(s, base, "llmgw_embedding_batch_size_sum"),
                     await scrape(s, base, "llmgw_embedding_batch_size_count"))
    c32 = await run_load(s, base, hits, n * 2, 32)
    mean_batch = (batches_after[0] - batches_before[0]) / max(batches_after[1] - batches_before[1], 1)
    await settle(pid)  # background stores of the load phases must not count as the misses' CPU
    # misses in the stored questions' own context: the KNN finds (far) candidates, as in real traffic
    lat = []
    kinds: dict[str, int] = {}
    questions = miss_questions()
    cpu0 = cpu_s(pid)
    for q in questions:
        dt, kind = await ask(s, base, q)
        lat.append(dt)
        kinds[kind] = kinds.get(kind, 0) + 1
    miss_cpu = round((cpu_s(pid) - cpu0) / len(questions) * 1000, 2)
    return {"paraphrase_queries_hitting": len(hits), "semantic_hit_http_c1": c1, "semantic_hit_http_c16": c16,
            "semantic_hit_http_c32": c32, "mean_embedding_batch_c16": round(mean_batch, 2),
            "miss_http": {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "sidecar_cpu_ms_per_request": miss_cpu,
                          "results": kinds},
            "rss_mb_with_model": rss_mb(pid)}


async def settle(pid: int, quiet_ms_per_s: float = 20.0, limit_s: float = 15.0) -> None:
    """Wait until the sidecar is idle (its background stores done)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        c0 = cpu_s(pid)
        await asyncio.sleep(0.5)
        if (cpu_s(pid) - c0) * 1000 / 0.5 < quiet_ms_per_s:
            return


async def miss_baseline(s: aiohttp.ClientSession, base: str, pid: int, n: int) -> dict:
    lat = []
    questions = miss_questions()
    cpu0 = cpu_s(pid)
    for q in questions:
        lat.append((await ask(s, base, q))[0])
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "sidecar_cpu_ms_per_request": round((cpu_s(pid) - cpu0) / len(questions) * 1000, 2), "rss_mb": rss_mb(pid)}


async def main(n: int, precision: str, compare: Path | None, compare_precision: str = "fp32") -> dict:
    if not (MODEL_DIR / "llmgw-model.json").exists():
        raise SystemExit(f"no model in {MODEL_DIR}: run `make model` first")
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    paraphrases = [p for p in pairs if p["label"] == "hit"]
    versions: list[tuple[str, Path | None]] = [("after", None)]
    if compare is not None:
        versions.insert(0, ("before", compare))
    out: dict = {"machine_cpus": os.cpu_count(),
                 "model": f"all-MiniLM-L6-v2 {precision} (before: {compare_precision}; onnxruntime, 1 thread)",
                 "paraphrases_stored": len(paraphrases)}
    with tempfile.TemporaryDirectory(prefix="llmgw-sembench-") as tmp:
        work = Path(tmp)
        redis = standalone(free_port(), work / "redis").start()
        try:
            conn = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=conn) as s:
                off_port = free_port()
                off = await start_sidecar(config(redis.url, off_port, False), work)
                try:
                    for label, source in versions:  # before and after back to back, each on a fresh sidecar + prefix
                        port = free_port()
                        prec = compare_precision if source is not None else precision
                        proc = await start_sidecar(config(redis.url, port, True, prec), work, source)
                        try:
                            out[label] = await measure(s, f"http://127.0.0.1:{port}", proc.pid, paraphrases, n)
                        finally:
                            proc.terminate()
                            proc.wait(10)
                    out["miss_http_semantic_off"] = await miss_baseline(s, f"http://127.0.0.1:{off_port}", off.pid, n)
                finally:
                    off.terminate()
                    off.wait(10)
        finally:
            redis.kill()
    off_cpu = out["miss_http_semantic_off"]["sidecar_cpu_ms_per_request"]
    for label, _ in versions:
        m = out[label]
        m["semantic_cpu_ms_per_miss"] = round(m["miss_http"]["sidecar_cpu_ms_per_request"] - off_cpu, 2)
    if compare is not None:
        b, a = out["before"], out["after"]
        out["after_vs_before"] = {
            "semantic_cpu_per_miss_ratio": round(a["semantic_cpu_ms_per_miss"] / max(b["semantic_cpu_ms_per_miss"], 1e-9), 2),
            "hit_p50_c1_ratio": round(a["semantic_hit_http_c1"]["p50_ms"] / b["semantic_hit_http_c1"]["p50_ms"], 2),
            "hit_throughput_c32_ratio": round(a["semantic_hit_http_c32"]["req_per_s"]
                                              / b["semantic_hit_http_c32"]["req_per_s"], 2),
            "rss_mb": [b["rss_mb_with_model"], a["rss_mb_with_model"]],
        }
    out["embedding_only_in_process"] = await embed_only()
    out["load_average_1m_at_end"] = os.getloadavg()[0]
    out["litellm_reference"] = {"semantic_hit_p50_ms": 16, "rss_mb": "310-390"}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="requests at concurrency 1 (twice as many at 16)")
    ap.add_argument("--precision", choices=["fp32", "int8"], default="int8", help="local model precision")
    ap.add_argument("--compare-precision", choices=["fp32", "int8"], default="fp32",
                    help="precision of the --compare sidecar (fp32: the default before int8 became it)")
    ap.add_argument("--compare", type=Path, help="source tree of the sidecar to measure as 'before', same run")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.n, args.precision, args.compare, args.compare_precision)), indent=2))

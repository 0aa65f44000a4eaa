"""Semantic cache benchmark: the real sidecar process (`llmgw-sidecar serve`), a real Redis Stack, the local model.

Measured end to end over HTTP, like the LiteLLM reference (16 ms per semantic hit):
  - semantic hit p50/p99 at concurrency 1 and 16 (exact-cache miss + embedding + KNN + guards + answer); every request
    is a paraphrase of a stored question, never an exact repeat
  - a miss with the semantic cache on vs off (embedding + KNN + background store) against a 0 ms mock upstream
  - embedding alone in-process (fp32 and int8), mean micro-batch size under concurrency 16
  - the sidecar's RSS with the model loaded
Prints one JSON object. Not a test: numbers depend on the machine. Usage: python bench/semantic_bench.py [--n 400]
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
PAIRS = REPO / "tests" / "data" / "semantic_pairs.jsonl"


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
        "cache": {"semantic": {"enabled": semantic, "embedding": {"model_dir": str(MODEL_DIR), "precision": precision}}},
    }


async def start_sidecar(cfg: dict, workdir: Path) -> subprocess.Popen:
    path = workdir / f"sidecar-{cfg['listen']['port']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
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


async def main(n: int, precision: str) -> dict:
    if not (MODEL_DIR / "llmgw-model.json").exists():
        raise SystemExit(f"no model in {MODEL_DIR}: run `make model` first")
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    paraphrases = [p for p in pairs if p["label"] == "hit"]
    with tempfile.TemporaryDirectory(prefix="llmgw-sembench-") as tmp:
        work = Path(tmp)
        redis = standalone(free_port(), work / "redis").start()
        procs: list[subprocess.Popen] = []
        try:
            on_port, off_port = free_port(), free_port()
            procs.append(await start_sidecar(config(redis.url, on_port, True, precision), work))
            procs.append(await start_sidecar(config(redis.url, off_port, False), work))
            on, off = f"http://127.0.0.1:{on_port}", f"http://127.0.0.1:{off_port}"
            conn = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=conn) as s:
                for p in paraphrases:  # store the originals (misses, stored in the background)
                    await ask(s, on, p["a"])
                await asyncio.sleep(1.0)
                hits = []
                for p in paraphrases:
                    _, kind = await ask(s, on, p["b"])
                    if kind == "hit-semantic":
                        hits.append(p["b"])
                await run_load(s, on, hits, 50, 1)  # warm-up
                cpu0 = cpu_s(procs[0].pid)
                c1 = await run_load(s, on, hits, n, 1)
                # CPU per hit: less sensitive than wall time to other processes on a shared machine
                c1["sidecar_cpu_ms_per_request"] = round((cpu_s(procs[0].pid) - cpu0) / n * 1000, 2)
                # the same app path answered by the exact cache: what the semantic layer adds is the difference
                cpu0 = cpu_s(procs[0].pid)
                exact = await run_load(s, on, [p["a"] for p in paraphrases], n, 1)
                exact["sidecar_cpu_ms_per_request"] = round((cpu_s(procs[0].pid) - cpu0) / n * 1000, 2)
                batches_before = (await scrape(s, on, "llmgw_embedding_batch_size_sum"),
                                  await scrape(s, on, "llmgw_embedding_batch_size_count"))
                c16 = await run_load(s, on, hits, n * 2, 16)
                batches_after = (await scrape(s, on, "llmgw_embedding_batch_size_sum"),
                                 await scrape(s, on, "llmgw_embedding_batch_size_count"))
                mean_batch = (batches_after[0] - batches_before[0]) / max(batches_after[1] - batches_before[1], 1)
                # misses: a fresh conversation each time, so neither cache can answer
                miss_on, miss_off = [], []
                for i in range(n // 2):
                    q = f"Tell me something interesting about topic {uuid.uuid4().hex[:6]}"
                    miss_on.append((await ask(s, on, q, system=f"miss {i} {uuid.uuid4().hex}"))[0])
                    miss_off.append((await ask(s, off, q, system=f"miss {i} {uuid.uuid4().hex}"))[0])
                rss = rss_mb(procs[0].pid)
                rss_off = rss_mb(procs[1].pid)
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
            redis.kill()
    return {
        "machine_cpus": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "model": f"all-MiniLM-L6-v2 {precision} (onnxruntime, 1 intra-op thread)",
        "paraphrases_stored": len(paraphrases), "paraphrase_queries_hitting": len(hits),
        "semantic_hit_http_c1": c1,
        "semantic_hit_http_c16": c16,
        "exact_hit_http_c1_same_sidecar": exact,
        "mean_embedding_batch_c16": round(mean_batch, 2),
        "miss_http_semantic_on": {"p50_ms": pct(miss_on, 50), "p99_ms": pct(miss_on, 99)},
        "miss_http_semantic_off": {"p50_ms": pct(miss_off, 50), "p99_ms": pct(miss_off, 99)},
        "miss_added_p50_ms": round(pct(miss_on, 50) - pct(miss_off, 50), 2),
        "embedding_only_in_process": await embed_only(),
        "rss_mb_with_model": rss,
        "rss_mb_without_semantic": rss_off,
        "litellm_reference": {"semantic_hit_p50_ms": 16, "rss_mb": "310-390"},
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="requests at concurrency 1 (twice as many at 16)")
    ap.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="local model precision")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.n, args.precision)), indent=2))

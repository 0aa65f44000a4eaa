"""Secrets scan: the configured credentials (upstream keys inline, from the environment and from a file; the Redis
password) appear nowhere a client, an operator or Redis can read: not in error bodies (an upstream that quotes the
key it was sent is scrubbed), logs, check-config output, /metrics or any Redis key or value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import redis
import yaml

from llmgw_sidecar.devredis import free_port
from tests.fake_upstream import FakeUpstream
from tests.integration.rawhttp import request
from tests.redis_servers import standalone
from tests.servers import wait_ready

ROOT = Path(__file__).resolve().parents[2]
KEY_INLINE = "sk-inline-" + uuid.uuid4().hex
KEY_ENV = "sk-env-" + uuid.uuid4().hex
KEY_FILE = "sk-file-" + uuid.uuid4().hex
REDIS_PASSWORD = "redis-pw-" + uuid.uuid4().hex
SECRETS = (KEY_INLINE, KEY_ENV, KEY_FILE, REDIS_PASSWORD)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmgw_sidecar", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": f"{ROOT / 'sidecar'}:{ROOT}", **(env or {})})


def test_secrets_never_leave_the_gateway(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    r = standalone(free_port(), tmp_path / "redis").start()
    admin = redis.Redis(port=r.port)
    admin.config_set("requirepass", REDIS_PASSWORD)  # (set after start: the start-up probe speaks without AUTH)
    admin.close()
    try:
        _scan(tmp_path, fake_upstream, r.port)
    finally:
        r.kill()


def _scan(tmp_path: Path, fake_upstream: FakeUpstream, redis_port: int) -> None:
    (tmp_path / "key").write_text(KEY_FILE + "\n")
    port, prefix = free_port(), f"sec{uuid.uuid4().hex[:8]}"
    up = fake_upstream.url  # type: ignore[attr-defined]
    cfg = {"listen": {"port": port}, "gateway": {"name": "secrets"},
           "redis": {"url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0", "key_prefix": prefix},
           "models": [{"name": "echo-key", "base_url": up, "api_key": KEY_INLINE, "retry": {"max_retries": 0}},
                      {"name": "error-event", "base_url": up, "api_key": "os.environ/LLMGW_TEST_KEY"},
                      {"name": "ok", "base_url": up, "api_key_file": str(tmp_path / "key")},
                      {"name": "env-echo", "model": "echo-key", "base_url": up, "api_key": "os.environ/LLMGW_TEST_KEY",
                       "retry": {"max_retries": 0}},
                      {"name": "file-echo", "model": "echo-key", "base_url": up,
                       "api_key_file": str(tmp_path / "key"), "retry": {"max_retries": 0}}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {"LLMGW_TEST_KEY": KEY_ENV}
    outputs: list[str] = []

    # check-config: valid, and a broken file whose offending line holds a key
    res = cli("check-config", str(path), env=env)
    assert res.returncode == 0, res.stderr
    outputs += [res.stdout, res.stderr]
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"models:\n  - name: a\n    api_key: {KEY_INLINE}: oops\n")
    res = cli("check-config", str(broken), env=env)
    assert res.returncode == 2 and "line 3" in res.stderr
    outputs += [res.stdout, res.stderr]

    log = (tmp_path / "sidecar.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "--log-level", "debug", "serve", "--config",
                             str(path)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **env, "PYTHONPATH": f"{ROOT / 'sidecar'}:{ROOT}"})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(proc, url, tmp_path / "sidecar.log")
        jh = [(b"Content-Type", b"application/json")]
        for model, stream in (("echo-key", False), ("env-echo", False), ("file-echo", False), ("error-event", True),
                              ("ok", False), ("ok", True)):
            body = json.dumps({"model": model, "stream": stream,
                               "messages": [{"role": "user", "content": f"secret scan {model} one two"}]}).encode()
            ans = request(port, b"POST", b"/v1/chat/completions", jh, body)
            assert ans is not None
            outputs.append(ans.body.decode(errors="replace"))
            outputs.append(json.dumps(ans.headers))
            if model.endswith("echo") or model == "echo-key":
                assert ans.status == 401 and "***" in ans.body.decode(), ans.body  # relayed, with the key masked
        assert fake_upstream._auth in (KEY_INLINE, KEY_ENV, KEY_FILE)  # the upstream did get a real key
        with urllib.request.urlopen(url + "/metrics", timeout=5) as m:
            outputs.append(m.read().decode())
        time.sleep(1.5)  # spend hand-off and background stores land in Redis
        c = redis.Redis(port=redis_port, password=REDIS_PASSWORD)
        try:
            keys = list(c.scan_iter("*", count=1000))
            assert any(k.decode().startswith(prefix) for k in keys)  # the gateway did write to Redis
            for k in keys:
                outputs.append(k.decode(errors="replace"))
                kind = c.type(k).decode()
                if kind == "string":
                    outputs.append(c.get(k).decode(errors="replace"))  # type: ignore[union-attr]
                elif kind == "hash":
                    outputs.append(repr(c.hgetall(k)))
                elif kind == "list":
                    outputs.append(repr(c.lrange(k, 0, -1)))
                elif kind == "zset":
                    outputs.append(repr(c.zrange(k, 0, -1, withscores=True)))
                elif kind == "set":
                    outputs.append(repr(c.smembers(k)))
        finally:
            c.close()
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    outputs.append((tmp_path / "sidecar.log").read_text())
    text = "\n".join(outputs)
    for s in SECRETS:
        assert s not in text, f"secret {s[:10]}... leaked: ...{text[max(0, text.find(s) - 200):text.find(s) + 50]}"

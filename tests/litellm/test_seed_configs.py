"""The two LiteLLM seed configs (examples/litellm/) run unchanged in a real `llmgw-sidecar serve` process, with
REDIS_HOST/REDIS_PORT/REDIS_PASSWORD from the environment, and give an exact hit and a semantic hit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis

from tests.litellm.bow_upstream import BowUpstream
from tests.redis_servers import RedisProcess, free_port, standalone
from tests.servers import ThreadServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "litellm"
PASSWORD = "seed-pw"


@pytest.fixture(scope="module")
def redis_pw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    r = standalone(free_port(), tmp_path_factory.mktemp("redis-seed")).start()
    admin = redis.Redis(port=r.port)
    admin.config_set("requirepass", PASSWORD)
    admin.close()
    yield r
    r.kill()


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[BowUpstream, str]]:
    fu = BowUpstream()
    srv = ThreadServer(fu.app).start()
    yield fu, srv.url + "/v1"
    srv.stop()


def start_sidecar(config: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    full = {**{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OPENAI_"))}, **env,
            "PYTHONPATH": os.pathsep.join([str(REPO / "sidecar"), str(REPO)])}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "serve", "--config", str(config),
                                 "--port", str(port)], env=full, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    import urllib.request

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sidecar exited {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"sidecar did not start: {log.read_text()}")


def seed_env(redis_port: int, upstream_url: str) -> dict[str, str]:
    return {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port), "REDIS_PASSWORD": PASSWORD,
            "OPENAI_API_KEY": "sk-upstream", "OPENAI_API_BASE": upstream_url}


def ask(client: openai.OpenAI, question: str) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
    return raw.headers["x-llmgw-cache"], raw.parse().choices[0].message.content or ""


def wait_hit(client: openai.OpenAI, question: str, want: str) -> tuple[str, str]:
    """Stores happen after the answer went out: ask again until the entry is there (bounded)."""
    for _ in range(100):
        got = ask(client, question)
        if got[0] == want:
            return got
        time.sleep(0.05)
    return got


def test_exact_seed_config(redis_pw: RedisProcess, upstream, tmp_path: Path) -> None:
    fu, url = upstream
    proc, port = start_sidecar(EXAMPLES / "exact.yaml", seed_env(redis_pw.port, url), tmp_path / "exact.log")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-app", max_retries=0)
        q = f"exact seed question {time.time()}"
        assert ask(client, q) == ("miss", f"echo: {q}")
        assert wait_hit(client, q, "hit-exact") == ("hit-exact", f"echo: {q}")
        assert fu.calls[-1]["headers"]["Authorization"] == "Bearer sk-upstream"
    finally:
        proc.terminate()
        proc.wait(10)
    log = (tmp_path / "exact.log").read_text()
    assert f"redis: standalone 127.0.0.1:{redis_pw.port}, from the LiteLLM config's cache_params" in log
    assert PASSWORD not in log


def test_semantic_seed_config(redis_pw: RedisProcess, upstream, tmp_path: Path) -> None:
    fu, url = upstream
    proc, port = start_sidecar(EXAMPLES / "semantic.yaml", seed_env(redis_pw.port, url), tmp_path / "sem.log")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-app", max_retries=0)
        tag = f"zq{int(time.time() * 1000)}"
        q1 = f"what is the capital city of {tag} country"
        assert ask(client, q1) == ("miss", f"echo: {q1}")
        wait_hit(client, q1, "hit-exact")
        # The semantic entry is written in the background after the exact one: wait until Redis holds it.
        r = redis.Redis(port=redis_pw.port, password=PASSWORD)
        for _ in range(100):
            if next(iter(r.scan_iter("llmgw:sem:*:*")), None) is not None:
                break
            time.sleep(0.05)
        r.close()
        result, answer = ask(client, f"tell me what the capital city of {tag} country is")
        assert (result, answer) == ("hit-semantic", f"echo: {q1}")
        unrelated = f"how do I bake sourdough bread {tag}"
        assert ask(client, unrelated)[0] == "miss"
        assert any(c["path"] == "/v1/embeddings" and c["body"]["model"] == "text-embedding-3-small" for c in fu.calls)
    finally:
        proc.terminate()
        proc.wait(10)
    log = (tmp_path / "sem.log").read_text()
    assert "from the environment (REDIS_PASSWORD, REDIS_HOST, REDIS_PORT" in log
    assert PASSWORD not in log


def test_nothing_set_exits_2_with_litellms_message(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("REDIS_")},
           "PYTHONPATH": os.pathsep.join([str(REPO / "sidecar"), str(REPO)]), "OPENAI_API_KEY": "x"}
    p = subprocess.run([sys.executable, "-m", "llmgw_sidecar", "serve", "--config", str(EXAMPLES / "semantic.yaml")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "Either 'REDIS_URL' or both 'REDIS_HOST' and 'REDIS_PORT' must be specified for Redis." in p.stderr
    assert "Traceback" not in p.stderr

"""Property-based fuzzing of a real sidecar process (hypothesis, fixed seed, bounded count).

Every generated request, however hostile (random methods, paths, header bytes, cache controls, encodings, JSON of
any shape and depth, token arrays, raw bytes), must get an answer that is not a 5xx; every 4xx is OpenAI-style
JSON; the process stays up, never logs a traceback or an ERROR line, and a normal request still hits afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from llmgw_sidecar.devredis import free_port
from tests.fake_upstream import FakeUpstream
from tests.integration.rawhttp import request
from tests.servers import wait_ready

EXAMPLES = 400  # bounded: ~10-20 s on a busy 2-core machine
SEED = 20261130
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, redis_standalone: str,
            fake_upstream: FakeUpstream) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    cfg = {"listen": {"port": port, "read_timeout_s": 2, "max_body_bytes": 65536},
           "gateway": {"name": f"fuzz-{uuid.uuid4().hex[:6]}"},
           "redis": {"url": redis_standalone, "key_prefix": f"fz{uuid.uuid4().hex[:8]}"},
           "limits": {"scopes": [{"scope": "namespace", "rpm": 1_000_000, "tpm": 10**12}]},
           "models": [{"name": "ok", "base_url": fake_upstream.url, "api_key": "sk-fuzz-upstream",  # type: ignore[attr-defined]
                       "timeouts": {"first_byte_s": 2, "total_s": 5}, "retry": {"max_retries": 0}},
                      {"name": "mock", "provider": "mock"}]}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    log = (work / "sidecar.log").open("w+")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'sidecar'}:{ROOT}"}
    proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "--log-level", "info", "serve", "--config",
                             str(work / "config.yaml")], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, work / "sidecar.log")
    yield {"port": port, "proc": proc, "log": work / "sidecar.log", "statuses": Counter()}
    proc.terminate()
    proc.wait(10)
    log.close()


# --- what a hostile client sends --------------------------------------------------------------------------------
header_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
digits = st.sampled_from(["0", "1", "60", "99999999999999999999", "\u00b2", "\u0661\u0662", "\uff11", "-1", "1.5", "",
                          "1e9", " 5 ", '"7"'])
cache_control = st.lists(st.one_of(
    st.sampled_from(["no-cache", "no-store", "private", "only-if-cached", "max-stale", "no-transform"]),
    st.builds(lambda n, v: f"{n}={v}", st.sampled_from(["max-age", "s-maxage", "min-fresh", "max-stale"]), digits),
    st.text(max_size=12)), max_size=4).map(lambda parts: ", ".join(parts).encode("utf-8", "surrogatepass"))

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False,
                      allow_infinity=False), st.text(max_size=30))
json_any = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=25)
seconds = st.one_of(st.integers(-5, 10**20), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5),
                    st.booleans(), st.none())
cache_field = st.dictionaries(st.sampled_from(["ttl", "s-maxage", "s_maxage", "no-cache", "no-store", "namespace",
                                               "use-cache", "bogus"]),
                              st.one_of(seconds, st.text(max_size=200), json_any), max_size=4)
token_arrays = st.one_of(st.lists(st.integers(0, 100_000), min_size=1, max_size=8),
                         st.lists(st.lists(st.integers(0, 100_000), max_size=5), min_size=1, max_size=4),
                         st.lists(st.text(max_size=10), min_size=1, max_size=4))
content = st.one_of(st.text(max_size=200), st.none(), st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(st.text(max_size=50), json_any)}), json_any),
    max_size=3), json_any)
message = st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool"]), json_any),
                                 "content": content})


def nest(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v]
    return v


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(path, body) pairs: mostly near-valid OpenAI requests with hostile values, sometimes anything at all."""
    kind = draw(st.sampled_from(["chat"] * 5 + ["completions", "embeddings", "json", "bytes", "deep"]))
    model = draw(json_any) if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(["ok", "mock"]))
    if kind == "chat":
        plain = st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=40)})
        msgs = draw(st.lists(plain, min_size=1, max_size=2) if draw(st.booleans()) else st.lists(message, max_size=3))
        body: Any = {"model": model, "messages": msgs}
        for f, strat in (("stream", st.one_of(st.booleans(), json_any)), ("max_tokens", seconds),
                         ("temperature", st.one_of(st.floats(allow_nan=False, allow_infinity=False), json_any)),
                         ("n", seconds), ("cache", st.one_of(cache_field, json_any)), ("metadata", json_any),
                         ("stream_options", st.one_of(st.fixed_dictionaries({"include_usage": json_any}), json_any)),
                         ("tools", json_any), ("user", json_any)):
            if draw(st.integers(0, 5)) == 0:
                body[f] = draw(strat)
        path = b"/v1/chat/completions"
    elif kind in ("completions", "embeddings"):
        field = "prompt" if kind == "completions" else "input"
        body = {"model": model, field: draw(st.one_of(token_arrays, st.text(max_size=50), json_any))}
        if draw(st.booleans()):
            body["cache"] = draw(cache_field)
        path = b"/v1/" + kind.encode()
    elif kind == "json":
        body, path = draw(json_any), draw(st.sampled_from([b"/v1/chat/completions", b"/v1/completions",
                                                           b"/v1/embeddings"]))
    elif kind == "deep":
        body = {"model": "ok", "messages": [{"role": "user", "content": "deep"}],
                "metadata": nest(draw(st.integers(30, 1500)))}
        path = b"/v1/chat/completions"
    else:
        return b"/v1/chat/completions", draw(st.binary(max_size=300))
    return path, json.dumps(body).encode()


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    path, body = draw(bodies())
    method = b"POST" if draw(st.integers(0, 9)) else draw(st.sampled_from([b"GET", b"PUT", b"DELETE", b"OPTIONS",
                                                                           b"PATCH", b"BREW"]))
    if draw(st.integers(0, 9)) == 0:
        path = draw(st.sampled_from([b"/", b"/v1/models", b"/healthz", b"/readyz", b"/spend", b"/spend?day=x",
                                     b"/v1/nothing", b"/%ff%fe", b"/v1/chat/completions?x=\xff", b"/metrics",
                                     b"/admin/cache/entries", b"/admin/cache/entry?key=\xff", b"/spend/scopes",
                                     b"/admin/cache/invalidate", b"/cache/ping", b"/cache/delete", b"/cache/flushall",
                                     b"/health/readiness", b"/spend?last=-1"]))
    ctype = draw(header_bytes) if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(
        [b"application/json"] * 6 + [b"application/json; charset=utf-8", b"text/plain", b"application/json; x=\xff"]))
    headers: list[tuple[bytes, bytes]] = [(b"Content-Type", ctype)]
    for name, strat in ((b"Cache-Control", cache_control), (b"x-request-id", header_bytes),
                        (b"Authorization", header_bytes.map(lambda b: b"Bearer " + b)),
                        (b"Content-Encoding", st.one_of(st.sampled_from([b"gzip", b"deflate", b"br", b"identity",
                                                                          b"x-unknown"]), header_bytes)),
                        (b"X-Fuzz", header_bytes), (b"Accept-Encoding", header_bytes)):
        if draw(st.integers(0, 7)) == 0:
            headers.append((name, draw(strat)))
    return method, path, headers, body


@seed(SEED)
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(req=hostile_requests())
def test_fuzz_never_5xx_and_4xx_are_openai_json(sidecar: dict[str, Any], req: Any) -> None:
    method, path, headers, body = req
    ans = request(sidecar["port"], method, path, headers, body, timeout=15)
    assert ans is not None, f"no answer to {req!r}"
    sidecar["statuses"][ans.status] += 1
    assert ans.status < 500, (req, ans.status, ans.body[:300])
    if ans.status >= 400:
        assert ans.is_openai_error(), (req, ans.status, ans.headers, ans.body[:300])
    assert b"sk-fuzz-upstream" not in ans.body


def test_after_fuzzing_alive_quiet_and_still_hitting(sidecar: dict[str, Any]) -> None:
    """Runs after the fuzz test (file order): the same process, still serving and caching, and a clean log."""
    assert sidecar["proc"].poll() is None, "the sidecar died"
    body = [(b"Content-Type", b"application/json")]
    payload = json.dumps({"model": "ok", "messages": [{"role": "user", "content": "after the fuzz"}]}).encode()
    first = request(sidecar["port"], b"POST", b"/v1/chat/completions", body, payload)
    assert first is not None and first.status == 200
    deadline = time.monotonic() + 5
    while True:
        again = request(sidecar["port"], b"POST", b"/v1/chat/completions", body, payload)
        assert again is not None and again.status == 200
        if again.headers.get("x-llmgw-cache") == "hit-exact":
            break
        assert time.monotonic() < deadline, "no cache hit after fuzzing"
        time.sleep(0.05)
    text = sidecar["log"].read_text()
    assert "Traceback" not in text, text[-3000:]
    assert " ERROR " not in text, [line for line in text.splitlines() if " ERROR " in line][:5]
    assert "sk-fuzz-upstream" not in text
    # the fuzz reached past validation (2xx) as well as into it (4xx): it is not only exercising the parser
    statuses = sidecar["statuses"]
    print(f"fuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    if statuses:  # empty when this test runs alone
        assert sum(n for s, n in statuses.items() if s < 300) > 10 and sum(statuses.values()) >= EXAMPLES // 2

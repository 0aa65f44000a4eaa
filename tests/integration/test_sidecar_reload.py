"""The sidecar reloads its mounted config file (ConfigMap updates) without a restart; a bad file keeps the old one."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import openai
import pytest
import yaml

from llmgw_sidecar.app import create_app
from llmgw_sidecar.config import load_config
from llmgw_sidecar.metrics import Metrics
from tests.servers import ThreadServer


def _wait(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_reload_adds_model_and_ignores_invalid_file(tmp_path: Path, redis_standalone: str) -> None:
    path = tmp_path / "config.yaml"
    doc = {"redis": {"url": redis_standalone, "key_prefix": "reload"}, "models": [{"name": "a", "provider": "mock"}]}
    path.write_text(yaml.safe_dump(doc))
    metrics = Metrics()
    srv = ThreadServer(lambda: create_app(load_config(path), config_path=path, metrics=metrics,
                                          reload_interval_s=0.05)).start()
    try:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        assert [m.id for m in c.models.list()] == ["a"]
        doc["models"].append({"name": "b", "provider": "mock"})
        path.write_text(yaml.safe_dump(doc))
        _wait(lambda: [m.id for m in c.models.list()] == ["a", "b"])
        assert c.chat.completions.create(model="b", messages=[{"role": "user", "content": "x"}]).choices
        path.write_text("models: [ {name: broken, provider: nowhere} ]\n")
        _wait(lambda: metrics.config_reloads.labels("invalid")._value.get() == 1)
        assert [m.id for m in c.models.list()] == ["a", "b"]
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])
    finally:
        srv.stop()


def test_requests_in_flight_during_reload_are_recorded_exactly_once(tmp_path: Path, redis_standalone: str,
                                                                    fake_upstream) -> None:
    """A 2 s streamed request and a 2 s plain one both span a reload: each is answered in full and recorded once
    (the old runtime drains them, hands its spend off, and only then closes)."""
    import http.client
    import json
    import threading
    import uuid

    from llmgw_sidecar.app import RUNTIME

    path = tmp_path / "config.yaml"
    up = {"provider": "openai", "base_url": fake_upstream.url, "api_key": "sk-upstream",
          "timeouts": {"first_byte_s": 5, "total_s": 10}}
    doc = {"gateway": {"name": f"reload-{uuid.uuid4().hex[:6]}"},
           "redis": {"url": redis_standalone, "key_prefix": f"rl{uuid.uuid4().hex[:8]}"},
           "spend": {"flush_interval_s": 0.1}, "cache": {"exact": {"enabled": False}},
           "models": [{"name": "slow-stream", **up}, {"name": "slow", **up}]}
    path.write_text(yaml.safe_dump(doc))
    fake_upstream.slow_s, fake_upstream.slow_chunk_s = 2.0, 0.4
    srv = ThreadServer(lambda: create_app(load_config(path), config_path=path, metrics=Metrics(),
                                          reload_interval_s=0.05)).start()
    results: dict[str, tuple[int, bytes]] = {}

    def call(model: str, stream: bool) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "a b c d"}]}
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        results[model] = (r.status, r.read())
        conn.close()

    try:
        old = srv.app[RUNTIME].current
        threads = [threading.Thread(target=call, args=("slow-stream", True)),
                   threading.Thread(target=call, args=("slow", False))]
        for t in threads:
            t.start()
        _wait(lambda: old.inflight == 2)
        doc["models"].append({"name": "new", "provider": "mock"})
        path.write_text(yaml.safe_dump(doc))
        _wait(lambda: srv.app[RUNTIME].current is not old)
        assert old.inflight == 2 and not old.closed  # swapped while both are still running on the old runtime
        for t in threads:
            t.join(20)
        status, raw = results["slow-stream"]
        assert status == 200 and raw.rstrip().endswith(b"data: [DONE]") and b'"error"' not in raw
        assert results["slow"][0] == 200
        _wait(lambda: old.closed, timeout=10)

        def totals() -> dict:
            with urllib.request.urlopen(srv.url + "/spend", timeout=5) as r:
                return json.loads(r.read())["totals"]

        _wait(lambda: totals()["requests"] == 2, timeout=10)
        time.sleep(0.5)  # several flush intervals later: still exactly once each
        assert totals()["requests"] == 2
    finally:
        srv.stop()


def test_upstream_switch_never_serves_the_old_upstreams_answer(tmp_path: Path, redis_standalone: str,
                                                               fake_upstream) -> None:
    """Same public model name, same question: after a reload that changes the upstream (mock -> OpenAI-compatible,
    base URL, upstream model, Azure deployment and api-version) the first answer is a miss from the new upstream."""
    import uuid

    from tests.fake_upstream import FakeUpstream

    other = FakeUpstream()
    other_srv = ThreadServer(other.app).start()
    path = tmp_path / "config.yaml"
    redis = {"url": redis_standalone, "key_prefix": f"sw{uuid.uuid4().hex[:8]}"}
    a, b = fake_upstream.url, other_srv.url + "/v1"
    steps = [
        {"provider": "mock"},
        {"provider": "openai", "base_url": a, "model": "ok"},
        {"provider": "openai", "base_url": b, "model": "ok"},
        {"provider": "openai", "base_url": b, "model": "tools"},
        {"provider": "azure", "base_url": b.removesuffix("/v1"), "model": "dep-1", "api_version": "2024-06-01"},
        {"provider": "azure", "base_url": b.removesuffix("/v1"), "model": "dep-2", "api_version": "2024-06-01"},
        {"provider": "azure", "base_url": b.removesuffix("/v1"), "model": "dep-2", "api_version": "2024-10-21"},
    ]
    path.write_text(yaml.safe_dump({"redis": redis, "models": [{"name": "m", **steps[0]}]}))
    srv = ThreadServer(lambda: create_app(load_config(path), config_path=path, metrics=Metrics(),
                                          reload_interval_s=0.05)).start()
    try:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        msgs = [{"role": "user", "content": "which upstream answers?"}]
        from llmgw_sidecar.app import RUNTIME

        def serves(step: dict[str, str]) -> bool:
            m = srv.app[RUNTIME].current.config.models[0]
            return all(str(getattr(m, k)) == v for k, v in step.items())

        for i, step in enumerate(steps):
            if i:
                # written whole (a reader never sees half a file), and waited for until the running config IS this
                # step: a second reload of the previous file once counted as "a new runtime" and failed this test
                tmp = path.with_suffix(".tmp")
                tmp.write_text(yaml.safe_dump({"redis": redis, "models": [{"name": "m", **step}]}))
                tmp.replace(path)
                _wait(lambda step=step: serves(step))
            first = c.chat.completions.with_raw_response.create(model="m", messages=msgs)
            assert first.headers["x-llmgw-cache"] == "miss", (i, step)  # never the previous upstream's answer
            _wait(lambda: c.chat.completions.with_raw_response.create(model="m", messages=msgs)
                  .headers["x-llmgw-cache"] == "hit-exact")  # and its own answer is cached
        assert [call["path"] for call in other.calls][-3:] == ["/openai/deployments/dep-1/chat/completions",
                                                                "/openai/deployments/dep-2/chat/completions",
                                                                "/openai/deployments/dep-2/chat/completions"]
    finally:
        srv.stop()
        other_srv.stop()

"""The sidecar reloads its mounted config file (ConfigMap updates) without a restart; a bad file keeps the old one."""

from __future__ import annotations

import time
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

"""Fixtures for sidecar integration tests: a fake upstream and sidecars under test, both real HTTP servers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmgw_sidecar.app import RUNTIME, create_app
from llmgw_sidecar.config import parse_config
from llmgw_sidecar.metrics import Metrics
from llmgw_sidecar.runtime import Runtime
from tests.fake_upstream import FakeUpstream
from tests.servers import ThreadServer

UPSTREAM_MODELS = ("ok", "tools", "flaky-429", "flaky-500", "bad-400", "slow", "broken-stream", "no-usage",
                   "bad-event", "null-event", "error-event", "slow-stream", "stall-error")


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    fu = FakeUpstream()
    srv = ThreadServer(fu.app).start()
    fu.url = srv.url + "/v1"  # type: ignore[attr-defined]
    yield fu
    srv.stop()


@dataclass
class Gateway:
    server: ThreadServer
    metrics: Metrics
    prefix: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def runtime(self) -> Runtime:
        assert self.server.app is not None
        return self.server.app[RUNTIME].current

    def client(self, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "sk-app"), max_retries=0, **kw)

    def async_client(self, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "sk-app"), max_retries=0, **kw)

    def sample(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples matching the labels (0 if none)."""
        from prometheus_client import generate_latest

        total = 0.0
        for fam in text_string_to_metric_families(generate_latest(self.metrics.registry).decode()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total


def gateway_config(redis: dict[str, Any], upstream_url: str, **over: Any) -> dict[str, Any]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    models = [{"name": m, "provider": "openai", "base_url": upstream_url, "api_key": "sk-upstream",
               "retry": {"max_retries": 2, "backoff_base_s": 0.01}, "timeouts": {"first_byte_s": 1.0 if m == "slow" else 5.0}}
              for m in UPSTREAM_MODELS]  # only "slow" (2 s) must time out; the rest get room on a busy machine
    cfg: dict[str, Any] = {
        "gateway": {"name": "gw", "namespace": "team-a"},
        "redis": {**redis, "key_prefix": prefix, "op_timeout_ms": 200,
                  "circuit_breaker": {"failure_threshold": 3, "reset_after_s": 0.3}},
        "models": models,
    }
    for k, v in over.items():
        cfg[k] = v
    return cfg


@pytest.fixture
def make_gateway(fake_upstream: FakeUpstream) -> Iterator[Callable[[dict[str, Any]], Gateway]]:
    started: list[ThreadServer] = []

    def make(cfg: dict[str, Any]) -> Gateway:
        config = parse_config(cfg)
        metrics = Metrics()
        srv = ThreadServer(lambda: create_app(config, metrics=metrics)).start()
        started.append(srv)
        return Gateway(srv, metrics, config.redis.key_prefix)

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def gateway(make_gateway: Callable[[dict[str, Any]], Gateway], redis_standalone: str,
            fake_upstream: FakeUpstream) -> Gateway:
    return make_gateway(gateway_config({"url": redis_standalone}, fake_upstream.url))  # type: ignore[attr-defined]

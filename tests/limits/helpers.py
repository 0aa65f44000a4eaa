"""In-process building blocks for limit tests: a config, a governor on a given Redis, and request contexts."""

from __future__ import annotations

import uuid
from typing import Any

from llmgw_sidecar.config import Config, parse_config
from llmgw_sidecar.context import Caller, RequestContext
from llmgw_sidecar.metrics import Metrics
from llmgw_sidecar.redis_topology import make_client


def config(redis: dict[str, Any], model_limits: dict[str, int] | None = None, **over: Any) -> Config:
    data: dict[str, Any] = {
        "gateway": {"name": "gw", "namespace": "team-a"},
        "redis": {"key_prefix": f"t{uuid.uuid4().hex[:10]}",
                  "circuit_breaker": {"failure_threshold": 1, "reset_after_s": 0.2}, **redis},
        "models": [{"name": "m", "provider": "mock", "limits": model_limits or {},
                    "pricing": {"input_per_1m": 1.0, "output_per_1m": 3.0}}],
    }
    data.update(over)
    # In-process tests are about decisions, not deadlines: a stalled test process on a busy machine must not turn one
    # into a 503. Tests of the deadline (and the window harness) set it themselves; sidecar tests keep the defaults.
    data["limits"] = {"decision_timeout_ms": 2000, **data.get("limits", {})}
    return parse_config(data)


def ctx(cfg: Config, content: str = "hello there", max_tokens: int = 100, ns: str = "team-a",
        pod: str = "p1", key: str | None = None) -> RequestContext:
    return RequestContext(
        request_id=uuid.uuid4().hex, endpoint="chat", model=cfg.models[0],
        body={"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens},
        caller=Caller(ns, pod, "app", key), scope=f"gw:team-a/gw|ns:{ns}",
    )


def client(cfg: Config) -> Any:
    return make_client(cfg.redis)


def metrics() -> Metrics:
    return Metrics()

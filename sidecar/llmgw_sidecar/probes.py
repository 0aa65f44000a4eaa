"""What Kubernetes and Prometheus ask of a sidecar: /healthz (the process serves), /readyz (Redis reachable, or limits
fail open; the Redis capability report) and /metrics (also on the metrics-only listener)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import Metrics
from .runtime import Runtime

JSON = "application/json"


class Probes:
    def __init__(self, runtime: Callable[[], Runtime], metrics: Metrics) -> None:
        self.runtime = runtime  # the current runtime (a config reload replaces it)
        self.registry = metrics.registry

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=JSON)

    async def readyz(self, request: web.Request) -> web.Response:
        rt = self.runtime()
        redis_ok = await rt.health.call("ping", rt.redis.ping, default=False, timeout_s=0.5)
        caps = rt.capabilities
        if caps is not None and redis_ok and not caps.checked_since_up:  # at start and after Redis came back
            await rt.health.call("capabilities", lambda: caps.check(rt.redis), default=None, timeout_s=0.5)
        if caps is not None and not redis_ok:
            caps.checked_since_up = False
        fail_open = rt.config.limits.fail_open
        ready = bool(redis_ok) or fail_open
        body = {"ready": ready, "redis": "ok" if redis_ok else "unreachable",
                "mode": "normal" if redis_ok else ("fail-open" if fail_open else "fail-closed"),
                **(caps.report(bool(redis_ok)) if caps is not None else {}),
                "models": [m.name for m in rt.config.models]}
        return web.Response(status=200 if ready else 503, body=orjson.dumps(body), content_type=JSON)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

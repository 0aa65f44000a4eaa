"""Shared pieces of the operations tests: sidecars on real Redis, a deterministic embedder for the semantic index."""

from __future__ import annotations

import hashlib
import itertools
import os
from typing import Any

import numpy as np
import openai

from llmgw_sidecar.app import create_app
from llmgw_sidecar.cache.keys import api_key_hash
from llmgw_sidecar.cache.semantic import SemanticCache
from llmgw_sidecar.cache.semantic_build import build_semantic
from llmgw_sidecar.config import Config, parse_config
from llmgw_sidecar.context import CachedAnswer, Caller, RequestContext, Usage
from llmgw_sidecar.embeddings.base import Embedder, normalise
from llmgw_sidecar.metrics import Metrics
from llmgw_sidecar.redis_topology import make_client
from tests.servers import ThreadServer

_ids = itertools.count()
ADMIN_TOKEN = "admin-secret-for-tests"


class HashEmbedder(Embedder):
    """Deterministic 8-dim vectors from a hash: the RediSearch index, keys and store path are the real ones; these
    tests are about what is stored where, not about embedding quality (tests/semantic covers that)."""

    provider = "local"
    dims = 8

    @property
    def index_tag(self) -> str:
        return "hash-8"

    async def embed(self, text: str) -> np.ndarray:
        raw = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], dtype=np.uint8).astype(np.float32) + 1
        return normalise(raw)


def fresh_prefix() -> str:
    return f"ops{os.getpid()}x{next(_ids)}"


def redis_section(topology: str, redis_standalone: str, redis_cluster: Any) -> dict[str, Any]:
    if topology == "cluster":
        return {"mode": "cluster", "nodes": redis_cluster.startup_nodes}
    return {"url": redis_standalone}


def sidecar_config(redis: dict[str, Any], prefix: str, ns: str, name: str, generation: int = 0,
                   **over: Any) -> Config:
    doc: dict[str, Any] = {
        "gateway": {"namespace": ns, "name": name},
        "redis": {**redis, "key_prefix": prefix, "op_timeout_ms": 500},
        "models": [{"name": "m1", "provider": "mock"}, {"name": "m2", "provider": "mock",
                                                         "pricing": {"input_per_1m": 1.0, "output_per_1m": 2.0}}],
        "cache": {"scope": "api_key", "generation": generation},
        "spend": {"flush_interval_s": 0.1},
    }
    doc.update(over)
    return parse_config(doc)


def start_sidecar(cfg: Config) -> tuple[ThreadServer, Metrics]:
    metrics = Metrics()
    return ThreadServer(lambda: create_app(cfg, metrics=metrics)).start(), metrics


def ask(srv: ThreadServer, model: str, text: str, key: str) -> str:
    """One chat request with the official client; returns the x-llmgw-cache header."""
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}])
    return raw.headers["x-llmgw-cache"]


def key_scope(cfg: Config, key: str) -> str:
    g = cfg.gateway
    return f"gw:{g.namespace}/{g.name}|key:{api_key_hash('Bearer ' + key)}"


async def semantic_layer(cfg: Config) -> SemanticCache:
    sc = await build_semantic(cfg.model_copy(update={"cache": cfg.cache.model_copy(update={
        "semantic": cfg.cache.semantic.model_copy(update={"enabled": True})})}),
        make_client(cfg.redis), Metrics(), embedder=HashEmbedder())
    assert sc is not None
    return sc


async def store_semantic(sc: SemanticCache, cfg: Config, model: str, text: str, scope: str) -> None:
    """Store through the layer's own path (lookup miss, then the background store), as the app does."""
    ctx = RequestContext(request_id=f"r{next(_ids)}", endpoint="chat", model=cfg.model_by_name()[model],
                         body={"model": model, "messages": [{"role": "user", "content": text}]},
                         caller=Caller("x", "p", "sa"), scope=scope)
    assert await sc.lookup(ctx) is None
    body = b'{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"a"}}]}'
    import time

    sc.store(ctx, CachedAnswer(body=body, created=time.time(), usage=Usage(5, 3)))
    await sc.drain()

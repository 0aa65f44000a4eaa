"""Fixtures of the semantic-cache tests: the real local model (exported once per checkout into the git-ignored
.cache/test-models/, reused afterwards), and helpers to build requests the way the app does."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from llmgw_sidecar.cache.semantic import SemanticCache
from llmgw_sidecar.cache.semantic_build import build_semantic
from llmgw_sidecar.config import Config, parse_config
from llmgw_sidecar.context import CachedAnswer, Caller, RequestContext, Usage
from llmgw_sidecar.embeddings.export import FORMAT, MANIFEST, default_source, export
from llmgw_sidecar.embeddings.local import LocalEmbedder
from llmgw_sidecar.metrics import Metrics
from llmgw_sidecar.redis_topology import make_client

REPO = Path(__file__).resolve().parents[2]
# The tests' own copy (fp32 + int8 + static + pair): `make run` exports .cache/models/ and may be running while tests do.
MODEL_DIR = REPO / ".cache" / "test-models" / "all-MiniLM-L6-v2-onnx"
_ids = itertools.count()


def _complete(manifest: Path) -> bool:
    if not manifest.exists():
        return False
    m = json.loads(manifest.read_text())
    return m.get("format") == FORMAT and {"fp32", "int8", "static", "pair"} <= set(m.get("files", {}))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The first session in a checkout exports the model, and distilling the static first stage takes minutes on two
    shared cores: that session's semantic tests get a deadline that covers it (later sessions keep the default)."""
    if _complete(MODEL_DIR / MANIFEST):
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(1200))


def ensure_model() -> Path:
    """The exported model (ONNX fp32 + int8, the static first stage, the pair model); the first session in a checkout
    exports it (15 s, 2-5 min to distill the static model, ~8 min to train the pair model: `make test` does it before
    the tests start), later ones reuse it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    MODEL_DIR.parent.mkdir(parents=True, exist_ok=True)
    # Two test sessions at once (make test twice) must not export into the same folder together.
    with open(MODEL_DIR.parent / ".export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(MODEL_DIR / MANIFEST):
            export(default_source(), MODEL_DIR, int8=True, force=True)
    return MODEL_DIR


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return ensure_model()


@pytest.fixture(scope="session")
async def embedder(model_dir: Path) -> AsyncIterator[LocalEmbedder]:
    e = LocalEmbedder(model_dir)
    yield e
    await e.close()


def make_config(redis: dict[str, Any], **semantic: Any) -> Config:
    # A generous embedding deadline: two shared cores under a parallel test load must not turn hits into misses.
    # The deadline itself is tested with its own settings (test_failures).
    sem = {"enabled": True, "embedding": {"model_dir": str(MODEL_DIR), "timeout_ms": 5000}, **semantic}
    return parse_config({
        "models": [{"name": "gpt-test", "provider": "mock"}, {"name": "other-model", "provider": "mock"}],
        "redis": redis, "cache": {"semantic": sem},
    })


def fresh_prefix() -> str:
    """A key prefix per test: tests share session Redis servers and must not see each other's entries."""
    return f"t{os.getpid()}x{next(_ids)}"


def make_ctx(cfg: Config, question: str, *, system: str | None = None, model: str = "gpt-test",
             scope: str = "gw:default/local|ns:team-a", **params: Any) -> RequestContext:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    body = {"model": model, "messages": messages, **params}
    return RequestContext(request_id=f"r{next(_ids)}", endpoint="chat", model=cfg.model_by_name()[model], body=body,
                          caller=Caller("team-a", "pod-1", "default"), scope=scope)


def answer_for(text: str) -> CachedAnswer:
    body = ('{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",'
            f'"content":"{text}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":3,'
            '"total_tokens":8}}').encode()
    return CachedAnswer(body=body, created=1_700_000_000.0, sse=b'data: {"x":1}\n\n', sse_usage=b'data: {"u":1}\n\n',
                        usage=Usage(5, 3))


def new_metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


class SharedEmbedder:
    """The session embedder, but `close()` must not stop it for the other tests; counts what the full model ran on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.provider, self.dims, self.index_tag = inner.provider, inner.dims, inner.index_tag
        self.texts: list[str] = []
        self.batches = 0

    async def embed(self, text: str) -> Any:
        self.texts.append(text)
        return await self.inner.embed(text)

    async def embed_many(self, texts: list[str]) -> Any:
        self.batches += 1
        self.texts.extend(texts)
        many = getattr(self.inner, "embed_many", None)
        if many is None:
            return [await self.inner.embed(t) for t in texts]
        return await many(texts)

    async def close(self) -> None:
        return None


async def build_layer(redis_cfg: dict[str, Any], embedder: Any, **semantic: Any) -> tuple[SemanticCache, Config, Metrics]:
    """A semantic layer over the configured topology, built by the app's own factory and client constructor."""
    cfg = make_config({"op_timeout_ms": 500, **redis_cfg, "key_prefix": fresh_prefix()}, **semantic)
    m = new_metrics()
    sc = await build_semantic(cfg, make_client(cfg.redis), m, embedder=SharedEmbedder(embedder))
    assert sc is not None
    return sc, cfg, m


async def store_and_wait(sc: SemanticCache, ctx: RequestContext, text: str) -> None:
    """Miss, then store the answer (in the background, like the app), then wait for the store to land."""
    assert await sc.lookup(ctx) is None
    sc.store(ctx, answer_for(text))
    await sc.drain()

"""Every failure of the semantic layer is a miss plus a metric, never an exception into the request path."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import redis as syncredis
from aiohttp import web

from llmgw_sidecar.cache.semantic_build import build_semantic
from llmgw_sidecar.config import EmbeddingConfig
from llmgw_sidecar.embeddings import factory
from llmgw_sidecar.embeddings.base import Embedder, EmbeddingError
from llmgw_sidecar.embeddings.factory import ReloadingLocalEmbedder, make_embedder
from llmgw_sidecar.embeddings.local import LocalEmbedder
from llmgw_sidecar.embeddings.openai_remote import OpenAIEmbedder
from llmgw_sidecar.redis_topology import make_client

from .conftest import MODEL_DIR, answer_for, build_layer, make_config, make_ctx, new_metrics, sample, store_and_wait


class Broken(Embedder):
    provider = "local"
    dims = 384
    index_tag = "broken-384"

    def __init__(self, exc: Exception | None = None, vec: np.ndarray | None = None) -> None:
        self.exc, self.vec = exc, vec

    async def embed(self, text: str) -> np.ndarray:
        if self.exc:
            raise self.exc
        assert self.vec is not None
        return self.vec


async def test_missing_model_is_a_miss_then_heals(redis_standalone: str, tmp_path: Path, model_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    empty = tmp_path / "model"
    cfg = make_config({"url": redis_standalone, "key_prefix": "tmissing"}, embedding={"model_dir": str(empty)})
    m = new_metrics()
    sc = await build_semantic(cfg, make_client(cfg.redis), m)
    assert sc is not None and isinstance(sc.embedder, ReloadingLocalEmbedder)
    with caplog.at_level(logging.WARNING, logger="llmgw.semantic"):
        for _ in range(5):
            assert await sc.lookup(make_ctx(cfg, "What is 2+2?")) is None
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "error"}) == 5
    assert sum("no exported model" in r.getMessage() for r in caplog.records) == 1, "the log is rate-limited"
    # the model appears (exported later): the running layer picks it up on its next reload attempt
    shutil.copytree(model_dir, empty)
    monkeypatch.setattr(factory, "RELOAD_EVERY_S", 0.0)
    for _ in range(100):
        if sc.embedder._inner is not None:  # type: ignore[attr-defined]
            break
        await sc.lookup(make_ctx(cfg, "What is 2+2?"))
        await asyncio.sleep(0.02)
    await store_and_wait(sc, make_ctx(cfg, "What's the capital of Peru?"), "Lima")
    assert await sc.lookup(make_ctx(cfg, "Which city is the capital of Peru?")) is not None
    await sc.close()


@pytest.mark.parametrize("exc", [EmbeddingError("failed", "boom"), RuntimeError("unexpected bug")])
async def test_failing_embedder_is_a_miss(redis_standalone: str, exc: Exception) -> None:
    # the full model decides only without a pair model
    sc, cfg, m = await build_layer({"url": redis_standalone}, Broken(exc=exc), pair_model=False)
    # a miss never needs the full model (first stage only), so storing works; the paraphrase needs it and fails
    await store_and_wait(sc, make_ctx(cfg, "What is the speed of light?"), "c")
    assert await sc.lookup(make_ctx(cfg, "What's the speed of light?")) is None
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "error"}) == 1
    sc.store(make_ctx(cfg, "What is the speed of light?"), answer_for("c"))  # never raises either
    await sc.drain()
    await sc.close()


async def test_dimension_mismatch_is_a_miss(redis_standalone: str) -> None:
    sc, cfg, m = await build_layer({"url": redis_standalone}, Broken(vec=np.ones(100, dtype=np.float32) / 10),
                                   pair_model=False)
    await store_and_wait(sc, make_ctx(cfg, "What is the speed of light?"), "c")
    assert await sc.lookup(make_ctx(cfg, "What's the speed of light?")) is None
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "error"}) == 1
    await sc.close()


@pytest.mark.parametrize("exc", [RuntimeError("onnxruntime failed"), None])
async def test_failing_or_slow_pair_model_is_a_miss(redis_standalone: str, embedder: LocalEmbedder,
                                                    exc: Exception | None) -> None:
    sc, cfg, m = await build_layer({"url": redis_standalone}, embedder, embedding={
        "model_dir": str(MODEL_DIR), "timeout_ms": 50})
    assert sc.pair is not None

    class Failing:
        def score(self, pairs: list[tuple[str, str]]) -> list[float]:
            if exc is not None:
                raise exc
            time.sleep(0.3)  # past the 50 ms deadline (in the worker thread)
            return [1.0] * len(pairs)

    sc.pair = Failing()  # type: ignore[assignment]
    await store_and_wait(sc, make_ctx(cfg, "What is the speed of light?"), "c")
    assert await sc.lookup(make_ctx(cfg, "What's the speed of light?")) is None
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "error"}) == 1
    await sc.close()


async def test_answer_is_read_only_for_the_candidate_served(redis_standalone: str, embedder: LocalEmbedder,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The KNN returns the stored question only; the answer is read for the one candidate served. An entry that
    expires between the two is a miss, and a Redis failure at the read is an error and the breaker's."""
    from llmgw_sidecar.cache import semantic_index

    sc, cfg, m = await build_layer({"url": redis_standalone}, embedder)
    await store_and_wait(sc, make_ctx(cfg, "What is the speed of light?"), "c")
    found: list[semantic_index.Candidate] = []
    search = semantic_index.ShardIndex.search

    async def spy(self: semantic_index.ShardIndex, *args: object) -> list[semantic_index.Candidate]:
        got = await search(self, *args)  # type: ignore[arg-type]
        found.extend(got)
        return got

    monkeypatch.setattr(semantic_index.ShardIndex, "search", spy)
    served = await sc.lookup(make_ctx(cfg, "What's the speed of light?"))
    assert served is not None and b"c" in served.body
    assert found and set(found[0].fields) == {"prompt", "vector_distance"}  # no answer moved for the KNN

    reads: list[str] = []
    real = semantic_index.Candidate.answer_fields

    async def expired(self: semantic_index.Candidate) -> dict | None:
        reads.append(self.key)
        await self.client.delete(self.key)  # gone after the search found it
        return await real(self)

    monkeypatch.setattr(semantic_index.Candidate, "answer_fields", expired)
    assert await sc.lookup(make_ctx(cfg, "Whats the speed of light?")) is None
    assert len(reads) == 1
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "error"}) == 0

    await store_and_wait(sc, make_ctx(cfg, "What is the speed of sound?"), "s")

    async def failing(self: semantic_index.Candidate) -> dict | None:
        raise ConnectionError("connection reset")

    monkeypatch.setattr(semantic_index.Candidate, "answer_fields", failing)
    assert await sc.lookup(make_ctx(cfg, "What's the speed of sound?")) is None
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "error"}) == 1
    assert sample(m, "llmgw_redis_errors_total", {"op": "semantic_search"}) == 1
    await sc.close()


async def test_redis_down_is_a_miss_and_opens_the_breaker(embedder: LocalEmbedder) -> None:
    sc, cfg, m = await build_layer({"url": "redis://127.0.0.1:1/0", "connect_timeout_ms": 50,
                                    "circuit_breaker": {"failure_threshold": 2, "reset_after_s": 60}}, embedder)
    assert await sc.lookup(make_ctx(cfg, "What is the speed of light?")) is None
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "error"}) == 1
    sc.store(make_ctx(cfg, "What is the speed of light?"), answer_for("c"))
    await sc.drain()
    assert sample(m, "llmgw_cache_stores_total", {"cache": "semantic", "result": "error"}) == 1
    assert await sc.lookup(make_ctx(cfg, "What is the speed of light?")) is None  # second failure: breaker opens
    # open: no more waiting on a dead Redis, lookups and stores are skipped and counted
    assert await sc.lookup(make_ctx(cfg, "What is the speed of light?")) is None
    assert sample(m, "llmgw_redis_fail_open_total", {"op": "semantic_search"}) == 1
    sc.store(make_ctx(cfg, "What is the speed of light?"), answer_for("c"))
    assert sample(m, "llmgw_cache_stores_total", {"cache": "semantic", "result": "skipped"}) == 1
    await sc.close()


async def test_dropped_index_is_recreated(redis_standalone: str, embedder: LocalEmbedder) -> None:
    sc, cfg, m = await build_layer({"url": redis_standalone}, embedder)
    await store_and_wait(sc, make_ctx(cfg, "What's the capital of Peru?"), "Austen")
    shard = next(iter(sc._stores.values())).shards[0]
    c = syncredis.Redis.from_url(redis_standalone)
    c.execute_command("FT.DROPINDEX", shard.name)  # keeps the documents
    c.close()
    para = "Which city is the capital of Peru?"
    assert await sc.lookup(make_ctx(cfg, para)) is None  # this one fails and schedules the re-creation
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "error"}) == 1
    hit = None
    for _ in range(100):  # FT.CREATE indexes the existing documents in the background
        if (hit := await sc.lookup(make_ctx(cfg, para))) is not None:
            break
        await asyncio.sleep(0.02)
    assert hit is not None and b"Austen" in hit.body
    await sc.close()


# --- the openai-compatible provider ----------------------------------------------------------------------------------

@pytest.fixture
async def embeddings_server(embedder: LocalEmbedder):
    """An OpenAI-compatible /v1/embeddings endpoint backed by the real local model, plus slow and broken variants."""
    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        mode = request.match_info["mode"]
        if mode == "slow":
            await asyncio.sleep(1.0)
        if mode == "500":
            return web.json_response({"error": {"message": "down"}}, status=500)
        vec = await embedder.embed(body["input"][0])
        if mode == "short":
            vec = vec[:10]
        return web.Response(text=json.dumps({"object": "list", "model": body["model"], "data": [
            {"object": "embedding", "index": 0, "embedding": [float(x) for x in vec]}]}),
            content_type="application/json")

    app = web.Application()
    app.router.add_post("/{mode}/v1/embeddings", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_openai_provider_paraphrase_hit(redis_standalone: str, embeddings_server: str) -> None:
    emb = make_embedder(EmbeddingConfig(provider="openai", base_url=embeddings_server + "/ok/v1", model="minilm",
                                        dims=384))
    assert isinstance(emb, OpenAIEmbedder) and emb.index_tag == "openai-minilm-384"
    sc, cfg, _m = await build_layer({"url": redis_standalone}, emb)
    await store_and_wait(sc, make_ctx(cfg, "How do bees make honey?"), "nectar")
    hit = await sc.lookup(make_ctx(cfg, "What is the process bees use to make honey?"))
    assert hit is not None and b"nectar" in hit.body
    await emb.close()
    await sc.close()


@pytest.mark.parametrize(("mode", "kind"), [("slow", "timeout"), ("500", "failed"), ("short", "dimension_mismatch")])
async def test_openai_provider_failures(embeddings_server: str, mode: str, kind: str) -> None:
    emb = OpenAIEmbedder(embeddings_server + f"/{mode}/v1", "minilm", 384, timeout_ms=250)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(EmbeddingError) as ei:
        await emb.embed("hello")
    assert ei.value.kind == kind
    assert loop.time() - t0 < 0.6, "the deadline holds"
    await emb.close()


async def test_openai_provider_deadline_is_a_miss_in_the_layer(redis_standalone: str, embeddings_server: str) -> None:
    emb = OpenAIEmbedder(embeddings_server + "/slow/v1", "minilm", 384, timeout_ms=100)
    sc, cfg, m = await build_layer({"url": redis_standalone}, emb, embedding={"timeout_ms": 100})
    t0 = asyncio.get_running_loop().time()
    assert await sc.lookup(make_ctx(cfg, "How do bees make honey?")) is None
    assert asyncio.get_running_loop().time() - t0 < 0.5
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "error"}) == 1
    await emb.close()
    await sc.close()

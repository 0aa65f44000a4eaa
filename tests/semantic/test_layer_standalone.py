"""The semantic layer against a real standalone Redis Stack with the real local model."""

from __future__ import annotations

import dataclasses

from llmgw_sidecar.cache.semantic import SemanticCache
from llmgw_sidecar.config import Config
from llmgw_sidecar.context import CacheDirectives
from llmgw_sidecar.embeddings.local import LocalEmbedder
from llmgw_sidecar.metrics import Metrics

from .conftest import build_layer, make_ctx, sample, store_and_wait


async def layer(url: str, embedder: LocalEmbedder, **semantic) -> tuple[SemanticCache, Config, Metrics]:
    return await build_layer({"url": url}, embedder, **semantic)


async def test_paraphrase_hits_with_distance(redis_standalone: str, embedder: LocalEmbedder) -> None:
    sc, cfg, m = await layer(redis_standalone, embedder)
    await store_and_wait(sc, make_ctx(cfg, "What's the capital of France?"), "Paris")
    hit = await sc.lookup(make_ctx(cfg, "Which city is the capital of France?"))
    assert hit is not None and b"Paris" in hit.body
    assert 0 < hit.distance <= cfg.cache.semantic.distance_threshold
    assert hit.sse == b'data: {"x":1}\n\n' and hit.sse_usage == b'data: {"u":1}\n\n'
    assert hit.usage is not None and hit.usage.completion_tokens == 3
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "hit"}) == 1
    assert sample(m, "llmgw_semantic_best_distance_count") == 1
    assert sample(m, "llmgw_cache_stores_total", {"cache": "semantic", "result": "stored"}) == 1
    await sc.close()


async def test_guard_rejects_near_miss_and_counts_it(redis_standalone: str, embedder: LocalEmbedder) -> None:
    sc, cfg, m = await layer(redis_standalone, embedder)
    await store_and_wait(sc, make_ctx(cfg, "What is 2+2?"), "4")
    assert await sc.lookup(make_ctx(cfg, "What is 2+3?")) is None
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "guard_rejected"}) == 1
    assert sample(m, "llmgw_semantic_guard_rejections_total", {"guard": "numbers"}) == 1
    # switched off, the same candidate is served: the guard is what stood in the way
    sc2, cfg2, _ = await layer(redis_standalone, embedder, guards={"numbers": False, "substitution": False})
    await store_and_wait(sc2, make_ctx(cfg2, "What is 2+2?"), "4")
    assert await sc2.lookup(make_ctx(cfg2, "What is 2+3?")) is not None
    await sc.close()
    await sc2.close()


async def test_context_model_params_and_scope_isolate(redis_standalone: str, embedder: LocalEmbedder) -> None:
    sc, cfg, _ = await layer(redis_standalone, embedder)
    q = "How do I reverse a list in Python?"
    await store_and_wait(sc, make_ctx(cfg, q, system="Answer briefly.", temperature=0), "use reversed()")
    para = "What's the way to reverse a Python list?"
    assert await sc.lookup(make_ctx(cfg, para, system="Answer briefly.", temperature=0)) is not None
    assert await sc.lookup(make_ctx(cfg, para, system="Answer in detail.", temperature=0)) is None
    assert await sc.lookup(make_ctx(cfg, para, system="Answer briefly.", temperature=1)) is None
    assert await sc.lookup(make_ctx(cfg, para, system="Answer briefly.", temperature=0, model="other-model")) is None
    other_tenant = make_ctx(cfg, para, system="Answer briefly.", temperature=0, scope="gw:default/local|ns:team-b")
    assert await sc.lookup(other_tenant) is None
    ns = dataclasses.replace(make_ctx(cfg, para, system="Answer briefly.", temperature=0),
                             directives=CacheDirectives(namespace="x"))
    assert await sc.lookup(ns) is None
    # non-output fields (user, stream) do not split the cache
    assert await sc.lookup(make_ctx(cfg, para, system="Answer briefly.", temperature=0, user="u1", stream=True))
    await sc.close()

"""The semantic layer against a real standalone Redis Stack with the real local model."""

from __future__ import annotations

import dataclasses

from llmgw_sidecar.cache.semantic import SemanticCache, build_semantic
from llmgw_sidecar.context import CacheDirectives
from llmgw_sidecar.embeddings.local import LocalEmbedder

from .conftest import answer_for, fresh_prefix, make_config, make_ctx, new_metrics, sample


def layer(url: str, embedder: LocalEmbedder, **semantic) -> tuple[SemanticCache, object]:
    import redis.asyncio as aioredis

    cfg = make_config({"url": url, "key_prefix": fresh_prefix()}, **semantic)
    client = aioredis.Redis.from_url(url, protocol=2)
    m = new_metrics()
    sc = build_semantic(cfg, client, m, embedder=_Shared(embedder))
    assert sc is not None
    return sc, cfg, m


class _Shared:
    """The session embedder, but `close()` must not stop it for the other tests."""

    def __init__(self, inner: LocalEmbedder) -> None:
        self.inner = inner
        self.provider, self.dims, self.index_tag = inner.provider, inner.dims, inner.index_tag

    async def embed(self, text: str):
        return await self.inner.embed(text)

    async def close(self) -> None:
        return None


async def store_and_wait(sc: SemanticCache, ctx, text: str) -> None:
    assert await sc.lookup(ctx) is None
    sc.store(ctx, answer_for(text))
    await sc.drain()


async def test_paraphrase_hits_with_distance(redis_standalone: str, embedder: LocalEmbedder) -> None:
    sc, cfg, m = layer(redis_standalone, embedder)
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
    sc, cfg, m = layer(redis_standalone, embedder)
    await store_and_wait(sc, make_ctx(cfg, "What is 2+2?"), "4")
    assert await sc.lookup(make_ctx(cfg, "What is 2+3?")) is None
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "guard_rejected"}) == 1
    assert sample(m, "llmgw_semantic_guard_rejections_total", {"guard": "numbers"}) == 1
    # switched off, the same candidate is served: the guard is what stood in the way
    sc2, cfg2, _ = layer(redis_standalone, embedder, guards={"numbers": False, "substitution": False})
    await store_and_wait(sc2, make_ctx(cfg2, "What is 2+2?"), "4")
    assert await sc2.lookup(make_ctx(cfg2, "What is 2+3?")) is not None
    await sc.close()
    await sc2.close()


async def test_context_model_params_and_scope_isolate(redis_standalone: str, embedder: LocalEmbedder) -> None:
    sc, cfg, _ = layer(redis_standalone, embedder)
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

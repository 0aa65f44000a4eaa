"""The semantic layer against a real standalone Redis Stack with the real local model."""

from __future__ import annotations

import dataclasses

from llmgw_sidecar.cache.semantic import SemanticCache
from llmgw_sidecar.config import Config
from llmgw_sidecar.context import CacheDirectives
from llmgw_sidecar.embeddings.local import LocalEmbedder
from llmgw_sidecar.metrics import Metrics

from .conftest import answer_for, build_layer, make_ctx, sample, store_and_wait


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
    # the rules alone (no pair model): the numbers rule refuses, and switched off the same candidate is served
    sc, cfg, m = await layer(redis_standalone, embedder, pair_model=False)
    await store_and_wait(sc, make_ctx(cfg, "What is 2+2?"), "4")
    assert await sc.lookup(make_ctx(cfg, "What is 2+3?")) is None
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "guard_rejected"}) == 1
    assert sample(m, "llmgw_semantic_guard_rejections_total", {"guard": "numbers"}) == 1
    sc2, cfg2, _ = await layer(redis_standalone, embedder, pair_model=False, guards={"numbers": False})
    await store_and_wait(sc2, make_ctx(cfg2, "What is 2+2?"), "4")
    assert await sc2.lookup(make_ctx(cfg2, "What is 2+3?")) is not None
    # with the pair model, the numbers rule off or on, the pair model refuses (a doubt is asked only for a candidate
    # the pair model accepts below pair_overrule_threshold)
    for guards in ({"numbers": False}, {}):
        sc3, cfg3, m3 = await layer(redis_standalone, embedder, guards=guards)
        await store_and_wait(sc3, make_ctx(cfg3, "What is 2+2?"), "4")
        assert await sc3.lookup(make_ctx(cfg3, "What is 2+3?")) is None
        assert sample(m3, "llmgw_semantic_guard_rejections_total", {"guard": "pair_model"}) == 1
        await sc3.close()
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


async def test_pair_model_lookups_never_run_the_full_model(redis_standalone: str, embedder: LocalEmbedder) -> None:
    """With the first stage and the pair model, neither a miss, nor its store, nor a hit embeds with the full model."""
    sc, cfg, m = await layer(redis_standalone, embedder)
    counting = sc.embedder
    assert sc.static is not None and sc.pair is not None
    await store_and_wait(sc, make_ctx(cfg, "How do I reverse a list in Python?"), "use reversed()")
    assert await sc.lookup(make_ctx(cfg, "What's the way to reverse a Python list?")) is not None
    assert await sc.lookup(make_ctx(cfg, "How do I reverse a tuple in Python?")) is None
    assert counting.texts == [] and counting.batches == 0
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "hit"}) == 1
    await sc.close()


async def test_one_embedding_per_request_and_cheap_misses(redis_standalone: str, embedder: LocalEmbedder) -> None:
    """Without a pair model: a miss runs only the first stage (no full model, neither for the lookup nor for the
    store); the first lookup that finds the entry as a candidate computes its full vector once and stores it; later
    lookups reuse it."""
    sc, cfg, m = await layer(redis_standalone, embedder, pair_model=False)
    counting = sc.embedder
    assert sc.static is not None
    await store_and_wait(sc, make_ctx(cfg, "How do I reverse a list in Python?"), "use reversed()")
    assert counting.texts == []  # miss + store: the static model only
    assert await sc.lookup(make_ctx(cfg, "What's the way to reverse a Python list?")) is not None
    assert "How do I reverse a list in Python?" in counting.texts  # the stored entry's full vector, once
    assert counting.batches <= 2  # question and candidate for the distance, then the words of the alignment
    await sc.drain()
    counting.texts.clear()
    assert await sc.lookup(make_ctx(cfg, "What is the way to reverse a list in Python?")) is not None
    assert "How do I reverse a list in Python?" not in counting.texts  # read back from Redis this time
    # a near-miss the lexical rules refuse costs no full-model run at all
    counting.texts.clear()
    assert await sc.lookup(make_ctx(cfg, "How do I reverse a tuple in Python?")) is None
    await store_and_wait(sc, make_ctx(cfg, "How do I import a CSV file into Excel?"), "Data > From Text")
    counting.texts.clear()
    assert await sc.lookup(make_ctx(cfg, "How do I export a CSV file from Excel?")) is None
    assert counting.texts == []
    assert sample(m, "llmgw_semantic_guard_rejections_total", {"guard": "antonyms"}) >= 1
    await sc.close()


async def test_tools_are_exact_cache_only_unless_switched_on(redis_standalone: str, embedder: LocalEmbedder) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    sc, cfg, m = await layer(redis_standalone, embedder)
    ctx = make_ctx(cfg, "What's the weather in Paris?", tools=tools)
    assert await sc.lookup(ctx) is None
    sc.store(ctx, answer_for("sunny"))
    await sc.drain()
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "ineligible"}) == 1
    assert sample(m, "llmgw_cache_stores_total", {"cache": "semantic", "result": "skipped"}) == 1
    # a tool result in the conversation is the same
    result = make_ctx(cfg, "and tomorrow?")
    result.body["messages"][:0] = [{"role": "assistant", "tool_calls": [{"id": "1", "type": "function",
                                    "function": {"name": "weather", "arguments": "{}"}}]},
                                   {"role": "tool", "tool_call_id": "1", "content": "sunny"}]
    assert await sc.lookup(result) is None
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "ineligible"}) == 2
    on, cfg_on, _ = await layer(redis_standalone, embedder, tools=True)
    await store_and_wait(on, make_ctx(cfg_on, "What's the weather in Paris?", tools=tools), "sunny")
    assert await on.lookup(make_ctx(cfg_on, "what's the weather in paris", tools=tools)) is not None
    await sc.close()
    await on.close()

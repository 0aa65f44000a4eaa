"""Targeted invalidation and inspection (cache.admin) on real Redis, standalone and cluster: by generation, scope,
model and age, exact and semantic entries, and never a key of another gateway on the same Redis and prefix."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from llmgw_sidecar.cache.admin import CacheAdmin, Selector
from llmgw_sidecar.config import Config
from llmgw_sidecar.metrics import Metrics
from llmgw_sidecar.redis_topology import make_client

from .helpers import (
    ask,
    fresh_prefix,
    key_scope,
    redis_section,
    semantic_layer,
    sidecar_config,
    start_sidecar,
    store_semantic,
)

TOPOLOGIES = ["standalone", "cluster"]


async def all_keys(cfg: Config) -> set[str]:
    """Every key under the prefix, by a plain SCAN of every master (independent of cache.admin)."""
    r = make_client(cfg.redis)
    try:
        return {k.decode() async for k in r.scan_iter(match=f"{cfg.redis.key_prefix}:*", count=1000)}
    finally:
        await r.aclose()


async def run_admin(cfg: Config, fn: Any) -> Any:
    r = make_client(cfg.redis)
    try:
        return await fn(CacheAdmin(r, cfg, Metrics()))
    finally:
        await r.aclose()


async def entries(cfg: Config, sel: Selector) -> list[Any]:
    async def go(a: CacheAdmin) -> list[Any]:
        return [e async for e in a.iter(sel)]
    return await run_admin(cfg, go)


@pytest.fixture(params=TOPOLOGIES)
def two_gateways(request: pytest.FixtureRequest, redis_standalone: str) -> dict[str, Any]:
    """Gateways A (team-a/gw) and B (team-b/gw) on one Redis and one key prefix, each with exact entries of two
    models in two api_key scopes, and semantic entries written by each."""
    cluster = request.getfixturevalue("redis_cluster") if request.param == "cluster" else None
    redis = redis_section(request.param, redis_standalone, cluster)
    prefix = fresh_prefix()
    a = sidecar_config(redis, prefix, "team-a", "gw")
    b = sidecar_config(redis, prefix, "team-b", "gw")
    for cfg in (a, b):
        srv, _ = start_sidecar(cfg)
        try:
            for model in ("m1", "m2"):
                for key in ("k1", "k2"):
                    assert ask(srv, model, f"question for {model}", key) == "miss"
            # the store runs after the answer: wait until it is readable
            deadline = time.monotonic() + 10
            while ask(srv, "m2", "question for m2", "k2") != "hit-exact":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            srv.stop()

    async def semantic() -> None:
        for cfg in (a, b):
            sc = await semantic_layer(cfg)
            try:
                for model in ("m1", "m2"):
                    await store_semantic(sc, cfg, model, f"semantic question {model}", key_scope(cfg, "k1"))
            finally:
                await sc.close()
                await sc.redis.aclose()
    asyncio.run(semantic())
    return {"a": a, "b": b, "topology": request.param}


def _b_keys(keys: set[str], b: Config, b_semantic: set[str]) -> set[str]:
    return {k for k in keys if ":exact:gw:team-b/gw|" in k} | b_semantic


def test_inspect_and_invalidate_by_model_scope_age(two_gateways: dict[str, Any]) -> None:
    a, b = two_gateways["a"], two_gateways["b"]
    listed = asyncio.run(entries(a, Selector()))
    assert {(e.cache, e.model) for e in listed} == {("exact", "m1"), ("exact", "m2"), ("semantic", "m1"),
                                                    ("semantic", "m2")}
    assert len([e for e in listed if e.cache == "exact"]) == 4  # 2 models x 2 scopes
    assert all(e.scope.startswith("gw:team-a/gw|") for e in listed), "never another gateway's entries"
    ex = next(e for e in listed if e.cache == "exact")
    assert ex.size_bytes and ex.size_bytes > 20 and ex.ttl_s and 0 < ex.ttl_s <= 3600 and ex.age_s is not None
    assert ex.fingerprint and len(ex.fingerprint) == 64 and ex.generation == 0
    shown = asyncio.run(run_admin(a, lambda adm: adm.show(ex.key)))
    assert shown.extra["usage"]["completion_tokens"] > 0 and shown.fingerprint == ex.fingerprint
    assert asyncio.run(run_admin(a, lambda adm: adm.show(ex.key.replace("team-a", "team-b")))) is None, \
        "A cannot show B's entry"
    # Hits per entry: the fixture's wait loop ended on one hit of (m2, k2); the sidecar's close wrote it.
    hits = {(e.model, e.scope): asyncio.run(run_admin(a, lambda adm, k=e.key: adm.show(k))).hits
            for e in listed if e.cache == "exact"}
    assert hits == {(m, key_scope(a, k)): int((m, k) == ("m2", "k2")) for m in ("m1", "m2") for k in ("k1", "k2")}
    assert asyncio.run(run_admin(a, lambda adm: adm.show(ex.key))).hits is not None
    assert ex.hits is None, "listing reads no counts; show does"

    b_semantic = {e.key for e in asyncio.run(entries(b, Selector(kinds=("semantic",))))}
    assert len(b_semantic) == 2
    before_b = _b_keys(asyncio.run(all_keys(a)), b, b_semantic)
    assert len(before_b) == 7, "4 exact, 2 semantic, and the hit count of the one exact entry that was hit"
    assert sum(f"{a.redis.key_prefix}:hits:" in k for k in before_b) == 1

    # paging: limit 1 still visits everything, and the cursor ends at "0"
    async def pages(adm: CacheAdmin) -> list[str]:
        seen, cursor = [], "0"
        for _ in range(200):
            found, cursor = await adm.page(Selector(), cursor, 1)
            seen += [e.key for e in found]
            if cursor == "0":
                return seen
        raise AssertionError("paging did not end")
    assert sorted(asyncio.run(run_admin(a, pages))) == sorted(e.key for e in listed)

    # by model: exact and semantic entries of m1 (both scopes), nothing of m2, nothing of B
    counts = asyncio.run(run_admin(a, lambda adm: adm.delete(Selector(model="m1"), who="test")))
    assert counts == {"exact": 2, "semantic": 1}
    left = asyncio.run(entries(a, Selector()))
    assert {e.model for e in left} == {"m2"}

    # by scope (relative to the gateway): only that caller's entries
    k1 = key_scope(a, "k1").split("|", 1)[1]
    counts = asyncio.run(run_admin(a, lambda adm: adm.delete(Selector(scope=k1), who="test")))
    assert counts == {"exact": 1, "semantic": 1}
    left = asyncio.run(entries(a, Selector()))
    assert [(e.cache, e.scope) for e in left] == [("exact", key_scope(a, "k2"))]

    # by age: nothing is an hour old; everything is older than 0.5 s after a pause
    assert asyncio.run(run_admin(a, lambda adm: adm.delete(Selector(older_than_s=3600), who="t"))) == \
        {"exact": 0, "semantic": 0}
    time.sleep(0.6)
    assert asyncio.run(run_admin(a, lambda adm: adm.delete(Selector(older_than_s=0.5), who="t")))["exact"] == 1
    assert asyncio.run(entries(a, Selector())) == []
    assert not [k for k in asyncio.run(all_keys(a)) if ":exact:gw:team-a/gw|" in k], "hit counts went with them"

    # B untouched, key for key
    assert _b_keys(asyncio.run(all_keys(a)), b, b_semantic) == before_b


def test_generation_hides_old_entries_sweep_and_purge_delete_only_them(two_gateways: dict[str, Any]) -> None:
    a, b = two_gateways["a"], two_gateways["b"]
    b_before = {e.key for e in asyncio.run(entries(b, Selector()))}
    assert len(asyncio.run(entries(a, Selector(generation=0)))) == 6
    a1 = a.model_copy(update={"cache": a.cache.model_copy(update={"generation": 1})})
    srv, metrics = start_sidecar(a1)
    try:
        assert ask(srv, "m1", "question for m1", "k1") == "miss", "a new generation never serves older entries"
        deadline = time.monotonic() + 10
        while ask(srv, "m1", "question for m1", "k1") != "hit-exact":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # the first sidecar serving generation 1 sweeps generation 0 (exact and semantic) in the background
        deadline = time.monotonic() + 20
        while asyncio.run(entries(a1, Selector(generation=0))):
            assert time.monotonic() < deadline, "older generation not swept"
            time.sleep(0.1)
        swept = metrics.registry.get_sample_value("llmgw_cache_invalidations_total",
                                                  {"cache": "exact", "by": "generation"})
        assert swept == 4
    finally:
        srv.stop()
    left = asyncio.run(entries(a1, Selector()))
    assert [(e.cache, e.generation) for e in left] == [("exact", 1)]
    assert {e.key for e in asyncio.run(entries(b, Selector()))} == b_before, "B untouched"

    # generation 2 by config only (no sidecar yet): the CLI/API purge of stale generations does the same
    a2 = a.model_copy(update={"cache": a.cache.model_copy(update={"generation": 2})})
    counts = asyncio.run(run_admin(a2, lambda adm: adm.delete(Selector(stale_generations=True), who="t")))
    assert counts == {"exact": 1, "semantic": 0}
    assert asyncio.run(entries(a2, Selector())) == []
    assert {e.key for e in asyncio.run(entries(b, Selector()))} == b_before


def test_delete_keys_skips_foreign_and_unknown_keys(two_gateways: dict[str, Any]) -> None:
    a, b = two_gateways["a"], two_gateways["b"]
    mine = asyncio.run(entries(a, Selector(model="m2", kinds=("exact",))))
    theirs = asyncio.run(entries(b, Selector(model="m2")))
    sem_theirs = next(e.key for e in theirs if e.cache == "semantic")
    keys = [mine[0].key, mine[1].fingerprint, theirs[0].key, sem_theirs, f"{a.redis.key_prefix}:spend:x", "nonsense"]
    result = asyncio.run(run_admin(a, lambda adm: adm.delete_keys(keys, who="t")))
    assert result["deleted"] == {"exact": 2, "semantic": 0}
    assert result["skipped"] == keys[2:]
    assert len(asyncio.run(entries(b, Selector(model="m2")))) == len(theirs)

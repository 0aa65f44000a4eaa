"""The semantic layer on sentinel and on a real 3-master Redis Cluster (one index per shard, resharding)."""

from __future__ import annotations

import asyncio
from collections import Counter

import redis as syncredis
from redis.crc import key_slot

from llmgw_sidecar.cache.semantic import SemanticCache
from llmgw_sidecar.embeddings.local import LocalEmbedder
from tests.redis_servers import ClusterTopology, SentinelTopology

from .conftest import build_layer, make_ctx, sample, store_and_wait

# (stored question, paraphrase) pairs: each stored in its own conversation context, so every lookup can only be
# answered by its own entry, wherever it landed.
QA = [
    ("What's the capital of France?", "Which city is France's capital?"),
    ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
    ("Who painted the Mona Lisa?", "Which artist painted the Mona Lisa?"),
    ("What is the capital of Kenya?", "Which city is the capital of Kenya?"),
    ("What is photosynthesis?", "Can you explain what photosynthesis is?"),
    ("How do vaccines work?", "Can you explain how vaccines work?"),
    ("Why is the sky blue?", "What makes the sky look blue?"),
    ("How do I delete a git branch?", "How can I remove a branch in git?"),
    ("How do I cancel my gym membership?", "how do i cancel my gym membership"),
    ("How do bees make honey?", "What is the process bees use to make honey?"),
    ("What is the currency of Japan?", "Which currency does Japan use?"),
    # (paraphrases every retrained pair model accepts well above pair_threshold: this test is about shards; how
    # many paraphrases the model accepts is test_eval's business)
    ("What is the fastest land animal?", "what is the fastest land animal"),
]


async def fill_and_check(sc: SemanticCache, cfg, qa: list[tuple[str, str]]) -> list[str]:
    """Store every question in its own context, then look up every paraphrase; returns the answers' texts."""
    for i, (q, _) in enumerate(qa):
        await store_and_wait(sc, make_ctx(cfg, q, system=f"conversation {i}"), f"answer {i}")
    got = []
    for i, (_, p) in enumerate(qa):
        hit = await sc.lookup(make_ctx(cfg, p, system=f"conversation {i}"))
        assert hit is not None, p
        assert f'"answer {i}"'.encode() in hit.body
        got.append(p)
    return got


async def test_sentinel(redis_sentinel: SentinelTopology, embedder: LocalEmbedder) -> None:
    sc, cfg, m = await build_layer(
        {"mode": "sentinel", "sentinels": redis_sentinel.sentinel_addrs, "master_name": redis_sentinel.master_name},
        embedder)
    await fill_and_check(sc, cfg, QA[:3])
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "hit"}) == 3
    await sc.close()


def _node_of(topo: ClusterTopology, key: str) -> int:
    """Port of the master that owns `key` (asked from the cluster itself, not computed by us)."""
    c = syncredis.Redis(port=topo.nodes[0].port, decode_responses=True)
    try:
        slot = key_slot(key.encode())
        for rng in c.execute_command("CLUSTER", "SLOTS"):
            if rng[0] <= slot <= rng[1]:
                return int(rng[2][1])
    finally:
        c.close()
    raise AssertionError("slot not covered")


def _keys_by_node(topo: ClusterTopology, prefix: str) -> Counter:
    counts: Counter = Counter()
    for n in topo.nodes:
        c = syncredis.Redis(port=n.port)
        counts[n.port] = sum(1 for _ in c.scan_iter(match=f"{prefix}:sem:*", count=1000))
        c.close()
    return counts


async def test_cluster_spreads_entries_and_hits_on_every_shard(redis_cluster: ClusterTopology,
                                                               embedder: LocalEmbedder) -> None:
    sc, cfg, m = await build_layer({"mode": "cluster", "nodes": redis_cluster.startup_nodes}, embedder)
    await fill_and_check(sc, cfg, QA)
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "hit"}) == len(QA)
    store = next(iter(sc._stores.values()))
    # one index per master, each pinned (by its hash tag) to a slot that master owns
    assert len(store.shards) == 3
    assert {_node_of(redis_cluster, s.name) for s in store.shards} == {n.port for n in redis_cluster.nodes}
    for s in store.shards:
        assert s.client.connection_pool.connection_kwargs["port"] == _node_of(redis_cluster, s.name)
    # entries really live on all three masters, and the hits above came from all of them
    per_node = _keys_by_node(redis_cluster, cfg.redis.key_prefix)
    assert sorted(per_node.values()) and min(per_node.values()) >= 1 and sum(per_node.values()) == len(QA), per_node
    await sc.close()


def _prompts_by_node(topo: ClusterTopology, prefix: str) -> dict[str, int]:
    """Stored question -> port of the master holding it, read from the nodes themselves."""
    out = {}
    for n in topo.nodes:
        c = syncredis.Redis(port=n.port, decode_responses=True)
        for key in c.scan_iter(match=f"{prefix}:sem:*", count=1000):
            out[c.hget(key, "prompt")] = n.port
        c.close()
    return out


PAUSE_MS = 5000


async def test_cluster_slow_shard_costs_only_its_own_entries(redis_cluster: ClusterTopology,
                                                             embedder: LocalEmbedder) -> None:
    # A shard's search deadline is 2x op_timeout_ms (0.5 s here): far beyond a healthy shard's reply even on a busy
    # 2-core machine, and far below the pause.
    sc, cfg, m = await build_layer({"mode": "cluster", "nodes": redis_cluster.startup_nodes, "op_timeout_ms": 250},
                                   embedder)
    await fill_and_check(sc, cfg, QA[:6])
    where = _prompts_by_node(redis_cluster, cfg.redis.key_prefix)
    paused = where[QA[0][0]]
    # (the first lookup of a new layer reads the cluster layout and creates the indexes: on a starved machine that
    # may outlast its deadline, an error before the pause that this test is not about)
    errors_before = sample(m, "llmgw_semantic_lookups_total", {"result": "error"})
    c = syncredis.Redis(port=paused)
    c.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")  # the node stops answering clients (the cluster bus goes on)
    c.close()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, (q, p) in enumerate(QA[:6]):
        hit = await sc.lookup(make_ctx(cfg, p, system=f"conversation {i}"))
        assert (hit is None) == (where[q] == paused), (q, where[q], paused)
    assert loop.time() - t0 < PAUSE_MS / 1000 - 0.5, "each lookup waited for the slow shard's deadline only, not for the shard"
    assert sample(m, "llmgw_semantic_lookups_total", {"result": "error"}) == errors_before, \
        "other shards answered: a miss"
    await asyncio.sleep(max(0.0, PAUSE_MS / 1000 + 0.1 - (loop.time() - t0)))
    assert await sc.lookup(make_ctx(cfg, QA[0][1], system="conversation 0")) is not None
    await sc.close()


async def _move_slot(topo: ClusterTopology, slot: int, src_port: int, dst_port: int) -> None:
    """Reshard one slot with its keys, the way redis-cli --cluster reshard does it."""
    def run() -> None:
        src = syncredis.Redis(port=src_port, decode_responses=True)
        dst = syncredis.Redis(port=dst_port, decode_responses=True)
        src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", dst_port, "", 0, 5000, "KEYS", *keys)
        for n in topo.nodes:
            c = syncredis.Redis(port=n.port)
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            c.close()
        src.close()
        dst.close()

    await asyncio.to_thread(run)


async def test_cluster_survives_resharding(redis_cluster: ClusterTopology, embedder: LocalEmbedder) -> None:
    sc, cfg, _ = await build_layer({"mode": "cluster", "nodes": redis_cluster.startup_nodes}, embedder)
    await fill_and_check(sc, cfg, QA[:6])
    store = next(iter(sc._stores.values()))
    victim = store.shards[0]
    slot = key_slot(victim.hash_tag.encode())
    src = _node_of(redis_cluster, victim.name)
    dst = next(n.port for n in redis_cluster.nodes if n.port != src)
    moved = [k async for k in victim.client.scan_iter(match=victim.prefix + "*", count=1000)]
    assert moved, "the shard being resharded holds entries (otherwise this test proves nothing)"
    await _move_slot(redis_cluster, slot, src, dst)
    try:
        # The sidecar notices on its own: the next store to the moved slot gets MOVED -> re-discovery. Here we let the
        # periodic refresh do it, which is the path when nothing is written.
        store.refresh_s = 0.0
        deadline = asyncio.get_running_loop().time() + 10
        for i, (_, p) in enumerate(QA[:6]):
            while True:
                hit = await sc.lookup(make_ctx(cfg, p, system=f"conversation {i}"))
                if hit is not None or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)  # FT.CREATE on the new owner indexes the migrated keys in the background
            assert hit is not None and f'"answer {i}"'.encode() in hit.body, p
        assert any(s.name == victim.name and s.client.connection_pool.connection_kwargs["port"] == dst
                   for s in store.shards), "the moved tag is now searched on its new owner"
        # and new entries still go to every master
        await store_and_wait(sc, make_ctx(cfg, QA[6][0], system="after"), "after")
        assert await sc.lookup(make_ctx(cfg, QA[6][1], system="after")) is not None
    finally:
        await _move_slot(redis_cluster, slot, dst, src)
        await sc.close()

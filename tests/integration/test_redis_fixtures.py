"""The fixtures themselves: each topology answers and replicates, so later failures are not fixture bugs."""

import redis
from redis.cluster import RedisCluster


def test_standalone_has_search_module(redis_sync: redis.Redis) -> None:
    modules = {m[b"name"] for m in redis_sync.module_list()}
    assert {b"search", b"ReJSON"} <= modules


def test_sentinel_discovers_master(redis_sentinel) -> None:
    from redis.sentinel import Sentinel

    s = Sentinel([("127.0.0.1", p.port) for p in redis_sentinel.sentinels])
    assert s.discover_master("mymaster")[1] == redis_sentinel.master.port
    m = s.master_for("mymaster")
    m.set("fixture:k", "v")
    assert m.get("fixture:k") == b"v"


def test_cluster_spreads_keys(redis_cluster) -> None:
    c = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    for i in range(30):
        c.set(f"fixture:{i}", i)
    owners = {c.get_node_from_key(f"fixture:{i}").port for i in range(30)}
    assert len(owners) == 3
    c.close()

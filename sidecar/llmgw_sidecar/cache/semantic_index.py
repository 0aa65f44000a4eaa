"""Vector storage and KNN lookup for the semantic cache, on RedisVL, for every Redis topology.

Standalone and sentinel: one RedisVL index on the (current) master.

Redis Cluster: OSS cluster has no search coordinator: an FT index lives on one node and sees only that node's keys, and
RedisVL's own cluster path sends every FT.SEARCH/FT.CREATE to the client's *default* node. So we build one index per
master ourselves: each index name and key prefix carries a hash tag `{sN}` chosen so that its slot is owned by that
master, and each index is driven through a plain client connected to that master. Entries are spread over the shards
by their id; a lookup queries every shard concurrently and keeps the best candidates. Slot owners are re-read from
CLUSTER SLOTS periodically and after any error (MOVED after resharding, a dead node): tags whose slot moved are then
searched on their new owner (the index is created there and indexes the migrated keys), so entries stay reachable.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redisvl.index import AsyncSearchIndex
from redisvl.schema import IndexSchema

# A lookup's KNN returns only what the verification reads (the stored question; without a pair model also the full
# vector); the answer is read for the one candidate served (Candidate.answer_fields), so a miss never moves or parses
# the answers of the candidates it refuses.
ANSWER_FIELDS = ("body", "sse", "sse_usage", "usage", "created")
# One call per store: the entry and its expiry together (a pipeline of HSET + EXPIRE costs the client more CPU).
_PUT = "redis.call('HSET', KEYS[1], unpack(ARGV, 2)) return redis.call('EXPIRE', KEYS[1], ARGV[1])"
MAX_TAG_SEARCH = 200_000  # tags tried per master; 16384 slots over a few masters need far fewer


@dataclass(frozen=True, slots=True)
class Candidate:
    distance: float  # under the first-stage (indexed) vectors
    fields: dict[str, Any]
    key: str = ""
    client: Any = None  # the node that holds it (a cluster shard's own client)

    async def answer_fields(self) -> dict[str, Any] | None:
        """The fields the lookup read plus the stored answer, or None when the entry expired since the search."""
        values = await self.client.hmget(self.key, ANSWER_FIELDS)
        if not values[0]:
            return None
        return {**self.fields, **dict(zip(ANSWER_FIELDS, values, strict=True))}


def schema_for(name: str, prefix: str, dims: int) -> IndexSchema:
    return IndexSchema.from_dict({
        "index": {"name": name, "prefix": prefix, "storage_type": "hash"},
        "fields": [
            {"name": "model", "type": "tag"},
            {"name": "ctx", "type": "tag"},
            {"name": "scope", "type": "tag"},
            # The first-stage (static model) vector; the full model's vector is a plain field ("fvec") next to it.
            # HNSW: with a selective tag filter RediSearch switches to a brute-force scan of the filtered set by
            # itself, and large unfiltered sets still search in log time.
            {"name": "svec", "type": "vector",
             "attrs": {"dims": dims, "distance_metric": "cosine", "algorithm": "hnsw", "datatype": "float32"}},
        ],
    })


class ShardIndex:
    """One RedisVL index on one Redis node."""

    def __init__(self, client: Redis, key_prefix: str, index_tag: str, dims: int, hash_tag: str | None) -> None:
        tag = f"{{{hash_tag}}}:" if hash_tag else ""
        self.name = f"{key_prefix}:sem:{tag}{index_tag}"
        self.prefix = self.name + ":"
        self.hash_tag = hash_tag
        self.client = client
        self.dims = dims
        self.index = AsyncSearchIndex(schema_for(self.name, self.prefix, dims), redis_client=client)
        self._put = client.register_script(_PUT)
        self._ready = False

    async def ensure(self) -> None:
        if not self._ready:
            await self.index.create(overwrite=False)  # a no-op when it exists (another replica may have made it)
            self._ready = True

    def forget(self) -> None:
        """The index vanished (FLUSHALL, FT.DROPINDEX): create it again on next use."""
        self._ready = False

    async def search(self, vec: np.ndarray, model: str, ctx: str, scope: str, k: int,
                     fields: tuple[str, ...]) -> list[Candidate]:
        """One FT.SEARCH, written out: RedisVL's query objects cost more CPU than the search itself, on every
        lookup (the index itself is still RedisVL's). Returns `fields` of the k nearest."""
        await self.ensure()
        query = (f"(@model:{{{_tag(model)}}} @ctx:{{{_tag(ctx)}}} @scope:{{{_tag(scope)}}})"
                 f"=>[KNN {int(k)} @svec $vec AS vector_distance]")
        reply = await self.client.execute_command(
            "FT.SEARCH", self.name, query, "PARAMS", 2, "vec", vec.astype(np.float32).tobytes(),
            "SORTBY", "vector_distance", "ASC", "RETURN", len(fields) + 1, *fields, "vector_distance",
            "LIMIT", 0, int(k), "DIALECT", 2)
        out = []
        for i in range(1, len(reply) - 1, 2):
            key, flat = reply[i], reply[i + 1]
            row = {_str(flat[j]): flat[j + 1] for j in range(0, len(flat) - 1, 2)}
            if "vector_distance" not in row or not row.get("prompt"):
                continue  # expired between the search and the read, or a foreign document
            row["prompt"] = _str(row.get("prompt", b""))
            out.append(Candidate(float(row["vector_distance"]), row, _str(key), self.client))
        return out

    async def put(self, entry_id: str, fields: dict[str, Any], ttl_s: int) -> str:
        await self.ensure()
        key = self.prefix + entry_id
        await self._put(keys=[key], args=[ttl_s, *(x for kv in fields.items() for x in kv)])
        return key


_TAG_SPECIAL = re.compile(r"([^A-Za-z0-9_])")


def _tag(value: str) -> str:
    """A tag value as RediSearch query syntax wants it: every punctuation character escaped."""
    return _TAG_SPECIAL.sub(r"\\\1", value)


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _owner_ranges(slots: Any) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """Parse redis-py's cluster_slots() answer into {master addr: [(first, last) slot ranges]}."""
    out: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for rng, info in slots.items():
        host, port = info["primary"]
        host = host.decode() if isinstance(host, bytes) else host
        out.setdefault((host, int(port)), []).append((int(rng[0]), int(rng[1])))
    return out


def tag_for_ranges(ranges: list[tuple[int, int]]) -> str:
    """The first tag `sN` whose slot falls in `ranges`: deterministic, so every sidecar replica picks the same."""
    for i in range(MAX_TAG_SEARCH):
        tag = f"s{i}"
        slot = key_slot(tag.encode())
        if any(a <= slot <= b for a, b in ranges):
            return tag
    raise RuntimeError("no hash tag found for slot ranges")  # unreachable for any master owning >= 1 slot


class VectorStore:
    """All shard indexes of one vector space (embedding model + precision + dims)."""

    def __init__(self, client: Any, key_prefix: str, index_tag: str, dims: int,
                 node_client: Callable[[str, int], Redis] | None = None, refresh_s: float = 30.0) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.index_tag = index_tag
        self.dims = dims
        self.cluster = isinstance(client, RedisCluster)
        self.node_client = node_client
        self.refresh_s = refresh_s
        self._shards: list[ShardIndex] = []  # every index searched
        self._primary: list[ShardIndex] = []  # one per master: where new entries go
        self._clients: dict[tuple[str, int], Redis] = {}
        self._known_tags: set[str] = set()
        self._discovered_at = 0.0
        self._refresh: asyncio.Task[Any] | None = None
        self._lock = asyncio.Lock()
        if not self.cluster:
            shard = ShardIndex(client, key_prefix, index_tag, dims, None)
            self._shards = self._primary = [shard]

    @property
    def shards(self) -> list[ShardIndex]:
        return list(self._shards)

    async def _topology(self) -> list[ShardIndex]:
        if not self.cluster:
            return self._shards
        if not self._shards:
            await self.rediscover()  # the first time there is nothing to search yet
        elif time.monotonic() - self._discovered_at > self.refresh_s and self._refresh is None:
            # Later refreshes run in the background: a lookup never waits for a layout read (a node that hangs would
            # otherwise stall every request); it searches the layout it knows meanwhile.
            self._refresh = asyncio.get_running_loop().create_task(self._background_refresh())
        return self._shards

    async def _background_refresh(self) -> None:
        try:
            async with asyncio.timeout(10.0):
                await self.rediscover()
        except Exception:  # noqa: BLE001 - a lookup one second from now tries again (not in a tight loop)
            self._discovered_at = time.monotonic() - self.refresh_s + 1.0
        finally:
            self._refresh = None

    async def rediscover(self) -> None:
        """Re-read slot owners; rebuild the shard list (cheap: one CLUSTER SLOTS, indexes are reused by name)."""
        if not self.cluster:
            return
        async with self._lock:
            if self._shards and time.monotonic() - self._discovered_at < 1.0:
                return  # another task just did it
            await self.client.nodes_manager.initialize()  # the cluster client must also follow the new layout
            owners = _owner_ranges(await self.client.cluster_slots())
            old = {(s.client, s.name): s for s in self._shards}
            shards: list[ShardIndex] = []
            primary: list[ShardIndex] = []
            for addr, ranges in sorted(owners.items()):
                client = self._client_for(addr)
                first = tag_for_ranges(ranges)
                self._known_tags.add(first)
                tags = sorted(t for t in self._known_tags if any(a <= key_slot(t.encode()) <= b for a, b in ranges))
                for tag in tags:
                    s = ShardIndex(client, self.key_prefix, self.index_tag, self.dims, tag)
                    s = old.get((client, s.name), s)
                    shards.append(s)
                    if tag == first:
                        primary.append(s)
            self._shards, self._primary = shards, primary
            self._discovered_at = time.monotonic()
            for addr in set(self._clients) - set(owners):
                await self._clients.pop(addr).aclose()

    def _client_for(self, addr: tuple[str, int]) -> Redis:
        if addr not in self._clients:
            if self.node_client is None:
                raise RuntimeError("cluster mode needs a node_client factory")
            self._clients[addr] = self.node_client(*addr)
        return self._clients[addr]

    async def search(self, vec: np.ndarray, model: str, ctx: str, scope: str, k: int,
                     on_error: Callable[[ShardIndex, BaseException], None], *,
                     timeout_s: float | None, fields: tuple[str, ...]) -> tuple[list[Candidate], int]:
        """KNN on every shard at once; returns (candidates sorted by distance, number of shards that failed). Each
        shard has its own deadline: a slow or dead shard costs its own entries, not the answers of the others.
        `fields`: what the caller's verification reads (ShardIndex.search)."""
        shards = await self._topology()
        if len(shards) == 1:  # one index (standalone, sentinel): no task per shard
            try:
                async with asyncio.timeout(timeout_s):
                    return await shards[0].search(vec, model, ctx, scope, k, fields), 0
            except Exception as e:  # noqa: BLE001 - as one shard of many: counted, reported, a miss
                on_error(shards[0], e)
                return [], 1
        results = await asyncio.gather(*(asyncio.wait_for(s.search(vec, model, ctx, scope, k, fields), timeout_s)
                                         for s in shards), return_exceptions=True)
        found: list[Candidate] = []
        failed = 0
        for shard, res in zip(shards, results, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                failed += 1
                on_error(shard, res)
            else:
                found.extend(res)
        found.sort(key=lambda c: c.distance)
        return found, failed

    async def put(self, entry_id: str, fields: dict[str, Any], ttl_s: int) -> str:
        await self._topology()
        primary = self._primary
        # Spread entries over the masters by id (stable: a re-store of the same question lands on the same shard).
        shard = primary[int.from_bytes(hashlib.blake2b(entry_id.encode(), digest_size=4).digest()) % len(primary)]
        return await shard.put(entry_id, fields, ttl_s)

    def mark_stale(self) -> None:
        self._discovered_at = 0.0

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()

"""Exact cache: one Redis string per answer, written once and returned byte for byte.

Entry layout (one GET on a hit, no re-serialisation): b"LG1" + four big-endian u32 lengths + meta JSON + body
(non-streamed JSON) + sse (stream events without usage chunk and [DONE]) + sse_usage (the usage-only chunk).
"""

from __future__ import annotations

import struct
import time

import orjson

from ..cache_controls import MAX_TTL_S
from ..context import CachedAnswer, Usage
from ..metrics import Metrics
from ..redis_guard import RedisGuard
from ..redis_topology import AnyRedis
from .hits import HitCounter

MAGIC = b"LG1"
_HEADER = struct.Struct(">IIII")
_OFFSET = len(MAGIC) + _HEADER.size


def encode(answer: CachedAnswer) -> bytes:
    u = answer.usage
    meta = orjson.dumps({
        "created": answer.created,
        "usage": [u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens, u.estimated] if u else None,
    })
    sse = answer.sse or b""
    sse_usage = answer.sse_usage or b""
    return b"".join((MAGIC, _HEADER.pack(len(meta), len(answer.body), len(sse), len(sse_usage)),
                     meta, answer.body, sse, sse_usage))


def decode(blob: bytes) -> CachedAnswer | None:
    if len(blob) < _OFFSET or not blob.startswith(MAGIC):
        return None
    lm, lb, ls, lu = _HEADER.unpack_from(blob, len(MAGIC))
    if _OFFSET + lm + lb + ls + lu != len(blob):
        return None  # truncated or foreign value: treat as a miss
    view = memoryview(blob)
    pos = _OFFSET
    meta = orjson.loads(view[pos:pos + lm])
    pos += lm
    body = blob[pos:pos + lb]
    pos += lb
    sse = blob[pos:pos + ls] if ls else None
    pos += ls
    sse_usage = blob[pos:pos + lu] if lu else None
    u = meta.get("usage")
    usage = Usage(u[0], u[1], u[2], bool(u[3])) if u else None
    return CachedAnswer(body=body, created=meta["created"], sse=sse, sse_usage=sse_usage, usage=usage)


class ExactCache:
    def __init__(self, redis: AnyRedis, guard: RedisGuard, metrics: Metrics, default_ttl_s: int, max_bytes: int,
                 prefix: str = "llmgw", hits_interval_s: float = 1.0) -> None:
        self.redis = redis
        self.guard = guard
        self.metrics = metrics
        self.default_ttl_s = default_ttl_s
        self.max_bytes = max_bytes
        self.hits = HitCounter(redis, guard, prefix, hits_interval_s)  # per-entry hit counts, written in batches (hits.py)

    async def get(self, key: str) -> CachedAnswer | None:
        blob: bytes | str | None = await self.guard.call("cache_get", lambda: self.redis.get(key), default=_ERROR)
        if blob is _ERROR:
            self.metrics.cache_lookups.labels("exact", "error").inc()
            return None
        answer = decode(blob) if isinstance(blob, bytes) and blob else None  # a bytes client: never str
        self.metrics.cache_lookups.labels("exact", "hit" if answer else "miss").inc()
        return answer

    async def put(self, key: str, answer: CachedAnswer, ttl_s: int | None) -> bool:
        blob = encode(answer)
        if len(blob) > self.max_bytes:
            self.metrics.cache_stores.labels("exact", "too_large").inc()
            return False
        ex = min(ttl_s or self.default_ttl_s, MAX_TTL_S)  # requests are validated; the config is clamped here
        ok = await self.guard.call("cache_set", lambda: self.redis.set(key, blob, ex=ex),
                                   default=None)
        self.metrics.cache_stores.labels("exact", "stored" if ok else "error").inc()
        return bool(ok)

    async def close(self) -> None:
        await self.hits.close()


_ERROR: bytes = b"\x00error"  # sentinel distinct from any stored value or None


def age_s(answer: CachedAnswer) -> int:
    return max(0, int(time.time() - answer.created))

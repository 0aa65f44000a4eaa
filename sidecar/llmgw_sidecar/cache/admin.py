"""Cache inspection and invalidation: the one implementation behind `llmgw-sidecar cache ...` and the admin HTTP API.

What belongs to a gateway: exact keys `{prefix}:exact:gw:{ns}/{name}|...` (cache.keys.exact_key) and semantic hashes
`{prefix}:sem:...` whose plain `gw` field names the gateway. Entries of scope `global` are shared by every gateway
that uses that scope, so they are selected only when `global` is asked for by name. Keys that do not parse, or that
another gateway wrote, are never touched.

Everything is paged SCAN (never KEYS), per master on Redis Cluster; deletes are UNLINK in pipelined batches.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster

from ..config import Config
from ..metrics import Metrics
from ..redis_topology import AnyRedis, ensure_initialized
from .exact import _HEADER, _OFFSET, MAGIC, decode
from .hits import companion_key, read_hits
from .keys import key_part

log = logging.getLogger("llmgw.admin")

KINDS = ("exact", "semantic")
SCAN_COUNT = 1000  # keys per SCAN step: big enough to be quick, small enough not to block Redis (~1 ms)
_GLOB = re.compile(r"([*?\[\]\\])")
_HEAD_BYTES = 512  # enough for the header and the meta JSON of an exact entry (no body)
_SEM_FIELDS = ("gw", "sc", "cns", "gen", "model", "created")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def glob_escape(s: str) -> str:
    return _GLOB.sub(r"\\\1", s)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else ("" if v is None else str(v))


@dataclass(frozen=True)
class Selector:
    """Which entries: all given conditions must hold. `scope` is relative to the gateway ("ns:team-a",
    "sa:team-a/app", "gateway") or absolute ("gw:team-a/gw|ns:x", "global"); it matches that scope and every
    narrower one below it (ns:team-a also selects sa:... scopes inside team-a)."""

    scope: str | None = None
    model: str | None = None
    older_than_s: float | None = None
    generation: int | None = None
    stale_generations: bool = False  # generation differs from the running cache.generation
    kinds: tuple[str, ...] = KINDS

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("scope", self.scope), ("model", self.model),
                                          ("older_than_s", self.older_than_s), ("generation", self.generation))
                 if v is not None]
        if self.stale_generations:
            parts.append("stale_generations")
        return ",".join(parts) or "all"

    def by(self) -> str:
        """Bounded metric label: which kinds of condition were used."""
        names = [n for n, v in (("scope", self.scope), ("model", self.model), ("age", self.older_than_s),
                                ("generation", self.generation if not self.stale_generations else True))
                 if v is not None]
        return "+".join(names) or "all"


@dataclass
class Entry:
    key: str
    cache: str  # exact | semantic
    scope: str
    generation: int | None
    model: str | None
    namespace: str | None = None  # per-request cache namespace
    fingerprint: str | None = None
    size_bytes: int | None = None
    age_s: float | None = None
    ttl_s: float | None = None
    hits: int | None = None  # exact entries, `show` only (cache/hits.py; up to one flush interval behind); semantic
    # entries are not counted per entry (per scope: /spend/scopes)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["extra"]:
            d.pop("extra")
        return d


class CacheAdmin:
    def __init__(self, redis: AnyRedis, config: Config, metrics: Metrics | None = None) -> None:
        self.redis = redis
        self.config = config
        self.metrics = metrics
        self.prefix = config.redis.key_prefix
        self.gateway = f"{config.gateway.namespace}/{config.gateway.name}"
        self.generation = config.cache.generation
        self._exact_re = re.compile(
            re.escape(self.prefix) + r":exact:(?P<scope>.+?)\|g:(?P<gen>\d+)(?:\|cns:(?P<cns>[^|:]*))?"
            r"(?:\|m:(?P<model>[^|:]*))?:(?P<fp>[0-9a-f]{64})$")

    # --- scope and key ownership ---------------------------------------------------------------------------------
    def absolute_scope(self, scope: str) -> str:
        if scope == "global" or scope.startswith("gw:"):
            return scope
        gw = f"gw:{self.gateway}"
        return gw if scope in ("gateway", "") else f"{gw}|{scope}"

    def _owned_scope(self, scope: str, sel: Selector) -> bool:
        if sel.scope is not None:
            want = self.absolute_scope(sel.scope)
            if not (scope == want or scope.startswith(want + "|")):
                return False
            if want == "global":
                return True
        gw = f"gw:{self.gateway}"
        return scope == gw or scope.startswith(gw + "|")

    def _matches(self, e: Entry, sel: Selector, now: float) -> bool:
        if not self._owned_scope(e.scope, sel):
            return False
        if sel.model is not None and e.model != sel.model:
            return False
        if sel.generation is not None and e.generation != sel.generation:
            return False
        if sel.stale_generations and e.generation == self.generation:
            return False
        return not (sel.older_than_s is not None and (e.age_s is None or e.age_s < sel.older_than_s))

    def parse_exact(self, key: str) -> Entry | None:
        m = self._exact_re.match(key)
        if m is None:
            return None
        from urllib.parse import unquote

        return Entry(key=key, cache="exact", scope=m["scope"], generation=int(m["gen"]),
                     model=unquote(m["model"]) if m["model"] is not None else None,
                     namespace=unquote(m["cns"]) if m["cns"] else None, fingerprint=m["fp"])

    def _exact_pattern(self, sel: Selector) -> str:
        scope = self.absolute_scope(sel.scope) if sel.scope is not None else f"gw:{self.gateway}"
        pat = f"{glob_escape(self.prefix)}:exact:{glob_escape(scope)}[|]*"
        if sel.model is not None:
            pat += f"|m:{glob_escape(key_part(sel.model))}:*"
        return pat

    # --- SCAN, one master at a time ------------------------------------------------------------------------------
    async def _nodes(self) -> list[Any]:
        if isinstance(self.redis, RedisCluster):
            await ensure_initialized(self.redis)
            return sorted(self.redis.get_primaries(), key=lambda n: n.name)
        return [None]

    async def _scan(self, node: Any, cursor: int, match: str, type_: str | None) -> tuple[int, list[str]]:
        if node is None:
            cur, keys = await self.redis.scan(cursor, match=match, count=SCAN_COUNT, _type=type_)
            return int(cur), [_s(k) for k in keys]
        cursors, keys = await self.redis.scan(cursor, match=match, count=SCAN_COUNT, _type=type_, target_nodes=node)
        cur = next(iter(cursors.values())) if isinstance(cursors, dict) else cursors
        return int(cur), [_s(k) for k in keys]

    async def _describe(self, kind: str, keys: list[str], now: float, meta: bool = True) -> list[Entry]:
        """Parse and read the metadata of a batch of keys (one pipeline); entries that are not ours are dropped.
        Exact keys carry everything a selection needs but the age: `meta=False` skips the reads (a purge)."""
        if kind == "exact":
            parsed = [e for e in (self.parse_exact(k) for k in keys) if e is not None]
            if not meta:
                return parsed
            pipe = self.redis.pipeline(transaction=False)
            for e in parsed:
                pipe.getrange(e.key, 0, _HEAD_BYTES - 1)
                pipe.strlen(e.key)
                pipe.pttl(e.key)
            res = await pipe.execute() if parsed else []
            out = []
            for i, e in enumerate(parsed):
                head, size, pttl = res[3 * i:3 * i + 3]
                if not size:
                    continue  # expired between SCAN and now
                e.size_bytes, e.ttl_s = int(size), (pttl / 1000 if pttl and pttl > 0 else None)
                created = _created_from_head(head)
                e.age_s = round(now - created, 3) if created is not None else None
                out.append(e)
            return out
        pipe = self.redis.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, list(_SEM_FIELDS))
            pipe.pttl(k)
            pipe.memory_usage(k)
        res = await pipe.execute() if keys else []
        out = []
        for i, k in enumerate(keys):
            vals, pttl, mem = res[3 * i:3 * i + 3]
            gw, sc, cns, gen, model, created_s = (_s(v) for v in vals)
            if not sc or not gen.isdigit():
                continue  # not an entry of ours (or written before entries carried their scope)
            if sc != "global" and gw != self.gateway:
                continue
            try:
                age = round(now - float(created_s), 3)
            except ValueError:
                age = None
            out.append(Entry(key=k, cache="semantic", scope=sc, generation=int(gen), model=model or None,
                             namespace=cns or None, size_bytes=int(mem) if mem else None, age_s=age,
                             ttl_s=pttl / 1000 if pttl and pttl > 0 else None, extra={"writer": gw}))
        return out

    async def page(self, sel: Selector, cursor: str = "0", limit: int = 100,
                   meta: bool = True) -> tuple[list[Entry], str]:
        """At least `limit` matching entries (or the rest), and the cursor to continue from ("0" when done). The
        cursor is "kind.node.scan-cursor": resumable across calls, stable while the cluster layout is."""
        kind_i, node_i, scan_cur = _parse_cursor(cursor)
        kinds = [k for k in KINDS if k in sel.kinds]
        nodes = await self._nodes()
        found: list[Entry] = []
        now = time.time()
        while kind_i < len(kinds) and len(found) < limit:
            kind = kinds[kind_i]
            if node_i >= len(nodes):
                kind_i, node_i, scan_cur = kind_i + 1, 0, 0
                continue
            match = self._exact_pattern(sel) if kind == "exact" else f"{glob_escape(self.prefix)}:sem:*"
            scan_cur, keys = await self._scan(nodes[node_i], scan_cur, match, None if kind == "exact" else "hash")
            found += [e for e in await self._describe(kind, keys, now, meta or sel.older_than_s is not None)
                      if self._matches(e, sel, now)]
            if scan_cur == 0:
                node_i, scan_cur = node_i + 1, 0
        done = kind_i >= len(kinds)
        return found, "0" if done else f"{kind_i}.{node_i}.{scan_cur}"

    async def iter(self, sel: Selector) -> AsyncIterator[Entry]:
        cursor = "0"
        while True:
            entries, cursor = await self.page(sel, cursor, SCAN_COUNT)
            for e in entries:
                yield e
            if cursor == "0":
                return

    # --- show ----------------------------------------------------------------------------------------------------
    async def show(self, key: str) -> Entry | None:
        now = time.time()
        if key.startswith(f"{self.prefix}:sem:"):
            got = await self._describe("semantic", [key], now)
            if not got or not self._owned_scope(got[0].scope, Selector(scope="global" if got[0].scope == "global"
                                                                        else None)):
                return None
            sem = got[0]
            prompt, usage = await self.redis.hmget(key, ["prompt", "usage"])
            sem.extra.update(prompt=_s(prompt), usage=orjson.loads(usage) if usage else None)
            return sem
        e = self.parse_exact(key)
        if e is None or not self._owned_scope(e.scope, Selector(scope="global" if e.scope.startswith("global")
                                                                else None)):
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        blob, pttl = await pipe.execute()
        if not blob:
            return None
        e.size_bytes, e.ttl_s = len(blob), (pttl / 1000 if pttl and pttl > 0 else None)
        answer = decode(blob)
        if answer is not None:
            e.age_s = round(now - answer.created, 3)
            e.hits = await read_hits(self.redis, self.prefix, key, answer.created)
            u = answer.usage
            e.extra = {"usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}
                       if u else None, "streamed_form": answer.sse is not None}
        return e

    # --- delete --------------------------------------------------------------------------------------------------
    async def _unlink(self, keys: list[str], kind: str = "semantic") -> int:
        """UNLINK keys; exact entries take their hit-count companion along (not counted in the result)."""
        if kind == "exact" and keys:
            await self._unlink([companion_key(self.prefix, k) for k in keys])
        n = 0
        for i in range(0, len(keys), SCAN_COUNT):
            pipe = self.redis.pipeline(transaction=False)
            for k in keys[i:i + SCAN_COUNT]:
                pipe.execute_command("UNLINK", k)  # one key per command: a cluster pipeline routes it by slot
            n += sum(int(r or 0) for r in await pipe.execute())
        return n

    async def delete(self, sel: Selector, who: str, dry_run: bool = False) -> dict[str, int]:
        """Delete what `sel` selects (exact entries and the matching semantic-index entries)."""
        counts = dict.fromkeys(KINDS, 0)
        cursor = "0"
        while True:
            entries, cursor = await self.page(sel, cursor, SCAN_COUNT, meta=False)
            for kind in KINDS:
                keys = [e.key for e in entries if e.cache == kind]
                counts[kind] += len(keys) if dry_run else await self._unlink(keys, kind)
            if cursor == "0":
                break
        self._record(sel.by(), counts, who, sel.describe(), dry_run)
        return counts

    async def delete_keys(self, keys: list[str], who: str) -> dict[str, Any]:
        """Delete named entries: full keys or bare request fingerprints. Keys of other gateways are skipped."""
        counts = dict.fromkeys(KINDS, 0)
        skipped: list[str] = []
        for key in keys:
            if _FINGERPRINT.fullmatch(key):
                owned = [e async for e in self.iter(Selector(kinds=("exact",))) if e.fingerprint == key]
            else:
                e = await self.show(key)
                owned = [e] if e is not None else []
            if not owned:
                skipped.append(key)
            for e in owned:
                counts[e.cache] += await self._unlink([e.key], e.cache)
        self._record("key", counts, who, f"keys={len(keys)}", False)
        return {"deleted": counts, "skipped": skipped}

    def _record(self, by: str, counts: dict[str, int], who: str, what: str, dry_run: bool) -> None:
        if not dry_run and self.metrics is not None:
            for kind, n in counts.items():
                if n:
                    self.metrics.cache_invalidations.labels(kind, by).inc(n)
        log.info("cache invalidation%s on %s by %s: %s -> exact=%d semantic=%d", " (dry run)" if dry_run else "",
                 self.gateway, who, what, counts["exact"], counts["semantic"])

    async def ping(self) -> bool:
        """PING plus a scratch write inside this gateway's key space (what LiteLLM's /cache/ping does)."""
        await self.redis.ping()
        return bool(await self.redis.set(f"{self.prefix}:ping:{{{self.gateway}}}", b"1", ex=10))


def _created_from_head(head: bytes | None) -> float | None:
    if not head or not head.startswith(MAGIC) or len(head) < _OFFSET:
        return None
    lm = _HEADER.unpack_from(head, len(MAGIC))[0]
    if len(head) < _OFFSET + lm:
        return None
    try:
        return float(orjson.loads(head[_OFFSET:_OFFSET + lm])["created"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _parse_cursor(cursor: str) -> tuple[int, int, int]:
    if cursor in ("", "0"):
        return 0, 0, 0
    try:
        a, b, c = (int(x) for x in cursor.split("."))
    except ValueError:
        raise ValueError(f"invalid cursor '{cursor}'") from None
    if min(a, b, c) < 0:
        raise ValueError(f"invalid cursor '{cursor}'")
    return a, b, c


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '2h', '7d' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if m is None:
        raise ValueError(f"'{text}' is not a duration (e.g. 90s, 15m, 2h, 7d)")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]

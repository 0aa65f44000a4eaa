"""What the configured Redis can do, checked at start and again after it comes back: Redis >= 7 (LiteLLM's spend
buffer and ours use LPOP with a count) and, with the semantic cache on, the search module (without it every semantic
lookup would fail). A shortfall is reported honestly: /readyz says `cache: degraded` with the reason, and
`llmgw_redis_capability_ok` is 0; requests are still served (the upstream answers, fail open)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster

from .metrics import Metrics
from .redis_topology import AnyRedis

log = logging.getLogger("llmgw.redis")
MIN_VERSION = (7, 0)


def version_problem(version: str) -> str | None:
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return f"cannot read the Redis version {version!r}"
    if (major, minor) < MIN_VERSION:
        return (f"Redis {version} is older than 7.0: LPOP with a count (spend buffer) and other commands the gateway "
                f"uses need Redis 7 or newer; upgrade Redis")
    return None


@dataclass
class Capabilities:
    metrics: Metrics
    need_search: bool
    checked: bool = False
    checked_since_up: bool = False  # cleared while Redis is unreachable: the next successful probe checks again
    version: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked and not self.problems

    async def check(self, client: AnyRedis) -> None:
        """Ask Redis (raises on connection errors: the caller runs this under its guard)."""
        problems: list[str] = []
        if isinstance(client, RedisCluster):
            infos = await client.info("server", target_nodes=RedisCluster.PRIMARIES)
            versions = sorted({str(i.get("redis_version")) for i in _node_infos(infos)})
        else:
            versions = [str((await client.info("server")).get("redis_version"))]
        self.version = ",".join(versions)
        problems += [p for v in versions if (p := version_problem(v))]
        if self.need_search:
            try:
                await client.execute_command("FT._LIST")
            except Exception as e:  # "unknown command" is the answer we test for; anything else is re-raised
                if "unknown command" not in str(e).lower():
                    raise
                problems.append("the semantic cache is on but this Redis has no search module (FT.* commands): "
                                "use Redis Stack or Redis 8, or turn cache.semantic off; semantic lookups are misses")
        if problems != self.problems or not self.checked:
            for p in problems:
                log.error("redis capability: %s", p)
            if self.checked and not problems:
                log.info("redis capability: all checks pass again (Redis %s)", self.version)
        self.problems, self.checked, self.checked_since_up = problems, True, True
        self.metrics.redis_capability_ok.set(0 if problems else 1)

    def report(self, reachable: bool) -> dict[str, Any]:
        if not reachable:
            return {"cache": "degraded", "redis_version": self.version,
                    "problems": ["Redis is unreachable: answers come from the upstream (fail open)"]}
        if not self.checked:
            return {"cache": "unknown", "redis_version": None}
        out: dict[str, Any] = {"cache": "ok" if self.ok else "degraded", "redis_version": self.version}
        if self.problems:
            out["problems"] = self.problems
        return out


def _node_infos(infos: Any) -> list[dict[str, Any]]:
    if isinstance(infos, dict) and "redis_version" in infos:
        return [infos]
    if isinstance(infos, dict):
        return [v for v in infos.values() if isinstance(v, dict)]
    return []

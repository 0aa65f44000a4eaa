"""Status of an LLMGateway, computed purely from what a reconcile pass observed.

Conditions: ConfigReady (the sidecar config rendered, validated and every referenced Secret/key exists), RedisReady
(pods ready / cluster healthy / external Redis reachable) and Ready (both). lastTransitionTime only moves when a
condition's status changes, so a status write with nothing new is a no-op for watchers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class Check:
    ok: bool | None  # None: not known yet
    reason: str
    message: str

    @property
    def status(self) -> str:
        return UNKNOWN if self.ok is None else (TRUE if self.ok else FALSE)


@dataclass
class Observation:
    generation: int
    config: Check
    redis: Check
    endpoints: dict[str, Any] = field(default_factory=dict)
    members: tuple[int, int] | None = None  # (ready, desired) Redis pods
    cluster_state: str | None = None
    config_map: str | None = None
    config_hash: str | None = None
    spend: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None  # rendered cache generation and the sidecars' reports of it
    gateway: dict[str, Any] | None = None  # the shared gateway: endpoint and replicas


def condition(type_: str, check: Check, generation: int, now: str, previous: list[dict[str, Any]]) -> dict[str, Any]:
    old = next((c for c in previous if c.get("type") == type_), None)
    changed = old is None or old.get("status") != check.status
    return {
        "type": type_,
        "status": check.status,
        "reason": check.reason,
        "message": check.message,
        "lastTransitionTime": now if changed or old is None else old.get("lastTransitionTime", now),
        "observedGeneration": generation,
    }


def ready_check(config: Check, redis: Check) -> Check:
    if config.ok and redis.ok:
        return Check(True, "Ready", "Redis is ready and the sidecar configuration is rendered")
    # The first failing part names the reason: that is what a user has to fix first.
    for part, name in ((config, "ConfigReady"), (redis, "RedisReady")):
        if part.ok is False:
            return Check(False, part.reason, f"{name}: {part.message}")
    for part, name in ((config, "ConfigReady"), (redis, "RedisReady")):
        if part.ok is None:
            return Check(None, part.reason, f"{name}: {part.message}")
    return Check(None, "Unknown", "")


def build_status(obs: Observation, previous: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """The full status object (merge-patched onto the resource)."""
    prev_conditions = list((previous or {}).get("conditions") or [])
    ready = ready_check(obs.config, obs.redis)
    redis: dict[str, Any] = dict(obs.endpoints)
    if obs.members is not None:
        redis["readyMembers"], redis["desiredMembers"] = obs.members
    if obs.cluster_state is not None:
        redis["clusterState"] = obs.cluster_state
    status: dict[str, Any] = {
        "observedGeneration": obs.generation,
        "conditions": [
            condition("Ready", ready, obs.generation, now, prev_conditions),
            condition("RedisReady", obs.redis, obs.generation, now, prev_conditions),
            condition("ConfigReady", obs.config, obs.generation, now, prev_conditions),
        ],
        "redis": redis,
    }
    if obs.config_map:
        status["sidecar"] = {"configMap": obs.config_map, "configHash": obs.config_hash}
    if obs.spend is not None:
        status["spend"] = obs.spend
    if obs.cache is not None:
        status["cache"] = obs.cache
    if obs.gateway is not None:
        status["gateway"] = obs.gateway
    elif (previous or {}).get("gateway"):
        status["gateway"] = None  # merge patch: removes the stale section when the gateway was turned off
    return status


def ready_condition(status: dict[str, Any] | None) -> dict[str, Any] | None:
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == "Ready"), None)

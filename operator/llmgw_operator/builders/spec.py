"""The gateway spec as the builders read it: `Gateway` (name, namespace, the spec with CRD defaults applied) and the
names and hosts derived from it; `SpecError` for a spec the schema accepts but that cannot work.

Every builder is a pure function of a `Gateway`: no API calls, no clocks, no randomness except where the caller passes it
in (the generated password), so a second reconcile renders the same objects and `apply` finds nothing to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..crd import defaulted_spec

REDIS_PORT = 6379
SENTINEL_PORT = 26379
MAX_NAME_LEN = 40  # longest child name is "<gw>-sentinel" + StatefulSet revision hash: must stay within 63
DEFAULT_CLUSTER_DOMAIN = "cluster.local"


class SpecError(ValueError):
    """A spec that passes the CRD schema but cannot work. `reason` becomes the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# The sidecar's pull policy: spec.sidecar.imagePullPolicy when set (the CRD gives it no default), else the operator's
# default from the chart value sidecar.image.pullPolicy (env LLMGW_SIDECAR_PULL_POLICY), else IfNotPresent.
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
DEFAULT_PULL_POLICY = "IfNotPresent"
PULL_POLICY_ENV = "LLMGW_SIDECAR_PULL_POLICY"


def default_pull_policy(env: Mapping[str, str]) -> str:
    """The operator-wide sidecar pull policy from its environment; ValueError names a value Kubernetes would refuse
    (the chart's schema already does, a hand-written Deployment may not)."""
    value = env.get(PULL_POLICY_ENV, "").strip() or DEFAULT_PULL_POLICY
    if value not in PULL_POLICIES:
        raise ValueError(f"{PULL_POLICY_ENV}={value!r} is not one of {', '.join(PULL_POLICIES)}")
    return value


# The injected sidecar's resources when spec.sidecar.resources is unset (the CRD has no default for it).
SIDECAR_DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}


@dataclass(frozen=True)
class SidecarSpec:
    """spec.sidecar with the CRD defaults applied: what the injector, the sidecar-config renderer and the shared
    gateway read (one interpretation, no fallbacks of their own)."""

    port: int
    metrics_port: int  # 0: no metrics-only listener
    fail_open: bool
    redis_timeout_ms: int
    image_pull_policy: str | None  # None: the operator's default (chart value sidecar.image.pullPolicy) applies
    image: str | None
    resources: dict[str, Any]

    @classmethod
    def from_defaulted(cls, sidecar: dict[str, Any]) -> SidecarSpec:
        return cls(port=int(sidecar["port"]), metrics_port=int(sidecar.get("metricsPort") or 0),
                   fail_open=bool(sidecar["failOpen"]), redis_timeout_ms=int(sidecar["redisTimeoutMilliseconds"]),
                   image_pull_policy=sidecar.get("imagePullPolicy") or None, image=sidecar.get("image") or None,
                   resources=dict(sidecar.get("resources") or SIDECAR_DEFAULT_RESOURCES))


@dataclass(frozen=True)
class LimitsSpec:
    """spec.limits with the CRD defaults applied, in the sidecar's units (limits.* of its config)."""

    default_max_tokens: int
    decision_timeout_ms: int
    unreachable_after_s: float
    heartbeat_interval_s: float
    scopes: list[dict[str, Any]]  # as in the CRD (camelCase); the renderer maps each entry

    @classmethod
    def from_defaulted(cls, limits: dict[str, Any]) -> LimitsSpec:
        return cls(default_max_tokens=int(limits["defaultMaxTokens"]),
                   decision_timeout_ms=int(limits["decisionTimeoutMilliseconds"]),
                   unreachable_after_s=float(limits["unreachableAfterSeconds"]),
                   heartbeat_interval_s=float(limits["heartbeatIntervalSeconds"]),
                   scopes=list(limits.get("scopes") or []))


@dataclass(frozen=True)
class Gateway:
    name: str
    namespace: str
    spec: dict[str, Any]
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN

    @classmethod
    def from_spec(cls, name: str, namespace: str, spec: Any, **kw: Any) -> Gateway:
        if len(name) > MAX_NAME_LEN:
            raise SpecError("NameTooLong", f"gateway name '{name}' is longer than {MAX_NAME_LEN} characters")
        return cls(name=name, namespace=namespace, spec=defaulted_spec(spec), **kw)

    @property
    def sidecar(self) -> SidecarSpec:
        return SidecarSpec.from_defaulted(self.spec["sidecar"])

    @property
    def limits(self) -> LimitsSpec:
        return LimitsSpec.from_defaulted(self.spec["limits"])

    @property
    def redis(self) -> dict[str, Any]:
        redis: dict[str, Any] = self.spec["redis"]
        return redis

    @property
    def mode(self) -> str:
        mode: str = self.redis["mode"]
        return mode

    @property
    def tls(self) -> bool:
        return bool(self.redis["tls"]["enabled"])

    @property
    def auth(self) -> bool:
        return bool(self.redis["auth"]["enabled"])

    # Names. Short suffixes keep "<gw>-<suffix>-<revision hash>" inside the 63-character label limit.
    @property
    def redis_name(self) -> str:
        return f"{self.name}-redis"

    @property
    def headless_name(self) -> str:
        return f"{self.name}-redis-headless"

    @property
    def sentinel_name(self) -> str:
        return f"{self.name}-sentinel"

    @property
    def sentinel_headless_name(self) -> str:
        return f"{self.name}-sentinel-headless"

    @property
    def redis_config_name(self) -> str:
        return f"{self.name}-redis-config"

    @property
    def auth_secret_name(self) -> str:
        return self.redis["auth"].get("secretName") or f"{self.name}-redis-auth"

    @property
    def auth_secret_generated(self) -> bool:
        return self.auth and not self.redis["auth"].get("secretName")

    @property
    def auth_secret_key(self) -> str:
        key: str = self.redis["auth"]["secretKey"]
        return key

    def svc_host(self, service: str) -> str:
        return f"{service}.{self.namespace}.svc.{self.cluster_domain}"

    def pod_host(self, pod: str, headless: str) -> str:
        return f"{pod}.{headless}.{self.namespace}.svc.{self.cluster_domain}"

    def redis_pod_hosts(self, count: int) -> list[str]:
        return [self.pod_host(f"{self.redis_name}-{i}", self.headless_name) for i in range(count)]

    def sentinel_pod_hosts(self) -> list[str]:
        n = self.redis["sentinel"]["count"]
        return [self.pod_host(f"{self.sentinel_name}-{i}", self.sentinel_headless_name) for i in range(n)]


def gateway_of(spec_or_gw: Any, gateway_name: str | None) -> Gateway:
    """A `Gateway` as is, or one from a raw spec (the injector's): the CRD defaults are applied the same way."""
    if isinstance(spec_or_gw, Gateway):
        return spec_or_gw
    if gateway_name is None:
        raise TypeError("gateway_name is required when passing a spec")
    return Gateway.from_spec(gateway_name, "default", spec_or_gw)

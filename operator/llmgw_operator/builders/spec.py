"""The gateway spec as the builders read it: `Gateway` (name, namespace, the spec with CRD defaults applied) and the
names and hosts derived from it; `SpecError` for a spec the schema accepts but that cannot work.

Every builder is a pure function of a `Gateway`: no API calls, no clocks, no randomness except where the caller passes it
in (the generated password), so a second reconcile renders the same objects and `apply` finds nothing to change.
"""

from __future__ import annotations

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

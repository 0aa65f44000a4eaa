"""Pure builders: LLMGateway spec -> the Kubernetes objects that realise it. One module per Redis mode."""

from __future__ import annotations

from collections.abc import Callable

from . import cluster, external, sentinel, standalone
from .meta import Manifest
from .sidecar_config import sidecar_configmap
from .spec import Gateway, SpecError
from .workload import auth_secret

BUILDERS: dict[str, Callable[[Gateway], list[Manifest]]] = {
    "standalone": standalone.build,
    "sentinel": sentinel.build,
    "cluster": cluster.build,
    "external": external.build,
}


def build_all(gw: Gateway, password: str) -> list[Manifest]:
    """Every child object of the gateway, in creation order (Secret and ConfigMaps before the pods that mount them).
    `password` is only used when the auth Secret must be generated; apply never overwrites an existing Secret."""
    out: list[Manifest] = []
    if gw.mode != "external" and (secret := auth_secret(gw, password)) is not None:
        out.append(secret)
    out.append(sidecar_configmap(gw))
    out += BUILDERS[gw.mode](gw)
    return out


__all__ = ["BUILDERS", "Gateway", "Manifest", "SpecError", "build_all"]

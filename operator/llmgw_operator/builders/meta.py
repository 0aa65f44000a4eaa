"""Object metadata every builder shares: labels, selectors, ownership marker and the content hash that rolls pods."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .spec import Gateway

Manifest = dict[str, Any]
MANAGED_BY = "llmgw-operator"


def labels(gw: Gateway, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "redis",
        "app.kubernetes.io/instance": gw.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "llmgateway",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "llmgateway.dev/gateway": gw.name,
    }


def selector(gw: Gateway, component: str) -> dict[str, str]:
    # Selectors are immutable on StatefulSets: keep them to the labels that never change.
    return {"app.kubernetes.io/instance": gw.name, "app.kubernetes.io/component": component}


def metadata(gw: Gateway, name: str, component: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": gw.namespace, "labels": labels(gw, component)}
    if annotations:
        md["annotations"] = annotations
    return md


def content_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def drop_none(items: list[Manifest | None]) -> list[Manifest]:
    return [i for i in items if i is not None]

"""Pod shapes the webhook meets in real clusters (admission requests of Deployment pods carry generateName only)."""

from __future__ import annotations

import copy
from typing import Any

from llmgw_operator.crd import defaulted_spec

GW = "gw"
NS = "team-a"


def gateway_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "models": [
            {"name": "gpt-4o-mini", "provider": "openai", "baseUrl": "https://api.openai.com/v1",
             "apiKeySecretRef": {"name": "openai", "key": "api-key"}},
            {"name": "local-mock", "provider": "mock"},
        ],
    }
    for key, value in over.items():
        spec[key] = value
    # The API server applies the CRD defaults before anyone reads the object: do the same.
    return defaulted_spec(spec)


def pod(annotations: dict[str, str] | None = None, *, containers: list[dict[str, Any]] | None = None,
        init: list[dict[str, Any]] | None = None, volumes: list[dict[str, Any]] | None = None,
        labels: dict[str, str] | None = None, **spec_extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "generateName": "web-7d9f8-", "namespace": NS,
        "labels": labels if labels is not None else {"app": "web"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8",
                             "uid": "5f0c1d2e-0000-4000-8000-000000000001", "controller": True,
                             "blockOwnerDeletion": True}],
    }
    if annotations is not None:
        meta["annotations"] = annotations
    spec: dict[str, Any] = {
        "containers": containers if containers is not None else [{"name": "app", "image": "python:3.12-slim",
                                                                  "command": ["python", "-m", "http.server"]}],
        "serviceAccountName": "web",
        "restartPolicy": "Always",
    }
    if init is not None:
        spec["initContainers"] = init
    if volumes is not None:
        spec["volumes"] = volumes
    spec.update(spec_extra)
    return copy.deepcopy({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})


def inject(gateway: str = GW, **more: str) -> dict[str, str]:
    return {"llmgateway.dev/inject": gateway, **more}

"""Pods that use a shared gateway (spec.gateway) instead of a sidecar: `llmgateway.dev/use-gateway` on a pod gets the
OpenAI SDK environment pointing at the gateway's Service and a projected ServiceAccount token for its audience. The
admission server (webhook.py) calls this; the sidecar injection itself is injection.py.

Admission must never fail because of what is read here: a spec value the operator cannot use (a gateway object written
past the CRD schema, or from an older CRD) falls back to the CRD default with one log line per gateway and problem."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .injection import (
    ANNOTATION_CONTAINERS,
    ANNOTATION_STATUS,
    OPT_OUT_VALUES,
    PREFIX,
    STATUS_VERSION,
    InjectionResult,
    annotations_of,
    json_pointer_escape,
    pod_label,
)

ANNOTATION_USE_GATEWAY = PREFIX + "use-gateway"  # value: "<gateway>" (pod's namespace) or "<namespace>/<gateway>"
TOKEN_VOLUME = "llmgw-token"
TOKEN_DIR = "/var/run/secrets/llmgateway.dev"
TOKEN_PATH = f"{TOKEN_DIR}/token"
TOKEN_EXPIRATION_S = 3600  # the kubelet rotates the file at 80% of this; apps re-read it
DEFAULT_SERVICE_PORT = 80  # the CRD defaults of spec.gateway.service.port and spec.gateway.auth.audience
DEFAULT_AUDIENCE = "llmgateway.dev"
MAX_LOGGED = 1024  # distinct (gateway, problem) keys remembered for log_once; then it starts over

log = logging.getLogger(__name__)
_logged: set[tuple[str, ...]] = set()


def log_once(key: tuple[str, ...], msg: str, *args: object) -> None:
    """One warning per key (a gateway and what is wrong with it), not one per admitted pod. Callers pass names and
    exception types only, never values: a spec or pod value may hold something secret."""
    if key in _logged:
        return
    if len(_logged) >= MAX_LOGGED:
        _logged.clear()
    _logged.add(key)
    log.warning(msg, *args)


T = TypeVar("T")


def _or_default(namespace: str, name: str, field: str, read: Callable[[], T], default: T) -> T:
    """`read()`, or the CRD default when the field is unusable: whatever the object holds, admission goes on, and one
    line per gateway and problem says so (the field and the error type, never the value)."""
    try:
        return read()
    except Exception as e:  # noqa: BLE001 -- a webhook must answer, never fail on a stored object
        log_once((namespace, name, field, type(e).__name__), "gateway %s/%s: %s unusable (%s); using %r",
                 namespace, name, field, type(e).__name__, default)
        return default


def service_port(namespace: str, name: str, g: Mapping[str, Any]) -> int:
    """spec.gateway.service.port, or the CRD default when it is unusable."""
    def read() -> int:
        port = int((g.get("service") or {}).get("port") or DEFAULT_SERVICE_PORT)
        if not 1 <= port <= 65535:
            raise ValueError("port out of range")
        return port
    return _or_default(namespace, name, "spec.gateway.service.port", read, DEFAULT_SERVICE_PORT)


def token_audience(namespace: str, name: str, g: Mapping[str, Any]) -> str:
    """spec.gateway.auth.audience, or the CRD default when it is unusable."""
    def read() -> str:
        audience = (g.get("auth") or {}).get("audience") or DEFAULT_AUDIENCE
        if not isinstance(audience, str):
            raise TypeError("audience is not a string")
        return audience
    return _or_default(namespace, name, "spec.gateway.auth.audience", read, DEFAULT_AUDIENCE)


def requested_shared_gateway(pod: Mapping[str, Any], namespace: str) -> tuple[str, str] | None:
    """(namespace, gateway) of the shared gateway the pod asks to be pointed at, or None."""
    value = (annotations_of(pod).get(ANNOTATION_USE_GATEWAY) or "").strip()
    if value.lower() in OPT_OUT_VALUES:
        return None
    ns, sep, name = value.rpartition("/")
    return (ns if sep else namespace), name


def shared_gateway_env(namespace: str, name: str, service_port: int) -> list[dict[str, str]]:
    base = f"http://{name}-gateway.{namespace}.svc:{service_port}"
    return [
        {"name": "OPENAI_BASE_URL", "value": base + "/v1"},
        {"name": "OPENAI_API_BASE", "value": base + "/v1"},
        {"name": "LLMGW_URL", "value": base},
        # The caller's identity: a ServiceAccount token for the gateway's audience. Apps send the file's content as
        # the API key and re-read it (it rotates); docs/gateway-mode.md shows how.
        {"name": "LLMGW_TOKEN_FILE", "value": TOKEN_PATH},
    ]


def build_gateway_client_patch(pod: Mapping[str, Any], namespace: str, name: str,
                               gateway_spec: Mapping[str, Any] | None) -> InjectionResult:
    """Point a pod at a shared gateway (spec.gateway) without a sidecar: env for the OpenAI SDKs and a projected
    ServiceAccount token for the gateway's audience, mounted into the app containers. Add-only ops, like injection."""
    res = InjectionResult()
    who = pod_label(pod)
    g = (gateway_spec or {}).get("gateway")
    if gateway_spec is None or not g or g.get("enabled") is False:
        res.reason = "no-shared-gateway"
        res.warnings.append(f"llmgateway: {namespace}/{name} is not a shared gateway (spec.gateway); pod {who} "
                            "left unchanged")
        return res
    spec = pod.get("spec") or {}
    if TOKEN_VOLUME in {v.get("name") for v in spec.get("volumes") or []}:
        res.reason = "already-pointed"
        return res
    port = service_port(namespace, name, g)
    audience = token_audience(namespace, name, g)
    only_raw = annotations_of(pod).get(ANNOTATION_CONTAINERS)
    only = {c.strip() for c in only_raw.split(",") if c.strip()} if only_raw else None
    ops: list[dict[str, Any]] = []
    added: dict[str, list[str]] = {}
    mount = {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}
    for i, c in enumerate(spec.get("containers") or []):
        cname = c.get("name", "")
        if only is not None and cname not in only:
            continue
        existing = {e.get("name") for e in c.get("env") or []}
        new = [e for e in shared_gateway_env(namespace, name, port) if e["name"] not in existing]
        if new:
            if c.get("env") is None:
                ops.append({"op": "add", "path": f"/spec/containers/{i}/env", "value": new})
            else:
                ops.extend({"op": "add", "path": f"/spec/containers/{i}/env/-", "value": e} for e in new)
        if c.get("volumeMounts") is None:
            ops.append({"op": "add", "path": f"/spec/containers/{i}/volumeMounts", "value": [mount]})
        else:
            ops.append({"op": "add", "path": f"/spec/containers/{i}/volumeMounts/-", "value": mount})
        added[cname] = [e["name"] for e in new]
    volume = {"name": TOKEN_VOLUME, "projected": {"defaultMode": 0o444, "sources": [{"serviceAccountToken": {
        "audience": audience, "expirationSeconds": TOKEN_EXPIRATION_S, "path": "token"}}]}}
    if spec.get("volumes") is None:
        ops.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
    else:
        ops.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
    if spec.get("automountServiceAccountToken") is False:
        res.warnings.append(f"llmgateway: pod {who} disables automountServiceAccountToken; the projected gateway "
                            "token is mounted anyway (it is valid only for the gateway's audience)")
    status = {"version": STATUS_VERSION, "gateway": f"{namespace}/{name}", "mode": "shared-gateway", "env": added}
    value = json.dumps(status, sort_keys=True, separators=(",", ":"))
    if (pod.get("metadata") or {}).get("annotations") is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION_STATUS: value}})
    else:
        ops.append({"op": "add", "path": f"/metadata/annotations/{json_pointer_escape(ANNOTATION_STATUS)}", "value": value})
    res.patch = ops
    res.injected = True
    res.reason = "pointed-at-gateway"
    return res

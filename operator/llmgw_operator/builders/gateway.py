"""The shared gateway (spec.gateway): the sidecar's proxy as a Deployment + Service that many namespaces call, with
Kubernetes identity as the caller.

Same image and same config renderer as the injected sidecar (`render_sidecar_config`); what differs here only:
listen on 0.0.0.0 (pods reach it over the network, the NetworkPolicy decides who), and `auth.mode: gateway` (callers
identify with a ServiceAccount token checked by TokenReview, or a virtual key). Pure functions of the Gateway plus the
inputs the reconciler hands in (image, ClusterRole name, names of the virtual-key Secrets).
"""

from __future__ import annotations

from typing import Any

from .meta import MANAGED_BY, Manifest, content_hash
from .sidecar_config import (
    CONFIG_KEY,
    CONFIG_PATH,
    CONFIG_VOLUME,
    render_sidecar_config,
    sidecar_secret_env,
    sidecar_volume_mounts,
    sidecar_volumes,
    validate_rendered,
)
from .spec import DEFAULT_PULL_POLICY, Gateway, SpecError

COMPONENT = "gateway"
API_PORT = 4000  # inside the pod; the Service maps spec.gateway.service.port onto it
UID = 10001  # USER of the sidecar image; numeric so runAsNonRoot can be verified
KEYS_VOLUME = "llmgw-virtual-keys"
KEYS_DIR = "/etc/llmgw-keys"
TMP_VOLUME = "llmgw-tmp"
VIRTUAL_KEY_LABEL = "llmgateway.dev/virtual-key"  # on a Secret: value = gateway name
VIRTUAL_KEY_FIELDS = ("key", "scope", "rpm", "tpm", "maxParallel", "budgetUsd", "budgetPeriod")
DEFAULT_IMAGE = "ghcr.io/llmgateway/sidecar:0.1.0"
DEFAULT_CLUSTER_ROLE = "llmgateway-gateway"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server since 1.21
DEFAULT_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
GATEWAY_NS_LABEL = "llmgateway.dev/gateway-namespace"


def enabled(gw: Gateway) -> bool:
    g = gw.spec.get("gateway")
    return bool(g and g.get("enabled", True))


def name(gw: Gateway) -> str:
    return f"{gw.name}-gateway"


def binding_name(gw: Gateway) -> str:
    """The ClusterRoleBinding that lets this gateway's ServiceAccount create TokenReviews (cluster-scoped, so it
    cannot be owned by the gateway: the reconciler prunes it by its labels)."""
    return f"llmgw-gateway:{gw.namespace}:{gw.name}"


def endpoint(gw: Gateway) -> str:
    return f"http://{name(gw)}.{gw.namespace}.svc:{gw.spec['gateway']['service']['port']}/v1"


def labels(gw: Gateway) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "llmgateway",
        "app.kubernetes.io/instance": gw.name,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/part-of": "llmgateway",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "llmgateway.dev/gateway": gw.name,
    }


def selector(gw: Gateway) -> dict[str, str]:
    return {"app.kubernetes.io/instance": gw.name, "app.kubernetes.io/component": COMPONENT}


def _md(gw: Gateway, obj_name: str | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": obj_name or name(gw), "namespace": gw.namespace, "labels": labels(gw)}
    if annotations:
        md["annotations"] = annotations
    return md


def _namespace_selector(gw: Gateway) -> dict[str, Any]:
    allowed = gw.spec["gateway"].get("allowedNamespaces")
    if allowed is None:
        return {"matchLabels": {NAMESPACE_NAME_LABEL: gw.namespace}}
    return {k: v for k, v in allowed.items() if v}


def render_gateway_config(gw: Gateway) -> dict[str, Any]:
    """The sidecar config of the gateway pods: the sidecar's, listening on all interfaces, with gateway auth."""
    g = gw.spec["gateway"]
    auth = g["auth"]
    doc = render_sidecar_config(gw)
    doc["listen"] = {**doc["listen"], "host": "0.0.0.0", "port": API_PORT}
    allowed = g.get("allowedNamespaces")
    doc["auth"] = {
        "mode": "gateway",
        "allow_anonymous": auth["allowAnonymous"],
        "token_review": {
            "enabled": auth["serviceAccountTokens"],
            "audience": auth["audience"],
            "max_cache_s": auth["tokenCacheSeconds"],
            "allowed_namespaces": None if allowed is None else {
                "match_labels": dict(allowed.get("matchLabels") or {}),
                "match_expressions": [{"key": e["key"], "operator": e["operator"], "values": list(e.get("values") or [])}
                                      for e in allowed.get("matchExpressions") or []],
            },
        },
        "virtual_keys": {"dir": KEYS_DIR if auth["virtualKeys"] else None},
    }
    validate_rendered(gw, doc, "InvalidGatewayConfig")  # the same check as the sidecar's config
    return doc


def configmap(gw: Gateway) -> Manifest:
    import yaml

    doc = render_gateway_config(gw)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _md(gw, annotations={"llmgateway.dev/config-hash": content_hash(doc)}),
        "data": {CONFIG_KEY: yaml.safe_dump(doc, sort_keys=False)},
    }


def _keys_volume(secrets: list[str]) -> dict[str, Any]:
    # One folder per Secret; optional keys (and Secrets deleted meanwhile) are skipped by the kubelet, not fatal.
    return {"name": KEYS_VOLUME, "projected": {"defaultMode": 0o440, "sources": [
        {"secret": {"name": s, "optional": True,
                    "items": [{"key": f, "path": f"{s}/{f}"} for f in VIRTUAL_KEY_FIELDS]}}
        for s in sorted(secrets)
    ]}}


def _http_probe(path: str, *, period: int, failures: int, initial: int = 0) -> dict[str, Any]:
    probe: dict[str, Any] = {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
                             "timeoutSeconds": 3, "failureThreshold": failures}
    if initial:
        probe["initialDelaySeconds"] = initial
    return probe


def deployment(gw: Gateway, image: str, key_secrets: list[str], pull_policy: str = DEFAULT_PULL_POLICY) -> Manifest:
    """image and pull_policy: the operator's defaults (chart values sidecar.image.*), used where the spec is silent."""
    g = gw.spec["gateway"]
    sc = gw.sidecar
    metrics_port = sc.metrics_port
    volumes = [{**v, "configMap": {"name": name(gw)}} if v["name"] == CONFIG_VOLUME else v for v in sidecar_volumes(gw)]
    volumes.append({"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}})
    mounts = [*sidecar_volume_mounts(gw), {"name": TMP_VOLUME, "mountPath": "/tmp"}]
    if g["auth"]["virtualKeys"] and key_secrets:
        volumes.append(_keys_volume(key_secrets))
        mounts.append({"name": KEYS_VOLUME, "mountPath": KEYS_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": "gateway",
        "image": g.get("image") or sc.image or image,
        "imagePullPolicy": sc.image_pull_policy or pull_policy,
        "command": ["llmgw-sidecar"],
        "args": ["serve", "--config", CONFIG_PATH],
        "env": [
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            # Upstream keys and the Redis password from the same Secrets as the sidecar, by reference only.
            *sidecar_secret_env(gw),
        ],
        "ports": [{"name": "http", "containerPort": API_PORT, "protocol": "TCP"},
                  *([{"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"}] if metrics_port else [])],
        "startupProbe": _http_probe("/healthz", period=1, failures=60),
        # /readyz fails only when Redis is down and limits fail closed: then other replicas (or none) should serve.
        "readinessProbe": _http_probe("/readyz", period=5, failures=2),
        "livenessProbe": _http_probe("/healthz", period=10, failures=3),
        # Endpoints are removed asynchronously: keep serving a few seconds after SIGTERM so no request is refused.
        "lifecycle": {"preStop": {"exec": {"command": ["python3", "-c", "import time; time.sleep(5)"]}}},
        "resources": {k: dict(v) for k, v in (g.get("resources") or DEFAULT_RESOURCES).items() if v},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: dict[str, Any] = {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector(gw)},
        # Never below the wanted capacity during a rollout.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": labels(gw)},
            "spec": {
                "serviceAccountName": name(gw),
                "automountServiceAccountToken": True,  # its own token: for TokenReview calls
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": 30,
                "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                       "labelSelector": {"matchLabels": selector(gw)}}}]}},
                "containers": [container],
                "volumes": volumes,
            },
        },
    }
    if g.get("autoscaling") is None or not g["autoscaling"]["enabled"]:
        spec["replicas"] = g["replicas"]  # with an autoscaler, the HPA owns the replica count
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _md(gw), "spec": spec}


def service(gw: Gateway) -> Manifest:
    s = gw.spec["gateway"]["service"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _md(gw), "spec": {
        "type": s["type"],
        "selector": selector(gw),
        "ports": [{"name": "http", "port": s["port"], "targetPort": "http", "protocol": "TCP"}],
    }}


def network_policy(gw: Gateway) -> Manifest:
    ingress: list[dict[str, Any]] = [
        {"from": [{"namespaceSelector": _namespace_selector(gw)}], "ports": [{"port": "http", "protocol": "TCP"}]},
    ]
    if gw.sidecar.metrics_port:
        # The metrics listener serves /metrics only: Prometheus may scrape it from its own namespace.
        ingress.append({"ports": [{"port": "metrics", "protocol": "TCP"}]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _md(gw), "spec": {
        "podSelector": {"matchLabels": selector(gw)}, "policyTypes": ["Ingress"], "ingress": ingress}}


def autoscaler(gw: Gateway) -> Manifest | None:
    a = gw.spec["gateway"].get("autoscaling")
    if a is None or not a["enabled"]:
        return None
    if a["maxReplicas"] < a["minReplicas"]:
        raise SpecError("InvalidAutoscaling", f"spec.gateway.autoscaling: maxReplicas {a['maxReplicas']} is below "
                        f"minReplicas {a['minReplicas']}")
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _md(gw), "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name(gw)},
        "minReplicas": a["minReplicas"],
        "maxReplicas": a["maxReplicas"],
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": a["targetCPUUtilizationPercentage"]}}}],
    }}


def disruption_budget(gw: Gateway) -> Manifest | None:
    p = gw.spec["gateway"]["podDisruptionBudget"]
    if not p["enabled"]:
        return None
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _md(gw), "spec": {
        "maxUnavailable": p["maxUnavailable"], "selector": {"matchLabels": selector(gw)}}}


def service_account(gw: Gateway) -> Manifest:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _md(gw), "automountServiceAccountToken": True}


def cluster_role_binding(gw: Gateway, cluster_role: str, role_owner: dict[str, Any] | None = None) -> Manifest:
    """Grants the chart's gateway ClusterRole (create TokenReviews, read namespace labels) to this gateway's
    ServiceAccount. Secrets are never read through the API: the kubelet mounts the gateway's own. `role_owner`: an
    owner reference to that ClusterRole (deleted with the chart, it takes the bindings along)."""
    lab = {**labels(gw), GATEWAY_NS_LABEL: gw.namespace}
    md: dict[str, Any] = {"name": binding_name(gw), "labels": lab}
    if role_owner:
        md["ownerReferences"] = [role_owner]
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": md,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": name(gw), "namespace": gw.namespace}]}


def build(gw: Gateway, *, image: str = DEFAULT_IMAGE, cluster_role: str = DEFAULT_CLUSTER_ROLE,
          key_secrets: list[str] | None = None, pull_policy: str = DEFAULT_PULL_POLICY,
          role_owner: dict[str, Any] | None = None) -> list[Manifest]:
    """Every object of the shared gateway, in creation order; [] when spec.gateway is absent or disabled."""
    if not enabled(gw):
        return []
    objs: list[Manifest | None] = [
        service_account(gw),
        cluster_role_binding(gw, cluster_role, role_owner),
        configmap(gw),
        deployment(gw, image, key_secrets or [], pull_policy),
        service(gw),
        network_policy(gw),
        autoscaler(gw),
        disruption_budget(gw),
    ]
    return [o for o in objs if o is not None]


"""The Kubernetes objects of the Redis sets: StatefulSet, data container, volumes, probes, scheduling, Services, PDB
and the generated auth Secret."""

from __future__ import annotations

import base64
from typing import Any

from .meta import Manifest, labels, metadata, selector
from .redis_conf import CONF_DIR, DATA_DIR, SCRIPTS_DIR, TLS_DIR
from .spec import REDIS_PORT, Gateway


def scheduling(gw: Gateway, component: str) -> dict[str, Any]:
    """nodeSelector, affinity, tolerations and topology spread for a pod template."""
    r = gw.redis
    out: dict[str, Any] = {}
    if r.get("nodeSelector"):
        out["nodeSelector"] = dict(r["nodeSelector"])
    if r.get("affinity"):
        out["affinity"] = r["affinity"]
    else:
        # Members of one set on different nodes when possible; "preferred" so single-node clusters still schedule.
        out["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": selector(gw, component)},
                        },
                    }
                ]
            }
        }
    if r.get("tolerations"):
        out["tolerations"] = list(r["tolerations"])
    if r.get("topologySpreadConstraints"):
        out["topologySpreadConstraints"] = [
            {"labelSelector": {"matchLabels": selector(gw, component)}, **c} for c in r["topologySpreadConstraints"]
        ]
    return out


def resources(res: dict[str, Any] | None) -> dict[str, Any]:
    res = res or {}
    return {k: dict(res[k]) for k in ("requests", "limits") if res.get(k)}


def password_env(gw: Gateway, var: str = "REDIS_PASSWORD") -> list[dict[str, Any]]:
    if not gw.auth:
        return []
    return [{
        "name": var,
        "valueFrom": {"secretKeyRef": {"name": gw.auth_secret_name, "key": gw.auth_secret_key}},
    }]


def pod_identity_env(gw: Gateway, headless: str) -> list[dict[str, Any]]:
    """POD_NAME and the pod's stable DNS name, which Redis announces instead of its (changing) pod IP."""
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_FQDN", "value": f"$(POD_NAME).{headless}.{gw.namespace}.svc.{gw.cluster_domain}"},
    ]


def exec_probe(script: str, *, initial: int, period: int, timeout: int = 5, failures: int = 3) -> dict[str, Any]:
    return {
        "exec": {"command": ["sh", f"{SCRIPTS_DIR}/{script}"]},
        "initialDelaySeconds": initial,
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def pod_security_context() -> dict[str, Any]:
    # The redis images run as uid 999 ("redis"); fsGroup makes the PVC writable for it.
    return {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999, "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def config_volumes(gw: Gateway) -> list[dict[str, Any]]:
    # One ConfigMap holds redis.conf and the scripts; scripts run through `sh`, so no exec bit is needed.
    vols: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": gw.redis_config_name}}]
    if gw.tls:
        vols.append({"name": "tls", "secret": {"secretName": gw.redis["tls"]["secretName"], "defaultMode": 0o440}})
    return vols


def config_mounts(gw: Gateway) -> list[dict[str, Any]]:
    mounts = [{"name": "config", "mountPath": CONF_DIR, "readOnly": True}]
    if gw.tls:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    return mounts


def volume_claim_templates(gw: Gateway, component: str) -> list[dict[str, Any]]:
    st = gw.redis["storage"]
    if not st["enabled"]:
        return []
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": st["size"]}}}
    if st.get("storageClassName"):
        spec["storageClassName"] = st["storageClassName"]
    return [{
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "labels": selector(gw, component)},
        "spec": spec,
    }]


def data_volumes(gw: Gateway) -> list[dict[str, Any]]:
    return [] if gw.redis["storage"]["enabled"] else [{"name": "data", "emptyDir": {}}]


def statefulset(gw: Gateway, *, name: str, component: str, replicas: int, headless: str,
                containers: list[dict[str, Any]], volumes: list[dict[str, Any]],
                claims: list[dict[str, Any]], config_hash: str) -> Manifest:
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": False,
        "containers": containers,
        "volumes": volumes,
        **scheduling(gw, component),
    }
    spec: dict[str, Any] = {
        "serviceName": headless,
        "replicas": replicas,
        # Parallel: cluster and sentinel members must all start to find each other; ordering buys nothing here.
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": selector(gw, component)},
        "template": {
            "metadata": {
                "labels": labels(gw, component),
                # Rolls the pods when redis.conf or the scripts change (Redis does not reload its config file).
                "annotations": {"llmgateway.dev/config-hash": config_hash},
            },
            "spec": pod_spec,
        },
    }
    if claims:
        spec["volumeClaimTemplates"] = claims
        spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Retain", "whenScaled": "Retain"}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(gw, name, component), "spec": spec}


def redis_container(gw: Gateway, *, name: str, headless: str, command: list[str],
                    extra_ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    r = gw.redis
    return {
        "name": name,
        "image": r["image"],
        "imagePullPolicy": r["imagePullPolicy"],
        "command": command,
        "env": [*pod_identity_env(gw, headless), *password_env(gw)],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}, *(extra_ports or [])],
        "readinessProbe": exec_probe("ping.sh", initial=5, period=10),
        "livenessProbe": {**exec_probe("ping.sh", initial=30, period=15, failures=5),
                          "exec": {"command": ["sh", f"{SCRIPTS_DIR}/ping.sh", "live"]}},
        "resources": resources(r.get("resources")),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, *config_mounts(gw)],
    }


def service(gw: Gateway, name: str, component: str, port: int, *, headless: bool,
            port_name: str = "redis", extra_ports: list[dict[str, Any]] | None = None) -> Manifest:
    spec: dict[str, Any] = {
        "selector": selector(gw, component),
        "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}, *(extra_ports or [])],
    }
    if headless:
        spec["clusterIP"] = "None"
        # Peers must resolve each other before they are ready (replication, cluster bus, sentinel discovery).
        spec["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(gw, name, component), "spec": spec}


def pdb(gw: Gateway, name: str, component: str) -> Manifest | None:
    p = gw.redis["podDisruptionBudget"]
    if not p["enabled"]:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(gw, name, component),
        "spec": {"maxUnavailable": p["maxUnavailable"], "selector": {"matchLabels": selector(gw, component)}},
    }


def auth_secret(gw: Gateway, password: str) -> Manifest | None:
    """The generated password Secret. `password` comes from the caller (random on first creation); apply creates it
    only when missing and never overwrites it, so the password is stable across reconciles."""
    if not gw.auth_secret_generated:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(gw, gw.auth_secret_name, "auth",
                             {"llmgateway.dev/generated": "true"}),
        "type": "Opaque",
        "data": {gw.auth_secret_key: base64.b64encode(password.encode()).decode()},
    }

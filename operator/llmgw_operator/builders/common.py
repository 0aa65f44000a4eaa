"""Shared pieces of the pure builders: names, labels, the gateway context, pod scheduling, probes, PDBs, auth Secret.

Every builder is a pure function of a `Gateway` (name, namespace, defaulted spec): no API calls, no clocks, no
randomness except where the caller passes it in (the generated password), so a second reconcile renders the same
objects and `apply` finds nothing to change.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..crd import defaulted_spec

Manifest = dict[str, Any]

REDIS_PORT = 6379
SENTINEL_PORT = 26379
MAX_NAME_LEN = 40  # longest child name is "<gw>-sentinel" + StatefulSet revision hash: must stay within 63
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
MANAGED_BY = "llmgw-operator"
DATA_DIR = "/data"
CONF_DIR = "/conf"
SCRIPTS_DIR = CONF_DIR
TLS_DIR = "/tls"
# The Redis Stack image keeps its binaries in /opt/redis-stack/bin, which is not on every PATH; harmless elsewhere.
PATH_LINE = 'export PATH="/opt/redis-stack/bin:$PATH"'
# Where images keep the search and JSON modules: Redis Stack server, then Redis 8 (whose own entrypoint would load them,
# but the pods exec redis-server directly). The start script loads them from the first folder that has RediSearch.
MODULE_DIRS = ("/opt/redis-stack/lib", "/usr/local/lib/redis/modules")
MODULES = ("redisearch.so", "rejson.so")


def module_lines() -> list[str]:
    """Start-script lines that append `loadmodule` for the modules the image has (to "$conf")."""
    return [
        "found=''",
        f"for dir in {' '.join(MODULE_DIRS)}; do",
        '  [ -f "$dir/redisearch.so" ] || continue',
        f"  for m in {' '.join(MODULES)}; do",
        '    [ -f "$dir/$m" ] && echo "loadmodule $dir/$m" >> "$conf"',
        "  done",
        '  found="$dir"',
        "  break",
        "done",
        '[ -n "$found" ] || echo "no RediSearch module in this image (looked in'
        f' {" ".join(MODULE_DIRS)}): the semantic cache will not work" >&2',
    ]


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


def cli_flags(gw: Gateway) -> str:
    """redis-cli flags for probes and scripts: TLS files and the password from the environment."""
    flags = ""
    if gw.tls:
        flags += f" --tls --cacert {TLS_DIR}/ca.crt --cert {TLS_DIR}/tls.crt --key {TLS_DIR}/tls.key"
    return flags


def ping_script(gw: Gateway, port: int) -> str:
    # REDISCLI_AUTH keeps the password out of the process list; LOADING counts as alive for liveness only.
    return "\n".join([
        "#!/bin/sh",
        PATH_LINE,
        'export REDISCLI_AUTH="${REDIS_PASSWORD:-}"',
        f'out=$(timeout 4 redis-cli -h 127.0.0.1 -p {port}{cli_flags(gw)} ping 2>&1)',
        'case "$out" in PONG) exit 0;; *LOADING*) [ "${1:-}" = live ] && exit 0;; esac',
        'echo "$out"; exit 1',
        "",
    ])


def redis_base_conf(gw: Gateway) -> list[str]:
    """Directives every data node shares: persistence (AOF), memory policy, TLS, modules."""
    r = gw.redis
    lines = [
        f"dir {DATA_DIR}",
        "appendonly yes",
        "appendfsync everysec",
        "save 3600 1 300 100",
        "protected-mode no",
        f"maxmemory-policy {r['maxmemoryPolicy']}",
        "tcp-keepalive 60",
        "repl-diskless-sync yes",
    ]
    maxmem = r.get("maxmemory") or _maxmemory_from_limit(r.get("resources", {}))
    if maxmem:
        lines.append(f"maxmemory {maxmem}")
    if gw.tls:
        lines += [
            "port 0",
            f"tls-port {REDIS_PORT}",
            f"tls-cert-file {TLS_DIR}/tls.crt",
            f"tls-key-file {TLS_DIR}/tls.key",
            f"tls-ca-cert-file {TLS_DIR}/ca.crt",
            "tls-auth-clients optional",
            "tls-replication yes",
        ]
    else:
        lines.append(f"port {REDIS_PORT}")
    # Modules are not listed here: start.sh finds them in the image (Redis Stack or Redis 8 layout), see module_lines.
    return lines


_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "K": 1000, "k": 1000, "M": 1000**2,
          "G": 1000**3, "T": 1000**4}


def _maxmemory_from_limit(res: dict[str, Any]) -> str | None:
    """80% of the memory limit: Redis needs headroom for fork (AOF rewrite) and buffers before the OOM killer."""
    limit = (res.get("limits") or {}).get("memory")
    if limit is None:
        return None
    s = str(limit)
    for unit in sorted(_UNITS, key=len, reverse=True):
        if s.endswith(unit) and s[: -len(unit)].replace(".", "", 1).isdigit():
            return str(int(float(s[: -len(unit)]) * _UNITS[unit] * 0.8))
    return str(int(float(s) * 0.8)) if s.replace(".", "", 1).isdigit() else None


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


def drop_none(items: list[Manifest | None]) -> list[Manifest]:
    return [i for i in items if i is not None]

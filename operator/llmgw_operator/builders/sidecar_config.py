"""The sidecar's configuration, rendered from the LLMGateway spec in the sidecar's own schema (llmgw_sidecar.config).

Secrets never enter the ConfigMap: the config holds `os.environ/NAME` references and the injected sidecar gets those
variables from secretKeyRefs (`sidecar_secret_env`). The injection webhook uses the functions here so that the names
it mounts and references match what the operator renders.

The ConfigMap is mounted as a directory (never subPath) so the kubelet updates the file in place and the sidecar
reloads it without a pod restart.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from llmgw_sidecar.config import ConfigError, parse_config

from .meta import Manifest, content_hash, metadata
from .spec import REDIS_PORT, SENTINEL_PORT, Gateway, SpecError, gateway_of

CONFIG_KEY = "config.yaml"
CONFIG_DIR = "/etc/llmgw"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
CONFIG_VOLUME = "llmgw-config"
TLS_VOLUME = "llmgw-redis-tls"
TLS_DIR = "/etc/llmgw-redis-tls"
# external Redis: the user's CA bundle and client certificate (issue 12)
EXT_CA_VOLUME = "llmgw-redis-ca"
EXT_CA_DIR = "/etc/llmgw-redis-ca"
EXT_CLIENT_VOLUME = "llmgw-redis-client"
EXT_CLIENT_DIR = "/etc/llmgw-redis-client"
KEY_PREFIX = "llmgw"
SENTINEL_MASTER_NAME = "llmgw"

REDIS_PASSWORD_ENV = "LLMGW_REDIS_PASSWORD"
REDIS_URL_ENV = "LLMGW_REDIS_URL"
EMBEDDING_KEY_ENV = "LLMGW_EMBEDDING_API_KEY"
ADMIN_TOKEN_ENV = "LLMGW_ADMIN_TOKEN"
ENV_REF = "os.environ/"


def sidecar_configmap_name(gateway_name: str) -> str:
    """Name of the ConfigMap holding the rendered sidecar config (key `config.yaml`)."""
    return f"{gateway_name}-sidecar"


def model_key_env(model_name: str) -> str:
    """Env var of a model's upstream API key: LLMGW_KEY_ plus the name upper-cased, other characters as _."""
    return "LLMGW_KEY_" + re.sub(r"[^A-Z0-9]", "_", model_name.upper())


def _secret_ref(ref: dict[str, Any]) -> dict[str, Any]:
    return {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}}


def sidecar_secret_env(spec: Any, gateway_name: str | None = None) -> list[dict[str, Any]]:
    """Env entries (valueFrom.secretKeyRef) of the sidecar: the Redis password, an external Redis URL, each model's
    upstream key and the embeddings key. `spec` is the LLMGateway spec (defaults are filled in here); `gateway_name` is
    needed because the generated Redis password Secret is named after the gateway. Also accepts a `Gateway`."""
    gw = gateway_of(spec, gateway_name)
    env: list[dict[str, Any]] = []
    r = gw.redis
    if gw.mode == "external":
        ext = r["external"]
        if ext.get("urlSecretRef"):
            env.append({"name": REDIS_URL_ENV, "valueFrom": _secret_ref(ext["urlSecretRef"])})
        if ext.get("passwordSecretRef"):
            env.append({"name": REDIS_PASSWORD_ENV, "valueFrom": _secret_ref(ext["passwordSecretRef"])})
    elif gw.auth:
        env.append({"name": REDIS_PASSWORD_ENV,
                    "valueFrom": _secret_ref({"name": gw.auth_secret_name, "key": gw.auth_secret_key})})
    seen: dict[str, str] = {}
    for m in gw.spec["models"]:
        if not m.get("apiKeySecretRef"):
            continue
        var = model_key_env(m["name"])
        if var in seen:
            raise SpecError("ModelNameClash", f"models '{seen[var]}' and '{m['name']}' map to the same env var {var}")
        seen[var] = m["name"]
        env.append({"name": var, "valueFrom": _secret_ref(m["apiKeySecretRef"])})
    emb = gw.spec["cache"]["semantic"]["embedding"]
    if gw.spec["cache"]["semantic"]["enabled"] and emb.get("apiKeySecretRef"):
        env.append({"name": EMBEDDING_KEY_ENV, "valueFrom": _secret_ref(emb["apiKeySecretRef"])})
    if gw.spec["cache"].get("adminTokenSecretRef"):
        env.append({"name": ADMIN_TOKEN_ENV, "valueFrom": _secret_ref(gw.spec["cache"]["adminTokenSecretRef"])})
    return env


def referenced_secrets(gw: Gateway) -> list[tuple[str, str]]:
    """(Secret name, key) pairs the sidecar needs, excluding the generated password (the operator creates that)."""
    pairs = []
    for e in sidecar_secret_env(gw):
        ref = e["valueFrom"]["secretKeyRef"]
        if gw.auth_secret_generated and gw.mode != "external" and ref["name"] == gw.auth_secret_name:
            continue
        pairs.append((ref["name"], ref["key"]))
    if gw.tls and gw.mode != "external":
        pairs += [(gw.redis["tls"]["secretName"], k) for k in ("tls.crt", "tls.key", "ca.crt")]
    pairs += _external_tls_pairs(gw)
    return pairs


def _external_tls_pairs(gw: Gateway) -> list[tuple[str, str]]:
    ext = gw.redis.get("external") or {} if gw.mode == "external" else {}
    pairs = [(ext["caSecretRef"]["name"], ext["caSecretRef"]["key"])] if ext.get("caSecretRef") else []
    if ext.get("clientCertSecretName"):
        pairs += [(ext["clientCertSecretName"], k) for k in ("tls.crt", "tls.key")]
    return pairs


def _external_tls_volumes(gw: Gateway) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The external Redis's CA bundle and client certificate, mounted read-only (only the keys needed)."""
    ext = gw.redis.get("external") or {} if gw.mode == "external" else {}
    vols: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if ext.get("caSecretRef"):
        ref = ext["caSecretRef"]
        vols.append({"name": EXT_CA_VOLUME, "secret": {"secretName": ref["name"],
                                                       "items": [{"key": ref["key"], "path": "ca.crt"}]}})
        mounts.append({"name": EXT_CA_VOLUME, "mountPath": EXT_CA_DIR, "readOnly": True})
    if ext.get("clientCertSecretName"):
        vols.append({"name": EXT_CLIENT_VOLUME, "secret": {"secretName": ext["clientCertSecretName"], "items": [
            {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}})
        mounts.append({"name": EXT_CLIENT_VOLUME, "mountPath": EXT_CLIENT_DIR, "readOnly": True})
    return vols, mounts


def sidecar_volumes(spec: Any, gateway_name: str | None = None) -> list[dict[str, Any]]:
    """Volumes the injected pod needs: the config directory and, with provisioned TLS, the CA (only ca.crt)."""
    gw = gateway_of(spec, gateway_name)
    vols: list[dict[str, Any]] = [
        {"name": CONFIG_VOLUME, "configMap": {"name": sidecar_configmap_name(gw.name)}},
    ]
    if gw.tls and gw.mode != "external":
        vols.append({"name": TLS_VOLUME, "secret": {"secretName": gw.redis["tls"]["secretName"],
                                                    "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
    return vols + _external_tls_volumes(gw)[0]


def sidecar_volume_mounts(spec: Any, gateway_name: str | None = None) -> list[dict[str, Any]]:
    gw = gateway_of(spec, gateway_name)
    mounts = [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}]
    if gw.tls and gw.mode != "external":
        mounts.append({"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True})
    return mounts + _external_tls_volumes(gw)[1]


def redis_endpoints(gw: Gateway) -> dict[str, Any]:
    """Where clients reach Redis, per mode (also reported in status.redis). Never contains a password."""
    if gw.mode == "external":
        ext = gw.redis["external"]
        out: dict[str, Any] = {"mode": ext["mode"]}
        if ext["mode"] == "standalone":
            out["url"] = ext.get("url") or f"(from Secret {ext['urlSecretRef']['name']})"
        elif ext["mode"] == "sentinel":
            out.update(sentinels=list(ext["sentinels"]), masterName=ext["masterName"])
        else:
            out["nodes"] = list(ext["nodes"])
        if ext.get("passwordSecretRef"):
            out["passwordSecret"] = ext["passwordSecretRef"]["name"]
        return out
    out = {"mode": gw.mode}
    if gw.mode == "standalone":
        scheme = "rediss" if gw.tls else "redis"
        out["url"] = f"{scheme}://{gw.svc_host(gw.redis_name)}:{REDIS_PORT}/0"
    elif gw.mode == "sentinel":
        out.update(sentinels=[f"{h}:{SENTINEL_PORT}" for h in gw.sentinel_pod_hosts()],
                   masterName=SENTINEL_MASTER_NAME)
    else:
        total = gw.redis["shards"] * (1 + gw.redis["replicasPerShard"])
        out["nodes"] = [f"{h}:{REDIS_PORT}" for h in gw.redis_pod_hosts(total)]
    if gw.auth:
        out["passwordSecret"] = gw.auth_secret_name
    return out


def _redis_section(gw: Gateway) -> dict[str, Any]:
    ep = redis_endpoints(gw)
    sec: dict[str, Any] = {"mode": ep["mode"], "op_timeout_ms": gw.sidecar.redis_timeout_ms, "key_prefix": KEY_PREFIX}
    if gw.mode == "external":
        ext = gw.redis["external"]
        if ext["mode"] == "standalone":
            sec["url"] = ext["url"] if ext.get("url") else ENV_REF + REDIS_URL_ENV
        if ext.get("passwordSecretRef"):
            sec["password"] = ENV_REF + REDIS_PASSWORD_ENV
        if ext["tls"] or str(ext.get("url", "")).startswith("rediss://") or ext.get("caSecretRef") \
                or ext.get("clientCertSecretName"):
            sec["tls"] = {"enabled": True}
        if ext.get("caSecretRef"):
            sec["tls"]["ca_file"] = f"{EXT_CA_DIR}/ca.crt"
        if ext.get("clientCertSecretName"):
            sec["tls"].update(cert_file=f"{EXT_CLIENT_DIR}/tls.crt", key_file=f"{EXT_CLIENT_DIR}/tls.key")
        if ext.get("username"):
            sec["username"] = ext["username"]
        if ext.get("iam"):
            iam = ext["iam"]
            sec["iam"] = {"provider": iam["provider"]}
            for src, dst in (("gcpServiceAccount", "gcp_service_account"), ("awsRegion", "aws_region"),
                             ("awsCacheName", "aws_cache_name"), ("awsServerless", "aws_serverless")):
                if src in iam:
                    sec["iam"][dst] = iam[src]
    else:
        if gw.auth:
            sec["password"] = ENV_REF + REDIS_PASSWORD_ENV
        if gw.tls:
            sec["tls"] = {"enabled": True, "ca_file": f"{TLS_DIR}/ca.crt"}
    if ep["mode"] == "standalone" and "url" not in sec:
        sec["url"] = ep["url"]
    if ep["mode"] == "sentinel":
        sec.update(sentinels=ep["sentinels"], master_name=ep["masterName"])
        if "password" in sec and gw.mode != "external":
            sec["sentinel_password"] = sec["password"]  # our sentinels use the same password as the data nodes
    if ep["mode"] == "cluster":
        sec["nodes"] = ep["nodes"]
    return sec


def _model(m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": m["name"], "provider": m["provider"]}
    for src, dst in (("model", "model"), ("baseUrl", "base_url"), ("apiVersion", "api_version")):
        if m.get(src):
            out[dst] = m[src]
    if m.get("apiKeySecretRef"):
        out["api_key"] = ENV_REF + model_key_env(m["name"])
    if m.get("headers"):
        out["headers"] = dict(m["headers"])
    if m.get("limits"):
        lim = m["limits"]
        out["limits"] = {k: lim[c] for c, k in (("rpm", "rpm"), ("tpm", "tpm"), ("maxParallel", "max_parallel"))
                         if c in lim}
    if m.get("pricing"):
        p = m["pricing"]
        out["pricing"] = {"input_per_1m": p["inputPer1M"], "output_per_1m": p["outputPer1M"]}
        if "cachedInputPer1M" in p:
            out["pricing"]["cached_input_per_1m"] = p["cachedInputPer1M"]
    if "timeoutSeconds" in m:
        out["timeouts"] = {"total_s": m["timeoutSeconds"]}
    if "maxRetries" in m:
        out["retry"] = {"max_retries": m["maxRetries"]}
    return out


def _cache(c: dict[str, Any]) -> dict[str, Any]:
    ex, se = c["exact"], c["semantic"]
    emb = se["embedding"]
    embedding: dict[str, Any] = {"provider": emb["provider"], "precision": emb["precision"]}
    for src, dst in (("modelDir", "model_dir"), ("baseUrl", "base_url"), ("model", "model"), ("dims", "dims")):
        if emb.get(src):
            embedding[dst] = emb[src]
    if emb.get("apiKeySecretRef") and se["enabled"]:
        embedding["api_key"] = ENV_REF + EMBEDDING_KEY_ENV
    return {
        "scope": c["scope"],
        "generation": c.get("generation", 0),
        "exact": {"enabled": ex["enabled"], "ttl_s": ex["ttlSeconds"], "max_entry_bytes": ex["maxEntryBytes"]},
        "semantic": {
            "enabled": se["enabled"],
            "distance_threshold": se["distanceThreshold"],
            "ttl_s": se["ttlSeconds"],
            "max_prompt_chars": se["maxPromptChars"],
            "embedding": embedding,
        },
    }


def render_sidecar_config(gw: Gateway) -> dict[str, Any]:
    """The sidecar config document, validated with the sidecar's own parser. Raises SpecError when invalid."""
    spec, sidecar, lim = gw.spec, gw.sidecar, gw.limits
    doc: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": sidecar.port},
        "gateway": {"name": gw.name, "namespace": gw.namespace},
        "redis": _redis_section(gw),
        "models": [_model(m) for m in spec["models"]],
        "cache": _cache(spec["cache"]),
        "limits": {
            "fail_open": sidecar.fail_open,
            "default_max_tokens": lim.default_max_tokens,
            "decision_timeout_ms": lim.decision_timeout_ms,
            "unreachable_after_s": lim.unreachable_after_s,
            "heartbeat_interval_s": lim.heartbeat_interval_s,
            "scopes": [
                {"scope": s["scope"], **{k: s[c] for c, k in (("rpm", "rpm"), ("tpm", "tpm"),
                                                              ("maxParallel", "max_parallel")) if c in s}}
                for s in lim.scopes
            ],
        },
        "budgets": [{"scope": b["scope"], "period": b["period"], "max_usd": b["maxUsd"]}
                    for b in spec.get("budgets", [])],
    }
    if sidecar.metrics_port:
        doc["metrics"] = {"port": sidecar.metrics_port, "host": "0.0.0.0"}
    if spec["cache"].get("adminTokenSecretRef"):
        doc["admin"] = {"token": ENV_REF + ADMIN_TOKEN_ENV}  # the token itself stays in its Secret
    validate_rendered(gw, doc, "InvalidSidecarConfig")
    return doc


def validate_rendered(gw: Gateway, doc: dict[str, Any], reason: str) -> None:
    """Validate a rendered config exactly as the sidecar (or the shared gateway) will load it. The environment holds
    only the variables we inject, so a reference to anything else fails here, not at start-up; the external Redis URL
    from a Secret stands in as a URL (the config checks its scheme)."""
    environ = {e["name"]: "redis://placeholder:6379/0" if e["name"] == REDIS_URL_ENV else "placeholder"
               for e in sidecar_secret_env(gw)}
    try:
        parse_config(doc, environ=environ)
    except ConfigError as e:
        raise SpecError(reason, str(e)) from None


def sidecar_configmap(gw: Gateway) -> Manifest:
    doc = render_sidecar_config(gw)
    text = yaml.safe_dump(doc, sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(gw, sidecar_configmap_name(gw.name), "sidecar-config",
                             {"llmgateway.dev/config-hash": content_hash(doc)}),
        "data": {CONFIG_KEY: text},
    }

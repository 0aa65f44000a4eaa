"""Pure builders of the shared gateway: every object strictly valid for the supported Kubernetes range, the rendered config
is the sidecar's (same renderer, same schema) listening on 0.0.0.0 with gateway auth, secrets only referenced."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmgw_operator import gateway_client
from llmgw_operator.builders import Gateway, SpecError, build_all
from llmgw_operator.builders import gateway as gwb
from llmgw_operator.builders.sidecar_config import CONFIG_KEY, render_sidecar_config
from llmgw_sidecar.config import parse_config
from tests.kube_schema import validate_strict

MODELS = [
    {"name": "gpt-4o-mini", "baseUrl": "https://api.openai.com/v1", "apiKeySecretRef": {"name": "openai", "key": "k"}},
    {"name": "demo", "provider": "mock"},
]
OPTIONS: dict[str, list[dict[str, Any]]] = {
    "scaling": [{}, {"replicas": 3}, {"autoscaling": {}},
                {"autoscaling": {"minReplicas": 3, "maxReplicas": 30, "targetCPUUtilizationPercentage": 60}},
                {"autoscaling": {"enabled": False}, "replicas": 1}],
    "service": [{}, {"service": {"type": "LoadBalancer", "port": 8080}}],
    "pdb": [{}, {"podDisruptionBudget": {"enabled": False}}, {"podDisruptionBudget": {"maxUnavailable": 0}}],
    "namespaces": [{}, {"allowedNamespaces": {}}, {"allowedNamespaces": {"matchLabels": {"llm": "yes"}}},
                   {"allowedNamespaces": {"matchExpressions": [{"key": "team", "operator": "In",
                                                                "values": ["a", "b"]}]}}],
    "auth": [{}, {"auth": {"allowAnonymous": True, "virtualKeys": False}},
             {"auth": {"serviceAccountTokens": False, "tokenCacheSeconds": 60, "audience": "example.com/llm"}}],
    "resources": [{}, {"resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"cpu": 2}}},
                  {"image": "registry.example/llmgw:1.2"}],
}


def gateway(redis: dict[str, Any] | None = None, **g: Any) -> Gateway:
    return Gateway.from_spec("gw", "team-a", {"redis": redis or {}, "models": MODELS, "gateway": g})


def by(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]


def combos() -> list[dict[str, Any]]:
    # Every option once against the defaults, plus the full product of the two that interact (scaling x pdb).
    out = [dict(o) for opts in OPTIONS.values() for o in opts]
    out += [{**a, **b} for a, b in itertools.product(OPTIONS["scaling"], OPTIONS["pdb"])]
    return out


@pytest.mark.parametrize("redis", [{}, {"tls": {"enabled": True, "secretName": "redis-tls"}}])
@pytest.mark.parametrize("opts", combos())
def test_every_object_is_valid_for_129_and_133(redis: dict[str, Any], opts: dict[str, Any]) -> None:
    objs = gwb.build(gateway(redis, **opts), key_secrets=["team-a-key", "team-b-key"])
    validate_strict(objs)
    kinds = [o["kind"] for o in objs]
    assert kinds[:6] == ["ServiceAccount", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service",
                         "NetworkPolicy"], kinds
    assert ("HorizontalPodAutoscaler" in kinds) == bool(opts.get("autoscaling", {}).get("enabled", "autoscaling" in opts))
    assert ("PodDisruptionBudget" in kinds) == opts.get("podDisruptionBudget", {}).get("enabled", True)
    # Deterministic: a second render is identical (no needless patches).
    assert gwb.build(gateway(redis, **opts), key_secrets=["team-b-key", "team-a-key"]) == objs


def test_config_is_the_sidecar_config_on_all_interfaces_with_gateway_auth() -> None:
    g = gateway(allowedNamespaces={"matchLabels": {"llm": "yes"}})
    cfg = yaml.safe_load(by(gwb.build(g), "ConfigMap")["data"][CONFIG_KEY])
    sidecar = render_sidecar_config(g)
    assert sidecar["listen"]["host"] == "127.0.0.1" and "auth" not in sidecar  # the sidecar stays on loopback
    assert cfg["listen"] == {**sidecar["listen"], "host": "0.0.0.0", "port": gwb.API_PORT}
    assert {k: v for k, v in cfg.items() if k not in ("listen", "auth")} == \
        {k: v for k, v in sidecar.items() if k not in ("listen", "auth")}
    assert cfg["auth"]["mode"] == "gateway" and cfg["auth"]["allow_anonymous"] is False
    tr = cfg["auth"]["token_review"]
    assert (tr["audience"], tr["max_cache_s"], tr["allowed_namespaces"]["match_labels"]) == \
        ("llmgateway.dev", 300, {"llm": "yes"})
    parsed = parse_config(cfg, environ={"LLMGW_KEY_GPT_4O_MINI": "x", "LLMGW_REDIS_PASSWORD": "x"})
    assert parsed.auth.virtual_keys.dir == gwb.KEYS_DIR


def test_deployment_security_identity_probes_and_secret_references() -> None:
    objs = gwb.build(gateway(), image="img:1", key_secrets=["k1"])
    dep = by(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "img:1" and dep["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == "gw-gateway" == by(objs, "ServiceAccount")["metadata"]["name"]
    sec = c["securityContext"]
    assert sec["runAsNonRoot"] and sec["readOnlyRootFilesystem"] and sec["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == gwb.UID
    assert {p: c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == \
        {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    env = {e["name"]: e for e in c["env"]}
    assert env["LLMGW_KEY_GPT_4O_MINI"]["valueFrom"]["secretKeyRef"] == {"name": "openai", "key": "k"}
    assert env["LLMGW_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "gw-redis-auth"
    assert all("value" not in e or e["name"] in ("HF_HUB_OFFLINE",) for e in c["env"])
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["llmgw-config"]["configMap"]["name"] == "gw-gateway"
    (src,) = vols[gwb.KEYS_VOLUME]["projected"]["sources"]
    assert src["secret"]["name"] == "k1" and src["secret"]["optional"] is True
    assert {i["path"] for i in src["secret"]["items"]} >= {"k1/key", "k1/scope", "k1/rpm", "k1/budgetUsd"}
    # Without virtual-key Secrets, or with virtual keys off, nothing is mounted.
    assert gwb.KEYS_VOLUME not in {v["name"] for v in by(gwb.build(gateway()), "Deployment")["spec"]["template"]
                                   ["spec"]["volumes"]}
    off = gwb.build(gateway(auth={"virtualKeys": False}), key_secrets=["k1"])
    assert gwb.KEYS_VOLUME not in str(by(off, "Deployment"))


def test_service_network_policy_autoscaler_binding() -> None:
    objs = gwb.build(gateway(service={"port": 8080}, autoscaling={"maxReplicas": 5}), cluster_role="rel-gateway")
    svc = by(objs, "Service")
    assert svc["spec"]["ports"][0] == {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    assert gwb.endpoint(gateway(service={"port": 8080})) == "http://gw-gateway.team-a.svc:8080/v1"
    assert "replicas" not in by(objs, "Deployment")["spec"]  # the HPA owns the count
    hpa = by(objs, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"], hpa["scaleTargetRef"]["name"]) == (2, 5, "gw-gateway")
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    np = by(objs, "NetworkPolicy")["spec"]
    # Unset allowedNamespaces: only the gateway's own namespace; the metrics port is open to Prometheus.
    assert np["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {gwb.NAMESPACE_NAME_LABEL: "team-a"}}}]
    assert np["ingress"][1] == {"ports": [{"port": "metrics", "protocol": "TCP"}]}
    everyone = by(gwb.build(gateway(allowedNamespaces={})), "NetworkPolicy")["spec"]
    assert everyone["ingress"][0]["from"] == [{"namespaceSelector": {}}]
    crb = by(objs, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == "rel-gateway" and "namespace" not in crb["metadata"]
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "gw-gateway", "namespace": "team-a"}]


def test_bad_autoscaling_is_a_spec_error_and_no_gateway_builds_nothing() -> None:
    with pytest.raises(SpecError) as e:
        gwb.build(gateway(autoscaling={"minReplicas": 5, "maxReplicas": 2}))
    assert e.value.reason == "InvalidAutoscaling"
    plain = Gateway.from_spec("gw", "team-a", {"redis": {}, "models": MODELS})
    assert gwb.build(plain) == []
    assert gwb.build(gateway(enabled=False)) == []
    # The sidecar objects do not change when a gateway is added.
    assert build_all(plain, "pw") == build_all(gateway(), "pw")


def test_shared_gateway_examples_build_and_validate() -> None:
    examples = Path(__file__).resolve().parents[2] / "manifests" / "examples"
    doc = yaml.safe_load((examples / "gateway-shared.yaml").read_text())
    g = Gateway.from_spec(doc["metadata"]["name"], doc["metadata"]["namespace"], doc["spec"])
    objs = gwb.build(g, key_secrets=["ci-pipeline"])
    validate_strict(objs)
    assert {o["kind"] for o in objs} >= {"Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler"}
    assert gwb.endpoint(g) == "http://llm-gateway.llm.svc:80/v1"
    clients = list(yaml.safe_load_all((examples / "shared-gateway-clients.yaml").read_text()))
    validate_strict(clients)
    job = next(d for d in clients if d["kind"] == "Job")
    ns, name = gateway_client.requested_shared_gateway(job["spec"]["template"], "team-a") or ("", "")
    assert (ns, name) == (doc["metadata"]["namespace"], doc["metadata"]["name"])
    key = next(d for d in clients if d["kind"] == "Secret")
    assert key["metadata"]["labels"][gwb.VIRTUAL_KEY_LABEL] == doc["metadata"]["name"]
    assert set(key["stringData"]) <= set(gwb.VIRTUAL_KEY_FIELDS)


def test_external_redis_url_from_a_secret_renders_for_the_gateway_as_for_the_sidecar() -> None:
    """Both configs are validated by one function: the URL env reference stands in as a URL for both (the gateway's
    own copy of the check used a bare placeholder and refused this spec)."""
    g = gateway({"mode": "external", "external": {"mode": "standalone",
                                                  "urlSecretRef": {"name": "redis-url", "key": "url"}}})
    assert render_sidecar_config(g)["redis"]["url"] == "os.environ/LLMGW_REDIS_URL"
    assert gwb.render_gateway_config(g)["redis"]["url"] == "os.environ/LLMGW_REDIS_URL"

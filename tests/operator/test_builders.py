"""Pure builders: every mode and option combination renders a complete, strictly valid set of objects (Kubernetes
1.27 (the oldest supported) and the newest bundled version), deterministically, with secrets only ever referenced."""

from __future__ import annotations

import base64
import itertools
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from llmgw_operator.builders import Gateway, SpecError, build_all
from llmgw_operator.builders.cluster import shard_of
from llmgw_operator.builders.redis_conf import _maxmemory_from_limit
from llmgw_operator.builders.sidecar_config import (
    CONFIG_KEY,
    model_key_env,
    render_sidecar_config,
    sidecar_configmap_name,
    sidecar_secret_env,
    sidecar_volume_mounts,
    sidecar_volumes,
)
from llmgw_operator.crd import openapi_schema, to_json_schema
from llmgw_sidecar.config import parse_config
from tests.kube_schema import validate_strict

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
PASSWORD = "s3cret-generated"
MODELS = [
    {"name": "gpt-4o-mini", "baseUrl": "https://api.openai.com/v1", "apiKeySecretRef": {"name": "openai", "key": "k"},
     "limits": {"rpm": 10, "maxParallel": 2}, "pricing": {"inputPer1M": 0.15, "outputPer1M": 0.6},
     "timeoutSeconds": 30, "maxRetries": 1, "headers": {"x-team": "a"}},
    {"name": "demo", "provider": "mock"},
]


def gw(redis: dict[str, Any] | None = None, name: str = "gw", **spec: Any) -> Gateway:
    return Gateway.from_spec(name, "ns", {"redis": redis or {}, "models": MODELS, **spec})


def by(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def sidecar_cfg(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(by(objs, "ConfigMap", "gw-sidecar")["data"][CONFIG_KEY])


MODES = ["standalone", "sentinel", "cluster"]
OPTIONS = {
    "auth": [{}, {"auth": {"enabled": False}}, {"auth": {"secretName": "mine", "secretKey": "pw"}}],
    "tls": [{}, {"tls": {"enabled": True, "secretName": "redis-tls"}}],
    "storage": [{}, {"storage": {"enabled": False}}, {"storage": {"size": "5Gi", "storageClassName": "ssd"}}],
    "pdb": [{}, {"podDisruptionBudget": {"enabled": False}}],
    "placement": [{}, {"nodeSelector": {"pool": "redis"},
                       "tolerations": [{"key": "d", "operator": "Exists", "effect": "NoSchedule"}],
                       "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                                                      "whenUnsatisfiable": "DoNotSchedule"}],
                       "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                           "nodeSelectorTerms": [{"matchExpressions": [
                               {"key": "pool", "operator": "In", "values": ["redis"]}]}]}}}}],
    "resources": [{}, {"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                       "sentinel": {"resources": {"requests": {"cpu": "20m"}}}}],
}


def combos() -> list[tuple[str, dict[str, Any]]]:
    """Every mode x every combination of option values (3 x 216)."""
    keys = list(OPTIONS)
    out = []
    for mode in MODES:
        for values in itertools.product(*(OPTIONS[k] for k in keys)):
            merged: dict[str, Any] = {"mode": mode}
            for v in values:
                merged.update(v)
            out.append((mode, merged))
    return out


COMBOS = combos()


@pytest.mark.parametrize("mode,redis", COMBOS, ids=[f"{m}-{i}" for i, (m, _r) in enumerate(COMBOS)])
def test_every_combination_is_complete_and_strictly_valid(mode: str, redis: dict[str, Any]) -> None:
    g = gw(redis)
    objs = build_all(g, PASSWORD)
    validate_strict(objs)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("ConfigMap", "gw-sidecar") in kinds and ("ConfigMap", "gw-redis-config") in kinds
    assert ("StatefulSet", "gw-redis") in kinds and ("Service", "gw-redis-headless") in kinds
    assert (("Secret", "gw-redis-auth") in kinds) == g.auth_secret_generated
    assert (("PodDisruptionBudget", "gw-redis") in kinds) == g.redis["podDisruptionBudget"]["enabled"]
    assert len(kinds) == len(objs), "no duplicate objects"
    for o in objs:
        assert o["metadata"]["namespace"] == "ns"
        assert o["metadata"]["labels"]["llmgateway.dev/gateway"] == "gw"
        if o["kind"] != "Secret":
            assert PASSWORD not in yaml.safe_dump(o), f"the password leaked into {o['kind']}"
    sts = by(objs, "StatefulSet", "gw-redis")
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert ("REDIS_PASSWORD" in env) == g.auth
    if g.auth:
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": g.auth_secret_name,
                                                                      "key": g.auth_secret_key}
    assert env["POD_FQDN"]["value"] == "$(POD_NAME).gw-redis-headless.ns.svc.cluster.local"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert ("tls" in vols) == g.tls
    assert ("volumeClaimTemplates" in sts["spec"]) == g.redis["storage"]["enabled"]
    assert ("data" in vols) == (not g.redis["storage"]["enabled"])
    if redis.get("nodeSelector"):
        assert pod["nodeSelector"] == {"pool": "redis"} and pod["tolerations"][0]["key"] == "d"
        assert pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"] == \
            sts["spec"]["selector"]["matchLabels"]
        assert "nodeAffinity" in pod["affinity"]
    else:
        assert "podAntiAffinity" in pod["affinity"]
    conf = by(objs, "ConfigMap", "gw-redis-config")["data"]["redis.conf"]
    assert "appendonly yes" in conf
    assert ("tls-port 6379" in conf) == g.tls and ("port 0" in conf) == g.tls
    start = by(objs, "ConfigMap", "gw-redis-config")["data"]["start.sh"]
    assert "loadmodule" not in conf and "/opt/redis-stack/lib /usr/local/lib/redis/modules" in start  # found at start
    if redis.get("resources"):
        assert f"maxmemory {int(1024**3 * 0.8)}" in conf
    # The sidecar config is valid in the sidecar's own schema and references only injected env vars.
    cfg = sidecar_cfg(objs)
    names = {e["name"] for e in sidecar_secret_env(g)}
    parse_config(cfg, environ=dict.fromkeys(names, "x"))
    assert ("password" in cfg["redis"]) == g.auth
    assert cfg["redis"]["mode"] == mode


def test_build_is_deterministic() -> None:
    for mode in MODES:
        a = build_all(gw({"mode": mode}), PASSWORD)
        b = build_all(gw({"mode": mode}), "another-password")
        strip = [o for o in a if o["kind"] != "Secret"]
        assert strip == [o for o in b if o["kind"] != "Secret"], "only the generated Secret depends on the password"


def test_generated_secret_holds_the_given_password() -> None:
    secret = by(build_all(gw(), PASSWORD), "Secret")
    assert base64.b64decode(secret["data"]["password"]).decode() == PASSWORD
    assert secret["metadata"]["annotations"]["llmgateway.dev/generated"] == "true"


def test_standalone_objects() -> None:
    objs = build_all(gw({"podDisruptionBudget": {"maxUnavailable": 0}}), PASSWORD)
    sts = by(objs, "StatefulSet", "gw-redis")
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == "gw-redis-headless"
    assert by(objs, "Service", "gw-redis-headless")["spec"]["clusterIP"] == "None"
    assert by(objs, "Service", "gw-redis-headless")["spec"]["publishNotReadyAddresses"] is True
    assert "clusterIP" not in by(objs, "Service", "gw-redis")["spec"]
    assert by(objs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 0
    assert sidecar_cfg(objs)["redis"]["url"] == "redis://gw-redis.ns.svc.cluster.local:6379/0"
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_sentinel_objects_announce_stable_names() -> None:
    objs = build_all(gw({"mode": "sentinel", "replicas": 2, "sentinel": {"count": 5, "quorum": 3}}), PASSWORD)
    data, sent = by(objs, "StatefulSet", "gw-redis"), by(objs, "StatefulSet", "gw-sentinel")
    assert data["spec"]["replicas"] == 3 and sent["spec"]["replicas"] == 5
    scripts = by(objs, "ConfigMap", "gw-redis-config")["data"]
    assert 'replica-announce-ip $POD_FQDN' in scripts["start.sh"]
    assert "sentinel resolve-hostnames yes" in scripts["sentinel-start.sh"]
    assert "sentinel announce-hostnames yes" in scripts["sentinel-start.sh"]
    assert "sentinel monitor llmgw $master 6379 3" in scripts["sentinel-start.sh"]
    assert "gw-redis-0.gw-redis-headless.ns.svc.cluster.local" in scripts["start.sh"]
    cfg = sidecar_cfg(objs)["redis"]
    assert cfg["mode"] == "sentinel" and cfg["master_name"] == "llmgw"
    assert cfg["sentinels"] == [f"gw-sentinel-{i}.gw-sentinel-headless.ns.svc.cluster.local:26379" for i in range(5)]
    assert cfg["sentinel_password"] == cfg["password"] == "os.environ/LLMGW_REDIS_PASSWORD"
    sent_env = {e["name"] for e in sent["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"REDIS_PASSWORD", "POD_FQDN"} <= sent_env


def test_cluster_objects_and_shard_layout() -> None:
    objs = build_all(gw({"mode": "cluster", "shards": 4, "replicasPerShard": 2}), PASSWORD)
    sts = by(objs, "StatefulSet", "gw-redis")
    assert sts["spec"]["replicas"] == 12
    conf = by(objs, "ConfigMap", "gw-redis-config")["data"]
    assert "cluster-enabled yes" in conf["redis.conf"]
    assert "cluster-preferred-endpoint-type hostname" in conf["redis.conf"]
    assert "cluster-announce-hostname $POD_FQDN" in conf["start.sh"]
    ports = {p["name"]: p["port"] for p in by(objs, "Service", "gw-redis-headless")["spec"]["ports"]}
    assert ports == {"redis": 6379, "cluster-bus": 16379}
    nodes = sidecar_cfg(objs)["redis"]["nodes"]
    assert len(nodes) == 12 and nodes[0] == "gw-redis-0.gw-redis-headless.ns.svc.cluster.local:6379"
    # Adding shards appends pods: existing ordinals keep their shard.
    assert [shard_of(i, 2) for i in range(12)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_external_mode_provisions_nothing_but_the_sidecar_config() -> None:
    g = gw({"mode": "external", "external": {"mode": "sentinel", "sentinels": ["s1:26379", "s2:26379"],
                                             "masterName": "m", "passwordSecretRef": {"name": "ext", "key": "pw"}}})
    objs = build_all(g, PASSWORD)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [("ConfigMap", "gw-sidecar")]
    cfg = sidecar_cfg(objs)["redis"]
    assert cfg == {"mode": "sentinel", "op_timeout_ms": 50, "key_prefix": "llmgw",
                   "password": "os.environ/LLMGW_REDIS_PASSWORD", "sentinels": ["s1:26379", "s2:26379"],
                   "master_name": "m"}
    env = sidecar_secret_env(g)
    assert env[0] == {"name": "LLMGW_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "ext", "key": "pw"}}}


def test_external_url_from_secret_is_an_env_reference() -> None:
    g = gw({"mode": "external", "external": {"urlSecretRef": {"name": "r", "key": "url"}}})
    cfg = sidecar_cfg(build_all(g, PASSWORD))["redis"]
    assert cfg["url"] == "os.environ/LLMGW_REDIS_URL"
    assert {"name": "LLMGW_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "r", "key": "url"}}} in \
        sidecar_secret_env(g)
    rediss = gw({"mode": "external", "external": {"url": "rediss://redis.example:6380/0"}})
    assert sidecar_cfg(build_all(rediss, PASSWORD))["redis"]["tls"] == {"enabled": True}


def test_sidecar_config_maps_every_spec_section() -> None:
    g = gw(cache={"scope": "pod", "exact": {"ttlSeconds": 60},
                  "semantic": {"enabled": True, "distanceThreshold": 0.1,
                               "embedding": {"provider": "openai", "baseUrl": "https://e.example/v1",
                                             "model": "text-embedding-3-small", "dims": 1536,
                                             "apiKeySecretRef": {"name": "emb", "key": "k"}}}},
           limits={"defaultMaxTokens": 256, "scopes": [{"scope": "namespace", "rpm": 100, "maxParallel": 4}]},
           budgets=[{"scope": "namespace", "period": "month", "maxUsd": 100}],
           sidecar={"port": 4100, "failOpen": False, "redisTimeoutMilliseconds": 20})
    cfg = render_sidecar_config(g)
    m = cfg["models"][0]
    assert m == {"name": "gpt-4o-mini", "provider": "openai", "base_url": "https://api.openai.com/v1",
                 "api_key": "os.environ/LLMGW_KEY_GPT_4O_MINI", "headers": {"x-team": "a"},
                 "limits": {"rpm": 10, "max_parallel": 2},
                 "pricing": {"input_per_1m": 0.15, "output_per_1m": 0.6}, "timeouts": {"total_s": 30},
                 "retry": {"max_retries": 1}}
    assert cfg["models"][1] == {"name": "demo", "provider": "mock"}
    assert cfg["listen"] == {"host": "127.0.0.1", "port": 4100}
    assert cfg["gateway"] == {"name": "gw", "namespace": "ns"}
    assert cfg["cache"]["scope"] == "pod" and cfg["cache"]["exact"]["ttl_s"] == 60
    assert cfg["cache"]["semantic"]["embedding"]["api_key"] == "os.environ/LLMGW_EMBEDDING_API_KEY"
    assert cfg["limits"] == {"fail_open": False, "default_max_tokens": 256, "decision_timeout_ms": 250,
                             "unreachable_after_s": 2, "heartbeat_interval_s": 2,
                             "scopes": [{"scope": "namespace", "rpm": 100, "max_parallel": 4}]}
    assert cfg["budgets"] == [{"scope": "namespace", "period": "month", "max_usd": 100}]
    assert cfg["redis"]["op_timeout_ms"] == 20
    names = [e["name"] for e in sidecar_secret_env(g)]
    assert names == ["LLMGW_REDIS_PASSWORD", "LLMGW_KEY_GPT_4O_MINI", "LLMGW_EMBEDDING_API_KEY"]


LIMIT_TIMINGS = [("decisionTimeoutMilliseconds", "decision_timeout_ms"),
                 ("unreachableAfterSeconds", "unreachable_after_s"),
                 ("heartbeatIntervalSeconds", "heartbeat_interval_s")]


def test_limit_decision_timings_go_from_the_crd_to_the_sidecar_config() -> None:
    """spec.limits' decision deadline and outage settings: the CRD defaults are the sidecar's own defaults, every value
    the CRD admits (its bounds included) renders into a config the sidecar accepts with that value, and values outside
    the bounds are refused by the CRD schema."""
    spec_schema = openapi_schema()["properties"]["spec"]
    check = jsonschema.Draft202012Validator(to_json_schema(spec_schema))

    def load(spec: dict[str, Any]) -> Any:
        g = Gateway.from_spec("gw", "ns", spec)
        return parse_config(render_sidecar_config(g), environ={e["name"]: "x" for e in sidecar_secret_env(g)})

    sidecar_defaults = parse_config({"models": [{"name": "m", "provider": "mock"}]}).limits
    assert load({"models": MODELS}).limits == sidecar_defaults
    for crd_field, field in LIMIT_TIMINGS:
        node = spec_schema["properties"]["limits"]["properties"][crd_field]
        assert node["default"] == getattr(sidecar_defaults, field), crd_field
        # exclusive minimums: API servers check an integer against int(minimum), so "minimum: 0.1" alone let 0 in
        lowest = node["minimum"] * 1.5 if node.get("exclusiveMinimum") else node["minimum"]
        for value in (lowest, node["default"], node["maximum"]):
            spec = {"models": MODELS, "limits": {crd_field: value}}
            check.validate(spec)
            assert getattr(load(spec).limits, field) == value, (crd_field, value)
        for value in (0, node["minimum"] / 2, node["maximum"] * 2):
            errors = list(check.iter_errors({"models": MODELS, "limits": {crd_field: value}}))
            assert [list(e.absolute_path) for e in errors] == [["limits", crd_field]], (crd_field, value)


def test_clashing_model_env_names_are_a_spec_error() -> None:
    models = [{"name": "a-b", "provider": "mock", "apiKeySecretRef": {"name": "s", "key": "k"}},
              {"name": "a.b", "provider": "mock", "apiKeySecretRef": {"name": "s", "key": "k"}}]
    with pytest.raises(SpecError) as e:
        build_all(Gateway.from_spec("gw", "ns", {"models": models}), PASSWORD)
    assert e.value.reason == "ModelNameClash" and model_key_env("a-b") == "LLMGW_KEY_A_B"


def test_sidecar_schema_violation_is_a_spec_error() -> None:
    g = Gateway.from_spec("gw", "ns", {"models": [{"name": "m", "provider": "openai"}]})  # no baseUrl: CEL's job
    with pytest.raises(SpecError) as e:
        render_sidecar_config(g)
    assert e.value.reason == "InvalidSidecarConfig" and "base_url" in e.value.message


def test_long_names_are_refused() -> None:
    with pytest.raises(SpecError) as e:
        Gateway.from_spec("g" * 41, "ns", {"models": MODELS})
    assert e.value.reason == "NameTooLong"
    longest = build_all(Gateway.from_spec("g" * 40, "ns", {"redis": {"mode": "sentinel"}, "models": MODELS}),
                        PASSWORD)
    validate_strict(longest)
    for o in longest:
        if o["kind"] == "StatefulSet":
            assert len(o["metadata"]["name"]) + 11 <= 63, "name + '-' + revision hash must fit a label value"


def test_interface_for_the_injection_webhook() -> None:
    spec = {"redis": {"tls": {"enabled": True, "secretName": "tls"}}, "models": MODELS}
    assert sidecar_configmap_name("chat") == "chat-sidecar"
    env = sidecar_secret_env(spec, "chat")
    assert env[0]["valueFrom"]["secretKeyRef"] == {"name": "chat-redis-auth", "key": "password"}
    vols = sidecar_volumes(spec, "chat")
    assert vols[0] == {"name": "llmgw-config", "configMap": {"name": "chat-sidecar"}}
    assert vols[1]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], "only the CA, never the server key"
    mounts = sidecar_volume_mounts(spec, "chat")
    assert all("subPath" not in m for m in mounts), "a subPath mount would never see config updates"
    with pytest.raises(TypeError):
        sidecar_secret_env(spec)


@pytest.mark.parametrize("limit,expected", [("1Gi", str(int(1024**3 * 0.8))), ("512Mi", str(int(512 * 1024**2 * 0.8))),
                                            ("1G", "800000000"), ("1000000", "800000"), ("lots", None)])
def test_maxmemory_from_memory_limit(limit: str, expected: str | None) -> None:
    assert _maxmemory_from_limit({"limits": {"memory": limit}}) == expected


def test_shell_scripts_parse() -> None:
    for mode in MODES:
        for tls in (False, True):
            redis: dict[str, Any] = {"mode": mode}
            if tls:
                redis["tls"] = {"enabled": True, "secretName": "t"}
            data = by(build_all(gw(redis), PASSWORD), "ConfigMap", "gw-redis-config")["data"]
            for key, script in data.items():
                if key.endswith(".sh"):
                    r = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True, check=False)
                    assert r.returncode == 0, f"{mode} {key}: {r.stderr}"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("gateway-*.yaml")), ids=lambda p: p.name)
def test_each_example_builds_a_valid_set(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    g = Gateway.from_spec(doc["metadata"]["name"], doc["metadata"]["namespace"], doc["spec"])
    objs = build_all(g, PASSWORD)
    validate_strict(objs)
    assert any(o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-sidecar") for o in objs)


def test_statefulset_immutable_changes_are_named_and_server_additions_are_not_changes() -> None:
    from llmgw_operator.apply import ApplyError, _check_statefulset_immutables
    from llmgw_operator.drift import drifted

    sts = by(build_all(gw(), PASSWORD), "StatefulSet")
    server = yaml.safe_load(yaml.safe_dump(sts))
    # What the API server adds to claim templates must not count as a change.
    server["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"] = "Filesystem"
    server["spec"]["volumeClaimTemplates"][0]["status"] = {"phase": "Pending"}
    _check_statefulset_immutables(sts, server)
    assert not drifted(sts, server)
    bigger = by(build_all(gw({"storage": {"size": "5Gi"}}), PASSWORD), "StatefulSet")
    with pytest.raises(ApplyError) as e:
        _check_statefulset_immutables(bigger, server)
    assert e.value.reason == "ImmutableFieldChanged" and "5Gi" in e.value.message


def test_drift_is_a_changed_or_missing_rendered_value_not_a_normalised_one() -> None:
    from llmgw_operator.drift import drifted

    want = {"spec": {"cpu": "0.5", "tolerations": [{"key": "a"}], "nodeSelector": {"disk": "ssd"}}}
    assert not drifted(want, {"spec": {"cpu": "500m", "tolerations": [{"key": "a", "operator": "Equal"}],
                                       "nodeSelector": {"disk": "ssd"}, "extra": 1}})
    assert drifted(want, {"spec": {"cpu": "1", "tolerations": [{"key": "a"}], "nodeSelector": {"disk": "ssd"}}})
    assert drifted(want, {"spec": {"cpu": "0.5", "tolerations": [], "nodeSelector": {"disk": "ssd"}}})
    assert drifted(want, {"spec": {"cpu": "0.5", "tolerations": [{"key": "a"}], "nodeSelector": {}}})
    assert drifted({"image": "redis:7"}, {"image": "redis:8"})

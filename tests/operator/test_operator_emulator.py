"""The operator end to end against kmock's Kubernetes emulator: each example CR yields its objects (owned by the
gateway, schema-valid) and a truthful status; updates patch; a missing Secret is a precise condition plus an Event."""

from __future__ import annotations

import base64
import copy
import datetime as dt
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis as redis_lib
import yaml

from llmgw_operator.apply import HASH_ANNOTATION
from tests.operator.conftest import GW_PATH, NS, Cluster
from tests.redis_servers import free_port, standalone

pytestmark = pytest.mark.timeout(60)
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
NEWEST = kubernetes_validate.latest_version()


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"gateway-{name}.yaml").read_text())


def condition(gw: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((gw or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return None


def children(cluster: Cluster) -> list[dict[str, Any]]:
    out = []
    for plural, gv in (("secrets", "v1"), ("configmaps", "v1"), ("services", "v1"), ("statefulsets", "apps/v1"),
                       ("poddisruptionbudgets", "policy/v1")):
        out += [o for o in cluster.objects(plural, gv).values()
                if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "llmgw-operator"]
    return out


async def secrets_for(cluster: Cluster, body: dict[str, Any]) -> None:
    names = {m["apiKeySecretRef"]["name"] for m in body["spec"]["models"] if m.get("apiKeySecretRef")}
    for n in sorted(names):
        await cluster.create_secret(n, {"api-key": "sk-test"})


EXPECTED = {
    "standalone": {("ConfigMap", "chat-sidecar"), ("ConfigMap", "chat-redis-config"), ("Secret", "chat-redis-auth"),
                   ("Service", "chat-redis"), ("Service", "chat-redis-headless"), ("StatefulSet", "chat-redis"),
                   ("PodDisruptionBudget", "chat-redis")},
    "sentinel": {("ConfigMap", "support-sidecar"), ("ConfigMap", "support-redis-config"),
                 ("Secret", "support-redis-auth"), ("Service", "support-redis-headless"),
                 ("Service", "support-sentinel"), ("Service", "support-sentinel-headless"),
                 ("StatefulSet", "support-redis"), ("StatefulSet", "support-sentinel"),
                 ("PodDisruptionBudget", "support-redis"), ("PodDisruptionBudget", "support-sentinel")},
    "cluster": {("ConfigMap", "batch-sidecar"), ("ConfigMap", "batch-redis-config"), ("Secret", "batch-redis-auth"),
                ("Service", "batch-redis"), ("Service", "batch-redis-headless"), ("StatefulSet", "batch-redis"),
                ("PodDisruptionBudget", "batch-redis")},
}


@pytest.mark.parametrize("mode", ["standalone", "sentinel", "cluster"])
async def test_example_yields_owned_valid_children_and_truthful_status(operator: Cluster, mode: str) -> None:
    body = example(mode)
    name = body["metadata"]["name"]
    await secrets_for(operator, body)
    await operator.create_gateway(body)
    gw = await operator.wait("status", lambda: condition(operator.gateway(name), "Ready"))
    objs = await operator.wait("children", lambda: (o := children(operator)) and
                               {(x["kind"], x["metadata"]["name"]) for x in o} >= EXPECTED[mode] and o)
    assert {(x["kind"], x["metadata"]["name"]) for x in objs} == EXPECTED[mode]
    uid = operator.gateway(name)["metadata"]["uid"]
    for obj in objs:
        refs = obj["metadata"]["ownerReferences"]
        assert refs == [{"apiVersion": "llmgateway.dev/v1alpha1", "kind": "LLMGateway", "name": name, "uid": uid,
                         "controller": True, "blockOwnerDeletion": True}], obj["metadata"]["name"]
        clean = copy.deepcopy(obj)
        for k in ("uid", "resourceVersion", "generation", "creationTimestamp"):
            clean["metadata"].pop(k, None)
        for version in ("1.27", NEWEST):
            kubernetes_validate.validate(clean, version, strict=True)
    gw = operator.gateway(name)
    st = gw["status"]
    assert st["observedGeneration"] == 1
    # No pod ever becomes ready in the emulator: the status must say so, not claim readiness.
    assert condition(gw, "ConfigReady")["status"] == "True"
    redis_ready = condition(gw, "RedisReady")
    assert redis_ready["status"] == "False" and redis_ready["reason"] == "PodsNotReady"
    ready = condition(gw, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PodsNotReady"
    assert st["sidecar"]["configMap"] == f"{name}-sidecar" and len(st["sidecar"]["configHash"]) == 64
    assert st["redis"]["mode"] == mode and st["redis"]["passwordSecret"] == f"{name}-redis-auth"
    if mode == "standalone":
        assert st["redis"]["url"] == f"redis://{name}-redis.{NS}.svc.cluster.local:6379/0"
    if mode == "sentinel":
        assert len(st["redis"]["sentinels"]) == 3 and st["redis"]["masterName"] == "llmgw"
    if mode == "cluster":
        assert len(st["redis"]["nodes"]) == 6 and st["redis"]["desiredMembers"] == 6


async def test_second_pass_changes_nothing_and_update_patches(operator: Cluster) -> None:
    body = example("standalone")
    await secrets_for(operator, body)
    await operator.create_gateway(body)
    await operator.wait("statefulset", lambda: operator.objects("statefulsets", "apps/v1").get("chat-redis"))
    await operator.wait("status", lambda: condition(operator.gateway("chat"), "Ready"))
    sts_before = operator.objects("statefulsets", "apps/v1")["chat-redis"]
    cm_before = operator.objects("configmaps")["chat-sidecar"]
    secret_before = operator.objects("secrets")["chat-redis-auth"]
    writes_before = _writes(operator)
    await _sleep(1.5)  # three timer passes at 0.5 s
    assert _writes(operator) == writes_before, "a pass over an unchanged spec must not write children"
    assert operator.objects("secrets")["chat-redis-auth"] == secret_before, "the generated password is stable"

    await operator.patch(f"{GW_PATH}/chat", {"spec": {"cache": {"exact": {"ttlSeconds": 60}},
                                                      "redis": {"storage": {"size": "1Gi"}, "maxmemory": "300mb"}}})
    cm = await operator.wait("config patched", lambda: (c := operator.objects("configmaps")["chat-sidecar"])
                             ["metadata"]["annotations"][HASH_ANNOTATION]
                             != cm_before["metadata"]["annotations"][HASH_ANNOTATION] and c)
    assert "ttl_s: 60" in cm["data"]["config.yaml"]
    sts = await operator.wait("statefulset patched", lambda: (s := operator.objects("statefulsets", "apps/v1")
                                                              ["chat-redis"])["metadata"]["annotations"]
                              [HASH_ANNOTATION] != sts_before["metadata"]["annotations"][HASH_ANNOTATION] and s)
    assert sts["spec"]["template"]["metadata"]["annotations"]["llmgateway.dev/config-hash"] != \
        sts_before["spec"]["template"]["metadata"]["annotations"]["llmgateway.dev/config-hash"]
    await operator.wait("observedGeneration 2", lambda: operator.gateway("chat")["status"]["observedGeneration"] == 2)


async def create_then_disable_pdb(operator: Cluster) -> None:
    """Create the standalone example, then turn its PDB off and wait until the operator pruned it."""
    body = example("standalone")
    await secrets_for(operator, body)
    await operator.create_gateway(body)
    await operator.wait("pdb", lambda: operator.objects("poddisruptionbudgets", "policy/v1").get("chat-redis"))
    await operator.patch(f"{GW_PATH}/chat", {"spec": {"redis": {"podDisruptionBudget": {"enabled": False}}}})
    await operator.wait("pdb pruned", lambda: "chat-redis" not in operator.objects("poddisruptionbudgets",
                                                                                      "policy/v1"))


async def test_disabling_the_pdb_prunes_it(operator: Cluster) -> None:
    await create_then_disable_pdb(operator)
    assert "chat-redis" in operator.objects("statefulsets", "apps/v1")


async def test_missing_secret_is_a_precise_condition_and_event_then_recovers(operator: Cluster) -> None:
    body = example("standalone")
    await operator.create_gateway(body)  # the Secret "openai" does not exist
    gw = await operator.wait("ConfigReady False", lambda: (c := condition(operator.gateway("chat"), "ConfigReady"))
                             and c["status"] == "False" and operator.gateway("chat"))
    cfg = condition(gw, "ConfigReady")
    assert cfg["reason"] == "SecretNotFound"
    assert "team-a/openai" in cfg["message"] and "api-key" in cfg["message"]
    assert condition(gw, "Ready")["reason"] == "SecretNotFound"
    events = await operator.wait("event", lambda: [e for e in operator.objects("events").values()
                                                   if e.get("reason") == "SecretNotFound"])
    assert events[0]["type"] == "Warning" and events[0]["involvedObject"]["name"] == "chat"
    # Redis is provisioned anyway (it does not need the key); no crash loop, the timer keeps checking.
    assert "chat-redis" in operator.objects("statefulsets", "apps/v1")
    await operator.create_secret("openai", {"api-key": "sk-test"})
    await operator.wait("ConfigReady True", lambda: condition(operator.gateway("chat"), "ConfigReady")["status"]
                        == "True")
    assert condition(operator.gateway("chat"), "Ready")["reason"] == "PodsNotReady"


async def test_secret_without_the_key_is_reported(operator: Cluster) -> None:
    body = example("standalone")
    await operator.create_secret("openai", {"token": "sk-test"})
    await operator.create_gateway(body)
    c = await operator.wait("ConfigReady", lambda: (c := condition(operator.gateway("chat"), "ConfigReady"))
                            and c["status"] == "False" and c)
    assert c["reason"] == "SecretKeyNotFound" and "'api-key'" in c["message"]


async def test_standalone_ready_end_to_end_with_a_real_redis(operator: Cluster, tmp_path: Path) -> None:
    """Pods ready is not enough: the operator PINGs Redis with the generated password, then reads spend from it."""
    body = example("standalone")
    await secrets_for(operator, body)
    await operator.create_gateway(body)
    secret = await operator.wait("generated password", lambda: operator.objects("secrets").get("chat-redis-auth"))
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) >= 32
    # Play the StatefulSet controller: the pod is ready. Nothing listens yet: the status must say so.
    await _ready(operator, "chat-redis", 1)
    c = await operator.wait("Unreachable", lambda: (c := condition(operator.gateway("chat"), "RedisReady"))
                            and c["reason"] == "Unreachable" and c)
    assert c["status"] == "False" and c["message"].startswith("1/1 Redis pods ready, but")
    # Now "the pod" is a real Redis Stack with the password from the generated Secret.
    port = free_port()
    proc = standalone(port, tmp_path / "redis", extra=["--requirepass", password]).start(wait=False)
    client = redis_lib.Redis(port=port, password=password)
    await operator.wait("redis up", lambda: _pings(client))
    day = dt.datetime.now(dt.UTC).date().isoformat()
    client.hset(f"llmgw:spend:{{{NS}/chat}}:day:{day}", mapping={"requests": 4, "hits": 1, "cost_nusd": 2 * 10**8})
    try:
        operator.dial["chat-redis.team-a.svc.cluster.local:6379"] = f"127.0.0.1:{port}"
        gw = await operator.wait("Ready", lambda: (g := operator.gateway("chat")) and
                                 (condition(g, "Ready") or {}).get("status") == "True" and
                                 (g["status"].get("spend") or {}).get("todayRequests") == 4 and g)
        assert condition(gw, "RedisReady")["reason"] == "Ready"
        assert gw["status"]["spend"]["todayUsd"] == 0.2 and gw["status"]["spend"]["todayHitRatio"] == 0.25
        assert gw["status"]["redis"]["readyMembers"] == 1
        events = await operator.wait("Ready event", lambda: [e for e in operator.objects("events").values()
                                                             if e.get("reason") == "Ready"])
        assert events[0]["type"] == "Normal" and events[0]["involvedObject"]["name"] == "chat"
        await _sleep(1.0)  # two more timer passes: no new events without a new verdict
        reasons = sorted(e["reason"] for e in operator.objects("events").values()
                         if e["involvedObject"]["name"] == "chat" and e["reason"] in ("PodsNotReady", "Unreachable",
                                                                                      "Ready"))
        # PodsNotReady may or may not have been a verdict (the test marks the pod ready as soon as it exists).
        assert {"Ready", "Unreachable"} <= set(reasons) and len(reasons) == len(set(reasons)), \
            f"one Event per change of the Ready verdict: {reasons}"
    finally:
        client.close()
        proc.kill()


async def test_external_mode_reports_reachability_and_spend(operator: Cluster, redis_standalone: str) -> None:
    body = example("external")
    body["metadata"]["name"] = "ext"
    await operator.create_secret("shared-redis", {"url": redis_standalone})
    await operator.create_secret("openai", {"api-key": "sk-test"})
    today = dt.datetime.now(dt.UTC).date().isoformat()
    r = redis_lib.Redis.from_url(redis_standalone)
    key = f"llmgw:spend:{{{NS}/ext}}:day:{today}"
    r.hset(key, mapping={"requests": 10, "hits": 4, "cost_nusd": 1_500_000_000, "saved_nusd": 600_000_000})
    try:
        await operator.create_gateway(body)
        gw = await operator.wait("spend", lambda: (g := operator.gateway("ext")) and (g.get("status") or {})
                                 .get("spend") and g)
        assert condition(gw, "RedisReady")["reason"] == "Reachable"
        assert condition(gw, "Ready")["status"] == "True"
        spend = gw["status"]["spend"]
        assert spend["todayUsd"] == 1.5 and spend["todayRequests"] == 10 and spend["todayHitRatio"] == 0.4
        assert children(operator) == [] or {c["kind"] for c in children(operator)} == {"ConfigMap"}
        cm = operator.objects("configmaps")["ext-sidecar"]
        assert "os.environ/LLMGW_REDIS_URL" in cm["data"]["config.yaml"]
        assert redis_standalone not in cm["data"]["config.yaml"], "the URL Secret never lands in the ConfigMap"
    finally:
        r.delete(key)
        r.close()


async def test_external_unreachable_is_reported(operator: Cluster) -> None:
    body = example("external")
    body["spec"]["redis"]["external"] = {"mode": "standalone", "url": "redis://127.0.0.1:1/0"}
    await operator.create_secret("openai", {"api-key": "sk-test"})
    await operator.create_gateway(body)
    c = await operator.wait("RedisReady", lambda: (c := condition(operator.gateway("shared"), "RedisReady"))
                            and c["status"] == "False" and c)
    assert c["reason"] == "Unreachable" and "ConnectionError" in c["message"]


async def test_invalid_rendered_config_is_reported_without_crashing(operator: Cluster) -> None:
    body = example("standalone")
    # Passes the CRD schema (the emulator has no CEL), but the sidecar schema refuses it: two names, one env var.
    body["spec"]["models"] = [
        {"name": "gpt-4o", "baseUrl": "https://a.example/v1", "apiKeySecretRef": {"name": "k", "key": "a"}},
        {"name": "gpt.4o", "baseUrl": "https://a.example/v1", "apiKeySecretRef": {"name": "k", "key": "b"}},
    ]
    await operator.create_gateway(body)
    c = await operator.wait("ConfigReady", lambda: (c := condition(operator.gateway("chat"), "ConfigReady"))
                            and c["status"] == "False" and c)
    assert c["reason"] == "ModelNameClash" and "LLMGW_KEY_GPT_4O" in c["message"]
    assert "chat-sidecar" not in operator.objects("configmaps"), "an invalid config is never written"
    assert "chat-redis" in operator.objects("statefulsets", "apps/v1")


async def test_deleted_gateway_is_left_to_garbage_collection(operator: Cluster) -> None:
    body = example("standalone")
    await secrets_for(operator, body)
    await operator.create_gateway(body)
    await operator.wait("statefulset", lambda: operator.objects("statefulsets", "apps/v1").get("chat-redis"))
    uid = operator.gateway("chat")["metadata"]["uid"]
    await operator.delete(f"{GW_PATH}/chat")
    # The running operator releases kopf's finalizer once the gateway's timers have stopped (seconds; more on a busy
    # machine). The emulator keeps objects that still carry finalizers, so "gone" proves the release.
    await operator.wait("gateway gone", lambda: operator.gateway("chat") is None, timeout=60)
    # Every child carries a controller reference to the gateway's uid, which is what drives the API
    # server's garbage collector (the emulator has none).
    objs = children(operator)
    assert objs
    for obj in objs:
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
    writes = _writes(operator)
    await _sleep(1.2)
    assert _writes(operator) == writes, "nothing is recreated for a deleted gateway"


def _writes(cluster: Cluster) -> int:
    return sum(1 for r in cluster.k8s if r.method in ("POST", "PATCH", "PUT", "DELETE")
               and "/llmgateways" not in r.url.path and "/events" not in r.url.path)


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


def _pings(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.ConnectionError:
        return False


async def _ready(cluster: Cluster, sts: str, n: int) -> None:
    await cluster.wait(sts, lambda: cluster.objects("statefulsets", "apps/v1").get(sts))
    await cluster.patch(f"/apis/apps/v1/namespaces/{NS}/statefulsets/{sts}/status",
                        {"status": {"replicas": n, "readyReplicas": n}})


async def test_sentinel_counts_data_and_sentinel_pods(operator: Cluster) -> None:
    body = example("sentinel")
    await secrets_for(operator, body)
    await operator.create_gateway(body)
    await _ready(operator, "support-redis", 3)
    gw = await operator.wait("members", lambda: (g := operator.gateway("support")) and
                             (g.get("status") or {}).get("redis", {}).get("readyMembers") == 3 and g)
    assert gw["status"]["redis"]["desiredMembers"] == 6
    assert condition(gw, "RedisReady")["message"] == "3/6 Redis pods ready"
    await _ready(operator, "support-sentinel", 3)
    # All pods ready, but no sentinel answers (their names do not resolve here): not Ready, and it says why.
    c = await operator.wait("Unreachable", lambda: (c := condition(operator.gateway("support"), "RedisReady"))
                            and c["reason"] == "Unreachable" and c)
    assert c["message"].startswith("6/6 Redis pods ready, but")


async def test_cluster_with_ready_pods_runs_the_bootstrap_and_reports_its_state(operator: Cluster) -> None:
    body = example("cluster")
    await secrets_for(operator, body)
    await operator.create_gateway(body)
    await _ready(operator, "batch-redis", 6)
    # The pods' DNS names do not exist here: the bootstrap pass must report that, change nothing, and not crash.
    c = await operator.wait("cluster state", lambda: (c := condition(operator.gateway("batch"), "RedisReady"))
                            and c["reason"] == "ClusterNotHealthy" and c)
    assert c["status"] == "False" and c["message"].startswith("pending: members not reachable")
    assert "batch-redis-0.batch-redis-headless.team-a.svc.cluster.local:6379" in c["message"]
    assert operator.gateway("batch")["status"]["redis"]["clusterState"] == c["message"]


async def test_a_broken_edit_keeps_the_last_good_sidecar_config(operator: Cluster) -> None:
    body = example("standalone")
    await secrets_for(operator, body)
    await operator.create_gateway(body)
    good = await operator.wait("config", lambda: operator.objects("configmaps").get("chat-sidecar"))
    clash = [{"name": "a-b", "provider": "mock", "apiKeySecretRef": {"name": "openai", "key": "api-key"}},
             {"name": "a.b", "provider": "mock", "apiKeySecretRef": {"name": "openai", "key": "api-key"}}]
    await operator.patch(f"{GW_PATH}/chat", {"spec": {"models": clash}})
    c = await operator.wait("ModelNameClash", lambda: (c := condition(operator.gateway("chat"), "ConfigReady"))
                            and c["reason"] == "ModelNameClash" and c)
    assert c["status"] == "False"
    await _sleep(1.0)
    assert operator.objects("configmaps").get("chat-sidecar") == good, "running sidecars keep their last good config"
    assert "chat-redis" in operator.objects("poddisruptionbudgets", "policy/v1"), "nothing is pruned meanwhile"


async def test_storage_resize_is_reported_not_attempted_and_the_rest_still_applies(operator: Cluster) -> None:
    body = example("standalone")
    await secrets_for(operator, body)
    await operator.create_gateway(body)
    sts = await operator.wait("sts", lambda: operator.objects("statefulsets", "apps/v1").get("chat-redis"))
    await operator.patch(f"{GW_PATH}/chat", {"spec": {"redis": {"storage": {"size": "5Gi"}, "maxmemory": "100mb"},
                                                      "cache": {"exact": {"ttlSeconds": 7}}}})
    c = await operator.wait("ImmutableFieldChanged", lambda: (c := condition(operator.gateway("chat"), "RedisReady"))
                            and c["reason"] == "ImmutableFieldChanged" and c)
    assert "1Gi" in c["message"] and "5Gi" in c["message"] and "--cascade=orphan" in c["message"]
    assert condition(operator.gateway("chat"), "Ready")["reason"] == "ImmutableFieldChanged"
    await operator.wait("config applied", lambda: "ttl_s: 7" in operator.objects("configmaps")["chat-sidecar"]
                        ["data"]["config.yaml"])
    await operator.wait("redis.conf applied", lambda: "maxmemory 100mb" in operator.objects("configmaps")
                        ["chat-redis-config"]["data"]["redis.conf"])
    now = operator.objects("statefulsets", "apps/v1")["chat-redis"]
    assert now["metadata"]["annotations"] == sts["metadata"]["annotations"], "the StatefulSet was not patched"


async def test_prune_only_touches_objects_owned_by_this_gateway(operator: Cluster) -> None:
    labels = {"llmgateway.dev/gateway": "chat", "app.kubernetes.io/managed-by": "llmgw-operator"}
    for name, refs in (("chat-someone-elses", []),
                       ("chat-other-owner", [{"apiVersion": "llmgateway.dev/v1alpha1", "kind": "LLMGateway",
                                              "name": "chat", "uid": "not-this-one", "controller": True}])):
        await operator.create(f"/api/v1/namespaces/{NS}/configmaps",
                              {"apiVersion": "v1", "kind": "ConfigMap", "data": {},
                               "metadata": {"name": name, "namespace": NS, "labels": labels, "ownerReferences": refs}})
    await create_then_disable_pdb(operator)
    cms = operator.objects("configmaps")
    assert "chat-someone-elses" in cms and "chat-other-owner" in cms

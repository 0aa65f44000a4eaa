"""The operator process against a real API server, as the chart's ServiceAccount with exactly the chart's RBAC:
the four example gateways reconciled (children, owner references, honest status), edits that REMOVE fields,
drift repair, missing Secrets named, garbage collection on delete, no 403 anywhere, and deleting a gateway while no
operator runs as docs/operations.md says (Terminating until an operator runs again, or until the finalizer is removed).

No kubelet or scheduler runs, so Redis pods never exist: the status must say so, never claim readiness."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from llmgw_operator.apply import FIELD_MANAGER
from llmgw_operator.builders import Gateway, build_all
from llmgw_operator.crd import GROUP, PLURAL, VERSION, defaulted_spec
from tests.apiserver.cluster import wait_for
from tests.apiserver.conftest import MODES, Installed, condition, example, gateway, secrets_for
from tests.apiserver.operator_proc import OperatorProcess, start_operator

NS = "reconcile"
NAMES = {"standalone": "chat", "sentinel": "support", "cluster": "batch", "external": "shared"}
LISTS = {"Secret": ("CoreV1Api", "secret"), "ConfigMap": ("CoreV1Api", "config_map"),
         "Service": ("CoreV1Api", "service"), "StatefulSet": ("AppsV1Api", "stateful_set")}
MERGE = "application/merge-patch+json"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


@pytest.fixture(scope="module")
def operator(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    server = installed.server
    server.ensure_namespace(NS)
    secrets_for(server, NS)
    op = start_operator("reconciler", installed.sa_kubeconfig, tmp_path_factory.mktemp("oplogs"))
    yield op
    op.stop()


def children(api: client.ApiClient, name: str) -> list[dict[str, Any]]:
    out = []
    for kind, (cls, suffix) in LISTS.items():
        lst = getattr(getattr(client, cls)(api), f"list_namespaced_{suffix}")(
            NS, label_selector=f"llmgateway.dev/gateway={name}")
        for obj in api.sanitize_for_serialization(lst)["items"]:
            out.append({"kind": kind, **obj})
    return out


def expected(doc: dict[str, Any]) -> set[tuple[str, str]]:
    gw = Gateway.from_spec(doc["metadata"]["name"], NS, defaulted_spec(doc["spec"]))
    return {(m["kind"], m["metadata"]["name"]) for m in build_all(gw, "x")}


def sts(api: client.ApiClient, name: str) -> dict[str, Any]:
    return api.sanitize_for_serialization(client.AppsV1Api(api).read_namespaced_stateful_set(name, NS))


def patch_gateway(api: client.ApiClient, name: str, patch: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, patch,
                                                                _content_type=MERGE)


def reconciled(api: client.ApiClient, name: str) -> dict[str, Any] | None:
    gw = gateway(api, NS, name)
    st = (gw or {}).get("status") or {}
    return gw if st.get("observedGeneration") == gw["metadata"]["generation"] and condition(gw, "Ready") else None


@pytest.fixture(scope="module")
def examples(installed: Installed, operator: OperatorProcess) -> dict[str, dict[str, Any]]:
    api = installed.server.client()
    docs = {m: example(m, NS) for m in MODES}
    for doc in docs.values():
        installed.server.apply(doc, "kubectl")
    for mode, doc in docs.items():
        wait_for(f"{mode} gateway reconciled", lambda n=doc["metadata"]["name"]: reconciled(api, n), 60)
    return docs


@pytest.mark.parametrize("mode", MODES)
def test_examples_get_their_children_owned_and_an_honest_status(installed: Installed, operator: OperatorProcess,
                                                                examples: dict[str, dict[str, Any]],
                                                                mode: str) -> None:
    api = installed.server.client()
    name = NAMES[mode]
    gw = gateway(api, NS, name)
    assert gw is not None
    want = expected(examples[mode])
    objs = wait_for(f"{name}'s children {sorted(want)}", lambda: (o := children(api, name)) and
                    {(x["kind"], x["metadata"]["name"]) for x in o} >= want and o, 30)
    assert {(x["kind"], x["metadata"]["name"]) for x in objs} == want
    for obj in objs:
        md = obj["metadata"]
        assert md["ownerReferences"] == [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "LLMGateway", "name": name,
                                          "uid": gw["metadata"]["uid"], "controller": True,
                                          "blockOwnerDeletion": True}], md["name"]
        managers = {(m["manager"], m["operation"]) for m in md["managedFields"]}
        want = "Update" if obj["kind"] == "Secret" else "Apply"  # the generated password is created once
        assert (FIELD_MANAGER, want) in managers, (md["name"], managers)

    ready, redis_ready = condition(gw, "Ready"), condition(gw, "RedisReady")
    assert condition(gw, "ConfigReady")["status"] == "True"
    assert ready["status"] == "False" and redis_ready["status"] == "False"
    if mode == "external":
        assert redis_ready["reason"] == "Unreachable"  # the example's URL points at a closed port
    else:
        # Pods never run here: the status says how many are ready (none), never "Ready".
        assert redis_ready["reason"] == "PodsNotReady" and redis_ready["message"].startswith("0/"), redis_ready
    assert not operator.forbidden(), operator.forbidden()


def test_an_unchanged_gateway_causes_no_writes(installed: Installed, operator: OperatorProcess,
                                               examples: dict[str, dict[str, Any]]) -> None:
    api = installed.server.client()
    before = {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in children(api, "chat")}
    count = operator.log().count("refresh")
    wait_for("two more timer passes", lambda: operator.log().count("refresh") >= count + 2 or None, 20)
    after = {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in children(api, "chat")}
    assert after == before


def test_removed_fields_disappear_from_live_objects(installed: Installed, operator: OperatorProcess,
                                                    examples: dict[str, dict[str, Any]]) -> None:
    api = installed.server.client()
    pod = lambda n: sts(api, n)["spec"]["template"]["spec"]  # noqa: E731
    assert pod("support-redis").get("topologySpreadConstraints")
    assert pod("batch-redis").get("tolerations")
    patch_gateway(api, "chat", {"spec": {"redis": {"nodeSelector": {"disk": "ssd"}}}})
    wait_for("nodeSelector applied", lambda: pod("chat-redis").get("nodeSelector") == {"disk": "ssd"}, 30)

    patch_gateway(api, "chat", {"spec": {"redis": {"nodeSelector": None}}})
    patch_gateway(api, "support", {"spec": {"redis": {"topologySpreadConstraints": None}}})
    patch_gateway(api, "batch", {"spec": {"redis": {"tolerations": None}}})
    wait_for("nodeSelector removed", lambda: not pod("chat-redis").get("nodeSelector"), 30)
    wait_for("topology spread removed", lambda: not pod("support-redis").get("topologySpreadConstraints"), 30)
    wait_for("tolerations removed", lambda: not pod("batch-redis").get("tolerations"), 30)
    for name in ("chat", "support", "batch"):
        wait_for(f"{name} reconciled", lambda n=name: reconciled(api, n), 30)
    assert not operator.forbidden(), operator.forbidden()


def test_drift_of_an_owned_field_is_repaired(installed: Installed, operator: OperatorProcess,
                                             examples: dict[str, dict[str, Any]]) -> None:
    api = installed.server.client()
    # Someone scales the Redis StatefulSet by hand (`kubectl scale`/`edit`): the operator's spec wins again.
    client.AppsV1Api(api).patch_namespaced_stateful_set("chat-redis", NS, {"spec": {"replicas": 3}},
                                                        field_manager="kubectl-edit", _content_type=MERGE)
    assert sts(api, "chat-redis")["spec"]["replicas"] == 3
    wait_for("replicas restored", lambda: sts(api, "chat-redis")["spec"]["replicas"] == 1, 30)


def test_a_missing_secret_is_named_in_the_status(installed: Installed, operator: OperatorProcess,
                                                 examples: dict[str, dict[str, Any]]) -> None:
    api = installed.server.client()
    doc = example("external", NS, "nourl")
    doc["spec"]["redis"]["external"]["urlSecretRef"] = {"name": "no-such-secret", "key": "url"}
    installed.server.apply(doc, "kubectl")
    gw = wait_for("nourl reconciled", lambda: reconciled(api, "nourl"), 30)
    for kind in ("ConfigReady", "RedisReady"):
        c = condition(gw, kind)
        assert c["status"] == "False" and c["reason"] == "SecretNotFound", c
        assert f"Secret {NS}/no-such-secret does not exist" in c["message"], c
    assert "ValueError" not in str(gw["status"])


def test_deleting_a_gateway_garbage_collects_its_children(installed: Installed, operator: OperatorProcess,
                                                          examples: dict[str, dict[str, Any]]) -> None:
    api = installed.server.client()
    assert children(api, "batch")
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "batch")
    # The running operator releases its finalizer at once; the controller-manager's garbage collector then deletes
    # every object with an owner reference to the gone gateway (it sees a new kind after a discovery resync, 30 s).
    wait_for("gateway gone", lambda: gateway(api, NS, "batch") is None, 30)
    wait_for("children collected", lambda: not children(api, "batch"), 90, interval_s=1)
    assert children(api, "chat"), "other gateways keep theirs"


def test_the_operator_never_got_a_403(operator: OperatorProcess, examples: dict[str, dict[str, Any]],
                                      tmp_path: Path) -> None:
    assert operator.alive()
    assert not operator.forbidden(), operator.forbidden()


def test_with_the_operator_stopped_a_deleted_gateway_waits_as_documented(
        installed: Installed, operator: OperatorProcess, examples: dict[str, dict[str, Any]], tmp_path: Path,
        operators: list[OperatorProcess]) -> None:
    """Last in this module: it stops the module's operator."""
    api = installed.server.client()
    custom = client.CustomObjectsApi(api)
    for name in ("chat", "support"):
        assert FINALIZER in gateway(api, NS, name)["metadata"]["finalizers"]
    operator.stop()
    for name in ("chat", "support"):
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    time.sleep(2)
    for name in ("chat", "support"):
        gw = gateway(api, NS, name)
        assert gw is not None and gw["metadata"].get("deletionTimestamp"), "Terminating while no operator runs"

    # docs/operations.md: remove the finalizer when the operator is gone for good ...
    patch_gateway(api, "support", {"metadata": {"finalizers": None}})
    wait_for("support gone", lambda: gateway(api, NS, "support") is None, 30)
    # ... or run an operator again: it releases the gateway.
    operators.append(start_operator("restarted", installed.sa_kubeconfig, tmp_path))
    wait_for("chat gone", lambda: gateway(api, NS, "chat") is None, 60)

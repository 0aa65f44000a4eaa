"""The shared gateway on a real API server: `kubectl apply` of the example LLMGateway with spec.gateway, reconciled by
the operator process running as the chart's ServiceAccount with exactly the chart's RBAC. The API server itself checks
every object, the owner references, and that the operator may bind the gateway ClusterRole (RBAC escalation check).

1.20 serves neither autoscaling/v2 nor policy/v1: the example runs with fixed replicas and no PDBs here (those
builders are validated for 1.29/1.33 in tests/gateway/test_builders.py). No kubelet: ready replicas stay 0."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from llmgw_operator.builders import gateway as gwb
from llmgw_sidecar.devredis import free_port
from tests.apiserver.cluster import wait_for
from tests.apiserver.conftest import Installed, condition, gateway, secrets_for
from tests.apiserver.operator_proc import OperatorProcess, start_operator

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "manifests" / "examples"
NS = "shared-gw"
MERGE = "application/merge-patch+json"


def gateway_role(installed: Installed) -> str:
    return next(r["metadata"]["name"] for r in installed.kinds("ClusterRole") if r["metadata"]["name"].endswith(
        "-gateway"))


@pytest.fixture(scope="module")
def operator(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    server = installed.server
    server.ensure_namespace(NS)
    secrets_for(server, NS)
    # The chart's gateway ClusterRole itself (the fixture installs the operator's RBAC only).
    server.apply(next(r for r in installed.kinds("ClusterRole") if r["metadata"]["name"] == gateway_role(installed)),
                 "helm")
    op = start_operator("shared-gw", installed.sa_kubeconfig, tmp_path_factory.mktemp("oplogs"),
                        extra_env={"LLMGW_GATEWAY_CLUSTER_ROLE": gateway_role(installed)})
    yield op
    op.stop()


def example() -> dict[str, Any]:
    doc = copy.deepcopy(yaml.safe_load((EXAMPLES / "gateway-shared.yaml").read_text()))
    doc["metadata"]["namespace"] = NS
    doc["spec"]["gateway"].pop("autoscaling")
    doc["spec"]["gateway"]["replicas"] = 2
    doc["spec"]["gateway"]["podDisruptionBudget"] = {"enabled": False}
    doc["spec"]["redis"]["podDisruptionBudget"] = {"enabled": False}
    return doc


def read(api: client.ApiClient, kind: str, name: str) -> dict[str, Any] | None:
    calls = {"Deployment": lambda: client.AppsV1Api(api).read_namespaced_deployment(name, NS),
             "Service": lambda: client.CoreV1Api(api).read_namespaced_service(name, NS),
             "ServiceAccount": lambda: client.CoreV1Api(api).read_namespaced_service_account(name, NS),
             "ConfigMap": lambda: client.CoreV1Api(api).read_namespaced_config_map(name, NS),
             "NetworkPolicy": lambda: client.NetworkingV1Api(api).read_namespaced_network_policy(name, NS),
             "ClusterRoleBinding": lambda: client.RbacAuthorizationV1Api(api).read_cluster_role_binding(name)}
    try:
        return api.sanitize_for_serialization(calls[kind]())
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def test_example_gets_deployment_service_policy_and_binding(installed: Installed, operator: OperatorProcess) -> None:
    server = installed.server
    api = server.client()
    server.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "ci-pipeline", "namespace": NS, "labels": {gwb.VIRTUAL_KEY_LABEL: "llm"}},
        "stringData": {"key": "vk-ci-pipeline-0123456789abcdef", "scope": "ci"}})
    doc = example()
    server.apply(doc, "kubectl")
    name = "llm-gateway"
    objs = {k: wait_for(f"{k} {name}", lambda k=k: read(api, k, name), 60)
            for k in ("ServiceAccount", "ConfigMap", "Deployment", "Service", "NetworkPolicy")}
    crb = wait_for("the ClusterRoleBinding", lambda: read(api, "ClusterRoleBinding", f"llmgw-gateway:{NS}:llm"), 30)
    uid = gateway(api, NS, "llm")["metadata"]["uid"]
    for kind, obj in objs.items():
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid, kind
    # Cluster-scoped: no (invalid) owner reference to the gateway; the labels name it for pruning. Its owner is the
    # chart's gateway ClusterRole (cluster-scoped too): uninstalling the chart deletes the bindings.
    role_uid = client.RbacAuthorizationV1Api(api).read_cluster_role(gateway_role(installed)).metadata.uid
    assert crb["metadata"]["ownerReferences"] == [{"apiVersion": "rbac.authorization.k8s.io/v1",
                                                   "kind": "ClusterRole", "name": gateway_role(installed),
                                                   "uid": role_uid}]
    assert crb["roleRef"]["name"] == gateway_role(installed)
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NS}]
    dep = objs["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2 and pod["serviceAccountName"] == name
    keys = next(v for v in pod["volumes"] if v["name"] == gwb.KEYS_VOLUME)
    assert keys["projected"]["sources"][0]["secret"]["name"] == "ci-pipeline"
    cfg = yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"])
    assert cfg["listen"]["host"] == "0.0.0.0" and cfg["auth"]["mode"] == "gateway"
    assert objs["NetworkPolicy"]["spec"]["ingress"][0]["from"][0]["namespaceSelector"] == \
        {"matchLabels": {"llmgateway.dev/clients": "yes"}}
    st = wait_for("status.gateway", lambda: ((gateway(api, NS, "llm") or {}).get("status") or {}).get("gateway"), 30)
    assert st["endpoint"] == f"http://llm-gateway.{NS}.svc:80/v1"
    assert (st["readyReplicas"], st["replicas"]) == (0, "0/2")  # no kubelet here: never claimed ready
    assert operator.forbidden() == [], "the chart's RBAC covers every call of the shared gateway"


def test_the_rendered_gateway_serves_service_account_callers_with_its_operator_made_binding(
        installed: Installed, operator: OperatorProcess, redis_standalone: str, tmp_path: Path) -> None:
    """What a gateway pod would run, minus the kubelet: the ConfigMap the operator rendered, served by the real
    process, with the token of the ServiceAccount the operator created (its ClusterRoleBinding is what lets it
    create TokenReviews). A pod in an allowed namespace calls it with its own token and gets tenant-scoped hits."""
    server = installed.server
    api = server.client()
    cfg = yaml.safe_load(wait_for("the gateway ConfigMap", lambda: read(api, "ConfigMap", "llm-gateway"), 60)
                         ["data"]["config.yaml"])
    assert cfg["listen"]["host"] == "0.0.0.0"
    # Loopback only in tests; Redis is a local process (no kubelet runs the operator's StatefulSet here).
    cfg["listen"] = {**cfg["listen"], "host": "127.0.0.1", "port": free_port()}
    cfg["redis"] = {"url": redis_standalone, "key_prefix": f"t{uuid.uuid4().hex[:10]}"}
    (tmp_path / "token").write_text(server.service_account_token(NS, "llm-gateway"))
    cfg["auth"]["token_review"].update(api_server=server.url, ca_file=str(server.ca_file),
                                       token_file=str(tmp_path / "token"))
    cfg["auth"]["virtual_keys"]["dir"] = str(tmp_path / "keys")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "sidecar"), str(REPO)]),
           "LLMGW_KEY_GPT_4O_MINI": "sk-test"}
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "serve", "--config", str(path)], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{cfg['listen']['port']}"
    try:
        wait_for("the gateway process", lambda: proc.poll() is None and _healthy(url), 30)
        for ns, labels in (("client-a", {"llmgateway.dev/clients": "yes"}), ("client-b", {"llmgateway.dev/clients":
                                                                                          "yes"}), ("stranger", {})):
            server.ensure_namespace(ns)
            server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
                         "llmgw-gateway-tests")

        def ask(ns: str, q: str) -> str:
            tok = server.service_account_token(ns, "app", audiences=["llmgateway.dev"])
            raw = openai.OpenAI(base_url=url + "/v1", api_key=tok, max_retries=0).chat.completions \
                .with_raw_response.create(model="demo", messages=[{"role": "user", "content": q}])
            return raw.headers["x-llmgw-cache"]

        q = f"end to end {uuid.uuid4().hex}"
        assert [ask("client-a", q), ask("client-a", q), ask("client-b", q)] == ["miss", "hit-exact", "miss"]
        with pytest.raises(openai.PermissionDeniedError):
            ask("stranger", q)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_turning_the_gateway_off_prunes_everything_of_it(installed: Installed, operator: OperatorProcess) -> None:
    api = installed.server.client()
    wait_for("the Deployment", lambda: read(api, "Deployment", "llm-gateway"), 60)
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "llmgateway.dev", "v1alpha1", NS, "llmgateways", "llm", {"spec": {"gateway": {"enabled": False}}},
        _content_type=MERGE)
    for kind in ("Deployment", "Service", "NetworkPolicy", "ServiceAccount"):
        wait_for(f"{kind} pruned", lambda k=kind: read(api, k, "llm-gateway") is None, 60)
    wait_for("ClusterRoleBinding pruned", lambda: read(api, "ClusterRoleBinding", f"llmgw-gateway:{NS}:llm") is None,
             30)
    wait_for("status.gateway removed", lambda: "gateway" not in (gateway(api, NS, "llm") or {}).get("status", {}), 30)
    assert read(api, "ConfigMap", "llm-sidecar") is not None, "the sidecar side is untouched"
    assert operator.forbidden() == []
    # 1.20 answers a Service's deletion with a Status the client's V1Service model refused: the pass failed after
    # pruning (a traceback and a retry a minute later) although everything was deleted.
    assert "failed with an exception" not in operator.log()


def _named(name: str) -> dict[str, Any]:
    doc = example()
    doc["metadata"]["name"] = name
    return doc


def _delete_gateway(api: client.ApiClient, name: str) -> None:
    client.CustomObjectsApi(api).delete_namespaced_custom_object("llmgateway.dev", "v1alpha1", NS, "llmgateways", name)


def test_deleting_the_last_shared_gateway_deletes_its_binding(installed: Installed, operator: OperatorProcess) -> None:
    """No owner reference can tie a cluster-scoped binding to a namespaced gateway: the gateway's deletion handler
    deletes it (kopf's finalizer holds the gateway until it ran), even when no other gateway is left to notice."""
    api = installed.server.client()
    installed.server.apply(_named("solo"), "kubectl")
    binding = f"llmgw-gateway:{NS}:solo"
    wait_for("the ClusterRoleBinding", lambda: read(api, "ClusterRoleBinding", binding), 60)
    _delete_gateway(api, "solo")
    wait_for("the gateway released", lambda: gateway(api, NS, "solo") is None, 60)
    wait_for("the binding deleted", lambda: read(api, "ClusterRoleBinding", binding) is None, 10)
    assert f"{NS}/solo deleted: ClusterRoleBinding/{binding}" in operator.log(), "deleted by the deletion handler"
    assert operator.forbidden() == []


def _owner_uid(api: client.ApiClient, binding: str) -> str | None:
    refs = ((read(api, "ClusterRoleBinding", binding) or {}).get("metadata") or {}).get("ownerReferences") or []
    return refs[0]["uid"] if refs else None


def test_deleting_the_gateway_role_deletes_the_bindings_it_owns(installed: Installed,
                                                                 operator: OperatorProcess) -> None:
    """What `helm uninstall` does to the chart's ClusterRole: garbage collection deletes the bindings it owns. (The
    operator still runs here, unlike after an uninstall: it binds again, and the returning role owns that binding.)"""
    api = installed.server.client()
    rbac = client.RbacAuthorizationV1Api(api)
    role = gateway_role(installed)
    installed.server.apply(_named("gc"), "kubectl")
    binding = f"llmgw-gateway:{NS}:gc"
    old_role_uid = rbac.read_cluster_role(role).metadata.uid
    wait_for("the owned binding", lambda: _owner_uid(api, binding) == old_role_uid, 60)
    old = read(api, "ClusterRoleBinding", binding)
    assert old is not None
    rbac.delete_cluster_role(role)
    wait_for("the binding garbage-collected", lambda: (read(api, "ClusterRoleBinding", binding) or {}).get(
        "metadata", {}).get("uid") != old["metadata"]["uid"], 60)
    installed.server.apply(next(r for r in installed.kinds("ClusterRole") if r["metadata"]["name"] == role), "helm")
    new_role_uid = rbac.read_cluster_role(role).metadata.uid
    wait_for("the binding owned by the new role", lambda: _owner_uid(api, binding) == new_role_uid, 60)
    _delete_gateway(api, "gc")
    wait_for("the gateway released", lambda: gateway(api, NS, "gc") is None, 60)
    # Also when the deletion caught a refresh that applied the binding again after the release handler ran.
    wait_for("the binding deleted", lambda: read(api, "ClusterRoleBinding", binding) is None, 10)
    assert operator.forbidden() == []


class Blackhole:
    """A loopback TCP server that accepts and never answers: a Redis PING to it blocks for the operator's Redis
    timeout, so the gateway's refresh timer is known to be mid-run while a connection of it is open."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            conn.setblocking(False)
            self.conns.append(conn)

    def open_since(self, n: int) -> socket.socket | None:
        """A connection accepted after the first n that its client has not closed yet."""
        for conn in self.conns[n:]:
            try:
                if conn.recv(4096, socket.MSG_PEEK) == b"":
                    continue  # closed by the client: that PING is over
            except BlockingIOError:
                return conn  # open, nothing more sent: the PING still waits
            except OSError:
                continue
            return conn  # its PING arrived and waits for an answer
        return None

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_a_gateway_deleted_while_its_refresh_runs_is_released_promptly(installed: Installed,
                                                                      operator: OperatorProcess) -> None:
    """kopf holds the finalizer until the gateway's refresh timer has exited. A sync timer cannot be interrupted: kopf
    polls it every settings.background.cancellation_polling seconds (default 60, a CI failure of the test above), so
    a deletion that catches the refresh mid-run waited a minute. The deletion also runs the release handler after the
    refresh is over, so the binding that refresh may have applied again is deleted too."""
    api = installed.server.client()
    hole = Blackhole()
    try:
        installed.server.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "blackhole", "namespace": NS},
                                "stringData": {"url": f"redis://127.0.0.1:{hole.port}/0"}})
        doc = _named("slow")
        doc["spec"]["redis"] = {"mode": "external",
                                "external": {"mode": "standalone", "urlSecretRef": {"name": "blackhole", "key": "url"}}}
        installed.server.apply(doc, "kubectl")
        binding = f"llmgw-gateway:{NS}:slow"
        wait_for("the ClusterRoleBinding", lambda: read(api, "ClusterRoleBinding", binding), 60)
        # The create handler's pass is over once it wrote the status: a PING after that is the refresh timer's.
        wait_for("status written", lambda: condition(gateway(api, NS, "slow"), "RedisReady"), 60)
        seen = len(hole.conns)
        wait_for("the refresh timer waiting on Redis", lambda: hole.open_since(seen), 30, interval_s=0.02)
        started = time.monotonic()
        _delete_gateway(api, "slow")
        wait_for("the gateway released", lambda: gateway(api, NS, "slow") is None, 60)
        took = time.monotonic() - started
        # The refresh blocks for the operator's Redis timeout (1 s) per PING; what remains is kopf's polling.
        assert took < 20, f"released after {took:.0f}s: kopf polled the exiting refresh timer too rarely"
        wait_for("the binding deleted", lambda: read(api, "ClusterRoleBinding", binding) is None, 10)
        assert operator.forbidden() == []
    finally:
        hole.close()


def test_a_binding_left_by_a_gateway_deleted_without_operator_is_swept_at_start(
        installed: Installed, operator: OperatorProcess, tmp_path: Path) -> None:
    """The operator was down and the finalizer removed by hand (docs/operations.md): the next operator start deletes
    the binding whose gateway no longer exists. Last in this module: it stops the module's operator."""
    api = installed.server.client()
    installed.server.apply(_named("late"), "kubectl")
    binding = f"llmgw-gateway:{NS}:late"
    wait_for("the ClusterRoleBinding", lambda: read(api, "ClusterRoleBinding", binding), 60)
    operator.stop()
    _delete_gateway(api, "late")
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "llmgateway.dev", "v1alpha1", NS, "llmgateways", "late", {"metadata": {"finalizers": None}},
        _content_type=MERGE)
    wait_for("the gateway gone", lambda: gateway(api, NS, "late") is None, 30)
    assert read(api, "ClusterRoleBinding", binding) is not None, "no operator ran: the binding is still there"
    restarted = start_operator("shared-gw-2", installed.sa_kubeconfig, tmp_path,
                               extra_env={"LLMGW_GATEWAY_CLUSTER_ROLE": gateway_role(installed)})
    try:
        wait_for("the orphaned binding swept", lambda: read(api, "ClusterRoleBinding", binding) is None, 60)
        # By the start-up sweep (another gateway's pass would delete it too, but may never come: none may be left).
        assert f"gateways that no longer exist: ClusterRoleBinding/{binding}" in restarted.log()
        assert restarted.forbidden() == []
    finally:
        restarted.stop()

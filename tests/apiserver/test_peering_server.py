"""Several operator processes on a real API server: two replicas (one with the webhook, one without) of which exactly
one reconciles (kopf peering, priorities drawn at start-up); `watchNamespaces` with the chart's KopfPeering objects
reconciles, without them the operator refuses to start and says why; and deleting a gateway while no operator runs
behaves as docs/operations.md says (Terminating until an operator runs again, or until the finalizer is removed)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from llmgw_operator.crd import GROUP, PLURAL, VERSION
from tests.apiserver.cluster import wait_for
from tests.apiserver.conftest import Installed, condition, gateway
from tests.apiserver.operator_proc import OperatorProcess, start_operator, wait_log
from tests.chart.helpers import render

PEERING = "llmgw-llmgateway-llmgateway-system"  # the chart's clusterName for release llmgw in llmgateway-system
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def _mock_gateway(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LLMGateway", "metadata": {"name": name, "namespace": namespace},
            "spec": {"models": [{"name": "m", "provider": "mock"}],
                     "redis": {"podDisruptionBudget": {"enabled": False}}}}  # 1.20: no policy/v1


def _reconciled(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    gw = gateway(api, namespace, name)
    return gw if condition(gw, "Ready") else None


def _reconciles(op: OperatorProcess, namespace: str, name: str) -> int:
    return len(re.findall(rf"llmgw_operator\.handlers: {namespace}/{name}: ", op.log()))


def test_two_replicas_one_with_and_one_without_the_webhook_exactly_one_reconciles(
        installed: Installed, webhook_certs: Path, tmp_path: Path, operators: list[OperatorProcess]) -> None:
    server, api = installed.server, installed.server.client()
    server.ensure_namespace("peers")
    a = start_operator("replica-a", installed.sa_kubeconfig, tmp_path, webhook_cert_dir=webhook_certs,
                       peering=PEERING)
    b = start_operator("replica-b", installed.sa_kubeconfig, tmp_path, peering=PEERING)
    operators += [a, b]
    for op in (a, b):
        wait_log(op, r"\(priority [1-9]\d*\)")  # drawn at start-up, also without the webhook
        wait_log(op, r"Initial authentication has finished")
    # kopf starts a peered operator paused; after the first keep-alives only the highest priority runs (equal
    # priorities, kopf's default, would pause both for good).
    time.sleep(3)
    for i in range(2):
        server.apply(_mock_gateway("peers", f"p{i}"), "kubectl")
    for i in range(2):
        wait_for(f"p{i} reconciled", lambda n=f"p{i}": _reconciled(api, "peers", n), 60)
    time.sleep(2)  # a second, wrong reconciler would have written by now (timer interval 2 s)
    for i in range(2):
        counts = [_reconciles(op, "peers", f"p{i}") for op in (a, b)]
        assert sorted(counts)[0] == 0 and sorted(counts)[1] >= 1, counts
    active = a if _reconciles(a, "peers", "p0") else b
    assert _reconciles(active, "peers", "p1"), "the same replica reconciles every gateway"
    assert not a.forbidden() and not b.forbidden(), a.forbidden() + b.forbidden()


def test_watched_namespaces_without_their_peering_objects_refuse_to_start(installed: Installed,
                                                                          tmp_path: Path) -> None:
    installed.server.ensure_namespace("watched-missing")
    op = start_operator("namespaced-refused", installed.sa_kubeconfig, tmp_path, peering=PEERING,
                        namespaces="watched-missing")
    assert op.proc.wait(60) == 2
    assert "needs a KopfPeering object" in op.log() and "watched-missing" in op.log(), op.log()[-2000:]


def test_watched_namespaces_with_the_charts_peering_objects_reconcile(
        installed: Installed, tmp_path: Path, operators: list[OperatorProcess]) -> None:
    server, api = installed.server, installed.server.client()
    for ns in ("watched", "unwatched"):
        server.ensure_namespace(ns)
    for doc in render({"operator": {"watchNamespaces": ["watched"]}}):
        if doc["kind"] == "KopfPeering":
            server.apply(doc, "helm")
    op = start_operator("namespaced", installed.sa_kubeconfig, tmp_path, peering=PEERING, namespaces="watched")
    operators.append(op)
    server.apply(_mock_gateway("watched", "w"), "kubectl")
    server.apply(_mock_gateway("unwatched", "u"), "kubectl")
    wait_for("the gateway in the watched namespace reconciled", lambda: _reconciled(api, "watched", "w"), 60)
    time.sleep(2)
    assert not (gateway(api, "unwatched", "u") or {}).get("status"), "another namespace is not the operator's"
    assert not op.forbidden(), op.forbidden()


def test_with_the_operator_stopped_a_deleted_gateway_waits_as_documented(
        installed: Installed, tmp_path: Path, operators: list[OperatorProcess]) -> None:
    server, api = installed.server, installed.server.client()
    custom = client.CustomObjectsApi(api)
    server.ensure_namespace("stopped")
    op = start_operator("to-stop", installed.sa_kubeconfig, tmp_path)
    operators.append(op)
    for name in ("back", "forced"):
        server.apply(_mock_gateway("stopped", name), "kubectl")
    for name in ("back", "forced"):
        gw = wait_for(f"{name} reconciled", lambda n=name: _reconciled(api, "stopped", n), 60)
        assert FINALIZER in gw["metadata"]["finalizers"]
    op.stop()

    for name in ("back", "forced"):
        custom.delete_namespaced_custom_object(GROUP, VERSION, "stopped", PLURAL, name)
    time.sleep(2)
    for name in ("back", "forced"):
        gw = gateway(api, "stopped", name)
        assert gw is not None and gw["metadata"].get("deletionTimestamp"), "Terminating while no operator runs"

    # docs/operations.md: remove the finalizer when the operator is gone for good ...
    custom.patch_namespaced_custom_object(GROUP, VERSION, "stopped", PLURAL, "forced",
                                          {"metadata": {"finalizers": None}},
                                          _content_type="application/merge-patch+json")
    wait_for("forced gone", lambda: gateway(api, "stopped", "forced") is None, 30)
    # ... or run an operator again: it releases the gateway.
    operators.append(start_operator("restarted", installed.sa_kubeconfig, tmp_path))
    wait_for("back gone", lambda: gateway(api, "stopped", "back") is None, 60)


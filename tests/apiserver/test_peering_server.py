"""Several operator processes on a real API server: two replicas (one with the webhook, one without) of which exactly
one reconciles (kopf peering, priorities drawn at start-up); `watchNamespaces` with the chart's KopfPeering objects
reconciles, without them the operator refuses to start and says why."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from llmgw_operator.crd import GROUP, VERSION
from tests.apiserver.cluster import wait_for
from tests.apiserver.conftest import Installed, condition, gateway
from tests.apiserver.operator_proc import OperatorProcess, start_operator, wait_log
from tests.chart.helpers import render

PEERING = "llmgw-llmgateway-llmgateway-system"  # the chart's clusterName for release llmgw in llmgateway-system


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
                       peering=PEERING, wait=False)
    b = start_operator("replica-b", installed.sa_kubeconfig, tmp_path, peering=PEERING, wait=False)
    operators += [a, b]
    a.wait_ready()
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


def test_watched_namespaces_without_their_peering_objects_refuse_to_start(
        installed: Installed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # In-process (the refusal comes before kopf starts): the operator's own entry point, as its ServiceAccount.
    from kubernetes.config import kube_config

    from llmgw_operator import __main__ as cli

    installed.server.ensure_namespace("watched-missing")
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(installed.sa_kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    default = client.Configuration.get_default_copy()
    try:
        code = cli.main(["run", "--peering", PEERING, "--namespaces", "watched-missing", "--liveness-port", "0",
                         "--no-webhook"])
    finally:
        client.Configuration.set_default(default)  # load_kube_config() set the process-wide default
    err = capsys.readouterr().err
    assert code == 2 and "needs a KopfPeering object" in err and "missing in: watched-missing" in err, err


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

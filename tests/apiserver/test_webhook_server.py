"""The chart's MutatingWebhookConfiguration on a real API server, pointed at the operator's admission server on
loopback (URL clientConfig instead of the in-cluster Service; otherwise as rendered): bare Pods and Deployment-made
Pods are mutated; with native sidecars forced on, a 1.20 server still gets plain containers (never a refused pod);
with the webhook down, Pods are still created and the operator reports them afterwards."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from kubernetes import client
from kubernetes.client.rest import ApiException

from llmgw_operator import injection
from tests.apiserver.cluster import wait_for
from tests.apiserver.conftest import Installed, example, gateway, secrets_for
from tests.apiserver.operator_proc import OperatorProcess, start_operator, wait_log

NS = "apps"
GW = "chat"


def _mwc(installed: Installed, port: int, ca: trustme.CA) -> dict[str, Any]:
    mwc = json.loads(json.dumps(installed.kinds("MutatingWebhookConfiguration")[0]))
    for hook in mwc["webhooks"]:
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{hook['clientConfig']['service']['path']}",
                                "caBundle": base64.b64encode(ca.cert_pem.bytes()).decode()}
    return mwc


@pytest.fixture(scope="module")
def injecting(installed: Installed, webhook_ca: trustme.CA, webhook_certs: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OperatorProcess, dict[str, Any]]]:
    server = installed.server
    server.ensure_namespace(NS)
    secrets_for(server, NS)
    server.apply(example("standalone", NS, GW), "kubectl")
    logs = tmp_path_factory.mktemp("webhook-logs")
    # webhook.nativeSidecars=true, as a user might set it: the operator must still inject plain containers on 1.20.
    op = start_operator("injector", installed.sa_kubeconfig, logs, webhook_cert_dir=webhook_certs,
                        extra_env={"LLMGW_NATIVE_SIDECARS": "true"})
    assert op.webhook_port is not None
    mwc = _mwc(installed, op.webhook_port, webhook_ca)
    server.apply(mwc, "helm")
    yield op, mwc
    op.stop()
    server.delete(mwc)


def _pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS,
                         "annotations": {injection.ANNOTATION_INJECT: GW, **(annotations or {})}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}}


def _create_pod(installed: Installed, body: dict[str, Any]) -> dict[str, Any]:
    api = installed.server.client()
    return api.sanitize_for_serialization(client.CoreV1Api(api).create_namespaced_pod(NS, body))


def _names(pod: dict[str, Any]) -> list[str]:
    return [c["name"] for c in pod["spec"]["containers"]]


def test_a_bare_pod_is_mutated_with_a_plain_container_on_an_old_server(
        installed: Installed, injecting: tuple[OperatorProcess, dict[str, Any]]) -> None:
    op, _mwc = injecting
    pod = _create_pod(installed, _pod("bare"))
    assert _names(pod) == [injection.SIDECAR_NAME, "app"], pod["spec"]
    assert not pod["spec"].get("initContainers")
    status = json.loads(pod["metadata"]["annotations"][injection.ANNOTATION_STATUS])
    assert status["gateway"] == GW and status["mode"] == "container"
    env = {e["name"] for e in pod["spec"]["containers"][1]["env"]}
    assert {"OPENAI_BASE_URL", "LLMGW_URL"} <= env
    # The forced setting was refused by the operator at start, loudly, not by the API server per pod.
    wait_log(op, r"LLMGW_NATIVE_SIDECARS=true, but this API server does not run native sidecars")


def test_a_pod_asking_for_a_native_sidecar_is_still_created(
        installed: Installed, injecting: tuple[OperatorProcess, dict[str, Any]]) -> None:
    pod = _create_pod(installed, _pod("wants-native", {injection.ANNOTATION_NATIVE: "true"}))
    assert _names(pod) == [injection.SIDECAR_NAME, "app"]
    assert json.loads(pod["metadata"]["annotations"][injection.ANNOTATION_STATUS])["mode"] == "container"


def test_deployment_pods_are_mutated(installed: Installed,
                                     injecting: tuple[OperatorProcess, dict[str, Any]]) -> None:
    api = installed.server.client()
    template = _pod("unused")
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}, "annotations": template["metadata"]["annotations"]},
                                 "spec": template["spec"]}}}
    installed.server.apply(dep, "kubectl")
    # The controller-manager's ReplicaSet controller creates the pods: they pass admission like any other.
    pods = wait_for("2 pods of the Deployment", lambda: (p := client.CoreV1Api(api).list_namespaced_pod(
        NS, label_selector="app=web").items) and len(p) == 2 and p, 60)
    for p in pods:
        assert [c.name for c in p.spec.containers] == [injection.SIDECAR_NAME, "app"], p.metadata.name
        assert p.metadata.annotations[injection.ANNOTATION_STATUS]


def test_with_the_webhook_down_pods_are_created_and_reported_later(
        installed: Installed, injecting: tuple[OperatorProcess, dict[str, Any]], webhook_certs: Path,
        tmp_path: Path, operators: list[OperatorProcess]) -> None:
    api = installed.server.client()
    op, _mwc = injecting
    op.stop()  # nothing listens on the configured URL any more
    pod = _create_pod(installed, _pod("while-down"))
    assert _names(pod) == ["app"], "failurePolicy Ignore: admitted without the sidecar"

    # The operator comes back (same port, the configuration is unchanged) and reports the pod.
    back = start_operator("injector-again", installed.sa_kubeconfig, tmp_path, webhook_cert_dir=webhook_certs,
                          webhook_port=op.webhook_port)
    operators.append(back)
    def reported() -> dict[str, Any] | None:
        status = (gateway(api, NS, GW) or {}).get("status") or {}
        return status.get("injection") if (status.get("injection") or {}).get("uninjectedCount") else None

    try:
        report = wait_for("the uninjected pod reported", reported, 60)
    except AssertionError as e:
        raise AssertionError(f"{e}; status: {(gateway(api, NS, GW) or {}).get('status')}") from None
    assert report == {"uninjectedCount": 1, "uninjectedPods": ["while-down"]}
    # kopf posts Events from a queue: shortly after the status.
    wait_for("an UninjectedPods Event naming the pod", lambda: any(
        "while-down" in e.message for e in client.CoreV1Api(api).list_namespaced_event(
            NS, field_selector="reason=UninjectedPods").items), 30)
    # New pods are injected again.
    assert _names(_create_pod(installed, _pod("after"))) == [injection.SIDECAR_NAME, "app"]
    assert not back.forbidden() and not op.forbidden(), back.forbidden() + op.forbidden()


def test_the_webhook_configuration_is_the_charts(installed: Installed,
                                                 injecting: tuple[OperatorProcess, dict[str, Any]]) -> None:
    _op, mwc = injecting
    api = installed.server.client()
    live = api.sanitize_for_serialization(client.AdmissionregistrationV1Api(api)
                                          .read_mutating_webhook_configuration(mwc["metadata"]["name"]))
    hook = live["webhooks"][0]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "NoneOnDryRun"
    assert hook["rules"][0]["resources"] == ["pods"] and hook["rules"][0]["operations"] == ["CREATE"]
    # A pod in the release namespace is never sent to the webhook (the operator must start while its webhook is down).
    try:
        client.CoreV1Api(api).create_namespaced_pod("llmgateway-system", {**_pod("sys"), "metadata": {
            "name": "sys", "annotations": {injection.ANNOTATION_INJECT: GW}}})
    except ApiException as e:  # pragma: no cover - only if the namespace's default ServiceAccount is not there yet
        pytest.fail(f"pod in the release namespace refused: {e.body}")
    sys_pod = client.CoreV1Api(api).read_namespaced_pod("sys", "llmgateway-system")
    assert [c.name for c in sys_pod.spec.containers] == ["app"]

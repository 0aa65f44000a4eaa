"""Fixtures of the real-API-server tier: the chart's CRDs and RBAC installed once, the operator's ServiceAccount
kubeconfig, webhook certificates, gateways from the examples, and the control plane itself (`apiserver`)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from llmgw_operator.crd import GROUP, PLURAL, VERSION
from tests.apiserver.cluster import ApiServer, apply, bin_dir, missing_binaries, wait_for
from tests.apiserver.operator_proc import OperatorProcess, logs_during
from tests.chart.helpers import CHART, NAMESPACE, RELEASE, render

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
MODES = ("standalone", "sentinel", "cluster", "external")
SA_NAME = f"{RELEASE}-llmgateway"  # the chart's ServiceAccount (fullname)


@pytest.fixture(scope="package")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """etcd + kube-apiserver + kube-controller-manager (v1.20.2) on free loopback ports, once for the tests in
    tests/apiserver (package scope: stopped when they are done, not kept for the rest of the session).

    Binaries from tests/apiserver/k8s/build.sh (`.ci/run` builds them). Without them the tests that use this fixture
    skip with the reason, except in CI (CI=true), where a missing control plane is a failure."""
    missing = missing_binaries()
    if missing:
        msg = (f"no Kubernetes control plane binaries in {bin_dir()} (missing {', '.join(missing)}): "
               "run `bash tests/apiserver/k8s/build.sh .cache/k8s` or set LLMGW_K8S_BIN")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    server = ApiServer.start(bin_dir(), tmp_path_factory.mktemp("k8s"))
    yield server
    server.stop()


@dataclass
class Installed:
    """What the chart put on the server, and a kubeconfig of the operator's ServiceAccount."""

    server: ApiServer
    docs: list[dict[str, Any]]
    sa_kubeconfig: Path

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]


def crd_docs() -> list[dict[str, Any]]:
    return [d for p in sorted((CHART / "crds").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def without_cel(schema: Any) -> Any:
    """The schema minus x-kubernetes-validations: 1.20 drops CEL rules on create, but its server-side apply refuses
    the unknown field. (Supported servers, 1.27+, take the CRD as shipped; the rules and their defaults are tested
    in tests/operator/.)"""
    if isinstance(schema, dict):
        return {k: without_cel(v) for k, v in schema.items() if k != "x-kubernetes-validations"}
    if isinstance(schema, list):
        return [without_cel(v) for v in schema]
    return schema


def _established(api: client.ApiClient, name: str) -> bool:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


@pytest.fixture(scope="package")
def installed(apiserver: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """CRDs (server-side apply, as docs/install.md says), then the chart's ServiceAccount, ClusterRole and binding,
    rendered by the real Helm engine. The operator runs with exactly these rights."""
    api = apiserver.client()
    for crd in crd_docs():
        apply(api, without_cel(crd), "llmgw-install")
    for crd in crd_docs():
        wait_for(f"CRD {crd['metadata']['name']} Established", lambda n=crd["metadata"]["name"]: _established(api, n))
    apiserver.ensure_namespace(NAMESPACE)
    docs = render({"webhook": {"enabled": True}})
    for d in docs:
        if d["kind"] in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}:
            apply(api, d, "helm")
    path = apiserver.service_account_kubeconfig(NAMESPACE, SA_NAME, tmp_path_factory.mktemp("sa") / "kubeconfig",
                                                expiration_s=4 * 3600)
    return Installed(apiserver, docs, path)


@pytest.fixture(scope="package")
def webhook_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="package")
def webhook_certs(webhook_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tls.crt/tls.key for 127.0.0.1, as the chart's Secret volume would mount them."""
    d = tmp_path_factory.mktemp("webhook-tls")
    cert = webhook_ca.issue_cert("127.0.0.1")
    (d / "tls.crt").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    (d / "tls.key").write_bytes(cert.private_key_pem.bytes())
    return d


@pytest.fixture
def operators() -> Iterator[list[OperatorProcess]]:
    """Operator processes a test starts: stopped at the end (their logs: see pytest_runtest_makereport)."""
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        op.interrupt()  # all at once: each takes a few seconds to wind down
    for op in started:
        op.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failed setup, test or teardown in this tier carries the log of every operator process that ran meanwhile
    (module-scoped ones too): a timed-out wait_for says what the operator was doing, in CI's output."""
    rep: pytest.TestReport = yield
    if rep.failed:
        for title, text in logs_during(call.start, call.stop):
            rep.sections.append((title, text))
    return rep


def example(mode: str, namespace: str, name: str | None = None) -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / f"gateway-{mode}.yaml").read_text())
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = namespace
    if name:
        doc["metadata"]["name"] = name
    # Kubernetes 1.20 serves policy/v1beta1 only: the operator's policy/v1 PodDisruptionBudget cannot exist there
    # (the supported range, 1.27+, has it; the emulator tests cover it).
    if mode != "external":
        doc["spec"]["redis"]["podDisruptionBudget"] = {"enabled": False}
    return doc


def secrets_for(server: ApiServer, namespace: str) -> None:
    """The Secrets the examples reference (API keys; the external Redis URL)."""
    for name, data in (("openai", {"api-key": "sk-test"}), ("azure-openai", {"api-key": "az-test"}),
                       ("shared-redis", {"url": "redis://127.0.0.1:1/0"})):
        server.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                      "stringData": data})


def gateway(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def condition(gw: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in ((gw or {}).get("status") or {}).get("conditions") or [] if c["type"] == kind), None)

"""helm lint (strict) and render over a matrix of values; every rendered object validated; webhook invariants."""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any

import helm_python as helm
import pytest
import yaml
from cryptography import x509

from tests.chart.helpers import CHART, NAMESPACE, RELEASE, VERSIONS, by_kind, notes, one, render, validate

MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"certManager": {"enabled": True}},
    "cert-manager-issuer": {"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer",
                                                                          "group": "cert-manager.io"}}},
    "certgen-job": {"webhook": {"certgenJob": {"enabled": True}}},
    "everything-on": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                      "podMonitor": {"enabled": True, "namespaces": ["team-a"], "selector": {"matchLabels": {"a": "b"}}},
                      "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True},
                      "webhook": {"excludeNamespaces": ["ci", "kube-system"], "nativeSidecars": "false",
                                  "timeoutSeconds": 10},
                      "operator": {"replicas": 3, "watchNamespaces": ["a", "b"], "priorityClassName": "high",
                                   "tolerations": [{"key": "k", "operator": "Exists"}],
                                   "nodeSelector": {"kubernetes.io/os": "linux"},
                                   "extraEnv": [{"name": "X", "value": "1"}],
                                   "podAnnotations": {"a": "b"}},
                      "commonLabels": {"team": "platform"}, "imagePullSecrets": [{"name": "regcred"}],
                      "serviceAccount": {"annotations": {"iam": "role"}}},
    "minimal": {"webhook": {"enabled": False}, "pdb": {"enabled": False}, "peering": {"enabled": False},
                "operator": {"replicas": 1}, "rbac": {"create": False},
                "serviceAccount": {"create": False, "name": "existing"}},
    "names": {"fullnameOverride": "gw-" + "x" * 70},
    "single-replica": {"operator": {"replicas": 1}},
}


@pytest.mark.parametrize("case", sorted(MATRIX))
@pytest.mark.parametrize("kube", [f"v{VERSIONS[0]}.0", f"v{VERSIONS[1]}"])
def test_lint_strict(case: str, kube: str) -> None:
    report = helm.lint(CHART, MATRIX[case], strict=True, namespace=NAMESPACE, kube_version=kube)
    assert report["errors"] == [], report
    assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_render_and_validate_every_object(case: str) -> None:
    docs = render(MATRIX[case])
    assert docs
    for doc in docs:
        validate(doc)
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "duplicate objects"
    watched = MATRIX[case].get("operator", {}).get("watchNamespaces")
    for d in docs:
        if d["kind"] == "KopfPeering":  # kopf's namespaced peering: one in each watched namespace
            assert d["metadata"]["namespace"] in watched, d["metadata"]
        elif d["kind"] not in {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                               "ClusterKopfPeering"}:
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]["name"]
    peerings = [d for d in docs if d["kind"] in {"KopfPeering", "ClusterKopfPeering"}]
    if MATRIX[case].get("peering", {}).get("enabled", True):
        assert [d["kind"] for d in peerings] == (["KopfPeering"] * len(watched) if watched else ["ClusterKopfPeering"])
    else:
        assert not peerings


def _mwc(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "MutatingWebhookConfiguration")["webhooks"][0]


def test_webhook_configuration_invariants() -> None:
    docs = render({"webhook": {"excludeNamespaces": ["ci"]}})
    hook = _mwc(docs)
    assert hook["failurePolicy"] == "Ignore"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["sideEffects"] in {"None", "NoneOnDryRun"}
    assert hook["timeoutSeconds"] <= 10
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    svc_ref = hook["clientConfig"]["service"]
    assert "url" not in hook["clientConfig"]
    service = one(docs, "Service")
    assert (svc_ref["name"], svc_ref["namespace"], svc_ref["port"]) == (service["metadata"]["name"], NAMESPACE, 443)
    assert svc_ref["path"] == "/mutate-pods"
    excluded = next(e for e in hook["namespaceSelector"]["matchExpressions"]
                    if e["key"] == "kubernetes.io/metadata.name")
    assert excluded["operator"] == "NotIn" and {"kube-system", NAMESPACE, "ci"} <= set(excluded["values"])
    assert {"key": "llmgateway.dev/inject", "operator": "NotIn", "values": ["false"]} in \
        hook["objectSelector"]["matchExpressions"]


def test_schema_caps_webhook_timeout_and_refuses_typos_and_latest() -> None:
    with helm.Chart.load(CHART) as chart:
        for bad in [{"webhook": {"timeoutSeconds": 30}}, {"webhok": {}}, {"operator": {"replica": 2}},
                    {"sidecar": {"image": {"repository": "r", "tag": "latest", "pullPolicy": "Always"}}},
                    {"webhook": {"nativeSidecars": "yes"}}, {"operator": {"replicas": 0}}]:
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(bad)


def _cert_pair(docs: list[dict[str, Any]]) -> tuple[x509.Certificate, x509.Certificate, bytes]:
    secret = next(d for d in by_kind(docs, "Secret") if d["type"] == "kubernetes.io/tls")
    ca = x509.load_pem_x509_certificate(base64.b64decode(_mwc(docs)["clientConfig"]["caBundle"]))
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert base64.b64decode(secret["data"]["ca.crt"]) == base64.b64decode(_mwc(docs)["clientConfig"]["caBundle"])
    return ca, leaf, base64.b64decode(secret["data"]["tls.key"])


def test_helm_generated_certificate_matches_service_and_ca() -> None:
    docs = render()
    ca, leaf, key = _cert_pair(docs)
    leaf.verify_directly_issued_by(ca)
    svc = one(docs, "Service")["metadata"]["name"]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert f"{svc}.{NAMESPACE}.svc" in sans  # the name the API server dials
    assert leaf.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=365 * 5)
    assert b"PRIVATE KEY" in key
    # The Secret is mounted into the operator at the directory the webhook reads.
    dep = one(docs, "Deployment")
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "webhook-tls")
    assert vol["secret"]["secretName"] == next(d for d in by_kind(docs, "Secret"))["metadata"]["name"]
    assert "items" not in vol["secret"]


def test_helm_certificate_is_kept_across_upgrades() -> None:
    """`lookup` is what keeps it: the template must reuse an existing Secret's data, never regenerate."""
    source = (CHART / "templates" / "webhook.yaml").read_text()
    assert re.search(r'lookup "v1" "Secret" \$ns \$secretName', source)
    assert source.index("lookup") < source.index("genCA"), "look up first, generate only when nothing is there"


def test_cert_manager_mode() -> None:
    docs = render(MATRIX["cert-manager"])
    assert not by_kind(docs, "Secret")
    cert = one(docs, "Certificate")
    mwc = one(docs, "MutatingWebhookConfiguration")
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
        f"{NAMESPACE}/{cert['metadata']['name']}"
    assert "caBundle" not in mwc["webhooks"][0]["clientConfig"]
    assert cert["spec"]["issuerRef"]["name"] == one(docs, "Issuer")["metadata"]["name"]
    svc = one(docs, "Service")["metadata"]["name"]
    assert f"{svc}.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    docs = render(MATRIX["cert-manager-issuer"])
    assert not by_kind(docs, "Issuer") and one(docs, "Certificate")["spec"]["issuerRef"]["kind"] == "ClusterIssuer"


def test_certgen_job_mode() -> None:
    docs = render(MATRIX["certgen-job"])
    jobs = {j["metadata"]["name"]: j for j in by_kind(docs, "Job")}
    assert set(jobs) == {f"{RELEASE}-llmgateway-certgen-create", f"{RELEASE}-llmgateway-certgen-patch"}
    mwc_name = one(docs, "MutatingWebhookConfiguration")["metadata"]["name"]
    patch_args = jobs[f"{RELEASE}-llmgateway-certgen-patch"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--webhook-name={mwc_name}" in patch_args
    for job in jobs.values():
        image = job["spec"]["template"]["spec"]["containers"][0]["image"]
        assert not image.endswith(":latest") and ":" in image
    role = next(r for r in by_kind(docs, "ClusterRole") if "certgen" in r["metadata"]["name"])
    assert role["rules"][0]["resourceNames"] == [mwc_name], "certgen may touch only our webhook configuration"
    vol = next(v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "webhook-tls")
    assert {i["path"] for i in vol["secret"]["items"]} == {"tls.crt", "tls.key"}


def test_operator_deployment() -> None:
    docs = render()
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]
    assert dep["spec"]["replicas"] == 2
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert one(docs, "Service")["spec"]["selector"] == selector
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    c = pod["spec"]["containers"][0]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LLMGW_SIDECAR_IMAGE"] == "ghcr.io/llmgateway/sidecar:0.1.0"
    assert env["LLMGW_WEBHOOK_CERT_DIR"] == "/tls"
    assert env["LLMGW_PEERING_NAME"] == one(docs, "ClusterKopfPeering")["metadata"]["name"]
    assert c["image"] == "ghcr.io/llmgateway/operator:0.1.0"
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["webhook"] == int(env["LLMGW_WEBHOOK_PORT"])
    assert c["livenessProbe"]["httpGet"]["port"] == "liveness" and ports["liveness"] == int(env["LLMGW_LIVENESS_PORT"])
    assert one(docs, "ClusterRoleBinding")["subjects"][0]["name"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_values_overrides_land() -> None:
    docs = render(MATRIX["everything-on"])
    dep = one(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LLMGW_WATCH_NAMESPACES"] == "a,b" and env["LLMGW_NATIVE_SIDECARS"] == "false" and env["X"] == "1"
    assert dep["spec"]["replicas"] == 3 and dep["metadata"]["labels"]["team"] == "platform"
    excluded = _mwc(docs)["namespaceSelector"]["matchExpressions"][0]["values"]
    assert sorted(excluded) == sorted({"kube-system", NAMESPACE, "ci"}), "no duplicates"
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == one(docs, "Service")["spec"]["ports"][0]["name"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= one(docs, "Service")["metadata"]["labels"].items()


def test_minimal_values_render_no_webhook_objects() -> None:
    docs = render(MATRIX["minimal"])
    kinds = {d["kind"] for d in docs}
    assert kinds == {"Deployment"}
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


def test_long_names_are_truncated_to_dns_labels() -> None:
    for d in render(MATRIX["names"]):
        assert len(d["metadata"]["name"]) <= 63 and not d["metadata"]["name"].endswith("-")


def test_notes_render_for_every_certificate_source() -> None:
    assert "kept across upgrades" in notes()
    assert "cert-manager" in notes(MATRIX["cert-manager"])
    assert "DISABLED" in notes(MATRIX["minimal"])


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaf_paths(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_every_value_is_commented_and_in_the_schema() -> None:
    values_text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(values_text)
    lines = values_text.splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w]*):(.*)$", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prev = next(p for p in reversed(lines[:i]) if p.strip())
        documented = prev.strip().startswith("#") or any(d for _, d in stack)
        if m.group(3).strip():  # a value, not a parent mapping: it (or the mapping it sits in) needs a comment
            assert documented, f"values.yaml line {i + 1} ({m.group(2)}) has no comment above it"
        stack.append((indent, documented))
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
    assert schema is not None
    for path in _leaf_paths(values):
        node = schema
        for part in path.split("."):
            node = _resolve(schema, node)
            if part not in node.get("properties", {}) and isinstance(node.get("additionalProperties"), dict):
                break  # a free-form map (resources, labels): its keys are data, not values
            node = node.get("properties", {}).get(part)
            assert node is not None, f"{path} is not in values.schema.json"


def test_supported_kubernetes_range_is_one_statement() -> None:
    """Chart.yaml's kubeVersion (Helm refuses an older cluster), the oldest schema the tests validate against and
    docs/install.md say the same (1.27+)."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={VERSIONS[0]}.0-0"
    install = (CHART.parents[1] / "docs" / "install.md").read_text()
    assert f"Kubernetes {VERSIONS[0]} or newer" in install and "test vehicle, not a supported target" in install

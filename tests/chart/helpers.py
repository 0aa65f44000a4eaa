"""Chart rendering helpers: render with helm-python-sdk, split documents, validate every object."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

from llmgw_operator import crd as crd_mod

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmgateway"
RELEASE, NAMESPACE = "llmgw", "llmgateway-system"
VERSIONS = ("1.27", kubernetes_validate.latest_version())  # oldest supported (Chart.yaml kubeVersion), newest
PROM_OPERATOR_CRDS = REPO / "tests" / "data" / "prometheus-operator"


def render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values or {})
        out = chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True)
    docs: list[dict[str, Any]] = []
    for path in sorted(out):
        if not path.endswith(".txt"):
            docs.extend(d for d in yaml.safe_load_all(out[path]) if d)
    return docs


def notes(values: dict[str, Any] | None = None) -> str:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(v for k, v in out.items() if k.endswith("NOTES.txt"))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _go_patterns(schema: Any) -> Any:
    """Go's RE2 takes a flag group after ^ ("^(?i)..."), Python's re only at the start: move it, same meaning."""
    if isinstance(schema, dict):
        return {k: (v.replace("^(?i)", "(?i)^") if k == "pattern" else _go_patterns(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_go_patterns(v) for v in schema]
    return schema


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON schema of every CRD the chart ships."""
    out = {}
    # The chart's own CRDs, and the prometheus-operator CRDs it can render objects of (vendored test data).
    for path in [*sorted((CHART / "crds").glob("*.yaml")), *sorted(PROM_OPERATOR_CRDS.glob("*.yaml"))]:
        for crd in yaml.safe_load_all(path.read_text()):
            for v in crd["spec"]["versions"]:
                key = (f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"])
                out[key] = _go_patterns(crd_mod.to_json_schema(v["schema"]["openAPIV3Schema"]))
    return out


# Kinds of other projects' CRDs the chart can render (no schema here): the fields we rely on are checked by hand.
FOREIGN = {
    ("cert-manager.io/v1", "Issuer"): ["spec"],
    ("cert-manager.io/v1", "Certificate"): ["spec.secretName", "spec.dnsNames", "spec.issuerRef.name"],
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec.selector", "spec.endpoints"],
}


def validate(doc: dict[str, Any]) -> None:
    """Strict Kubernetes schema for built-in kinds (oldest supported and newest bundled), CRD schema for ours."""
    name = doc.get("metadata", {}).get("name", "")
    assert 0 < len(name) <= 63 or doc["kind"] == "CustomResourceDefinition", f"bad name {name!r}"
    key = (doc["apiVersion"], doc["kind"])
    if key in _crd_schemas():
        jsonschema.validate(doc, _crd_schemas()[key])
        return
    if key in FOREIGN:
        for dotted in FOREIGN[key]:
            node: Any = doc
            for part in dotted.split("."):
                assert isinstance(node, dict) and part in node, f"{doc['kind']} {name}: missing {dotted}"
                node = node[part]
        return
    for version in VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)

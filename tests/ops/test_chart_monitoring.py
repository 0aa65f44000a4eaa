"""The chart's dashboard ConfigMap, PrometheusRule and PodMonitor: off by default, valid against the prometheus-operator
CRD schemas (vendored in tests/data/prometheus-operator), every PromQL expression parsed by a real PromQL parser
(promql-parser, the Rust parser of GreptimeDB), and every metric name one that a running sidecar or operator exports
(scraped over HTTP here)."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import helm_python as helm
import jsonschema
import promql_parser
import pytest
import requests
import trustme
import yaml
from prometheus_client.parser import text_string_to_metric_families

from llmgw_operator import crd, webhook
from llmgw_operator.metrics import OPERATOR_METRICS
from tests.chart.helpers import CHART, NAMESPACE, PROM_OPERATOR_CRDS, VERSIONS, _go_patterns, by_kind, one, render, validate
from tests.webhook.conftest import SETTINGS, MemoryGateways, RecordedEvents, write_pair

from .helpers import ask, fresh_prefix, sidecar_config, start_sidecar

ALL_ON = {"podMonitor": {"enabled": True, "labels": {"release": "prom"}},
          "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
          "grafanaDashboard": {"enabled": True}}
KINDS = {"PodMonitor", "PrometheusRule"}


def _schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for path in PROM_OPERATOR_CRDS.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        v = next(v for v in doc["spec"]["versions"] if v["name"] == "v1")
        out[doc["spec"]["names"]["kind"]] = _go_patterns(crd.to_json_schema(v["schema"]["openAPIV3Schema"]))
    return out


def _dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard"))
    return json.loads(cm["data"]["llmgateway.json"])


def expressions(docs: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every alert and every dashboard target."""
    for g in one(docs, "PrometheusRule")["spec"]["groups"]:
        for r in g["rules"]:
            yield f"alert {r['alert']}", r["expr"]
    for p in _dashboard(docs)["panels"]:
        for t in p.get("targets", []):
            yield f"panel {p['title']} {t['refId']}", t["expr"]


def metric_names(node: Any) -> set[str]:
    """Every metric name a parsed PromQL expression selects."""
    found: set[str] = set()
    if type(node).__name__ == "VectorSelector":
        found.add(node.name)
    for attr in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            found |= metric_names(child)
    for arg in getattr(node, "args", None) or []:
        found |= metric_names(arg)
    return found


def exported(exposition: str) -> set[str]:
    """Series names a scrape can return: every declared family, with the suffixes its type adds."""
    names = set()
    for fam in text_string_to_metric_families(exposition):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(fam.type, [""])
        names |= {fam.name + s for s in suffixes} | {s.name for s in fam.samples}
    return names


def test_monitoring_objects_are_off_by_default() -> None:
    docs = render({})
    assert not [d for d in docs if d["kind"] in KINDS]
    assert not [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]


@pytest.mark.parametrize("kube", [f"v{VERSIONS[0]}.0", f"v{VERSIONS[1]}"])
def test_lint_strict_with_monitoring(kube: str) -> None:
    report = helm.lint(CHART, ALL_ON, strict=True, namespace=NAMESPACE, kube_version=kube)
    assert report["errors"] == [], report
    assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]


def test_rendered_objects_are_valid_against_the_crd_schemas() -> None:
    docs = render(ALL_ON)
    schemas = _schemas()
    for kind in KINDS:
        for doc in by_kind(docs, kind):
            jsonschema.validate(doc, schemas[kind])
            assert doc["metadata"]["labels"]["release"] == "prom"
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard"))
    validate(cm)  # a core ConfigMap: strict Kubernetes schema
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    sidecars, gateways = sorted(by_kind(docs, "PodMonitor"), key=lambda d: d["metadata"]["name"], reverse=True)
    pm = sidecars["spec"]
    assert pm["podMetricsEndpoints"][0]["port"] == "llmgw-metrics" and pm["namespaceSelector"] == {"any": True}
    # shared gateway Deployments: the operator's pod template (label and port) is what this PodMonitor selects
    from llmgw_operator.builders import Gateway, gateway

    gw = Gateway.from_spec("chat", "team-a", crd.defaulted_spec({"models": [{"name": "m", "provider": "mock"}],
                                                                   "gateway": {"enabled": True},
                                                                   "sidecar": {"metricsPort": 9464}}))
    deploy = next(m for m in gateway.build(gw) if m["kind"] == "Deployment")
    tmpl = deploy["spec"]["template"]
    assert gateways["spec"]["selector"]["matchExpressions"][0]["key"] in tmpl["metadata"]["labels"]
    ports = {p["name"] for c in tmpl["spec"]["containers"] for p in c.get("ports", [])}
    assert gateways["spec"]["podMetricsEndpoints"][0]["port"] in ports
    # the schema really is checked: a typo in a rule is refused
    bad = one(docs, "PrometheusRule")
    bad["spec"]["groups"][0]["rules"][0]["for"] = "one minute"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas["PrometheusRule"])
    bad = by_kind(render(ALL_ON), "PodMonitor")[0]
    bad["spec"]["podMetricsEndpoints"][0]["prot"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas["PodMonitor"])


def test_every_alert_has_a_runbook_section_and_every_panel_a_description() -> None:
    docs = render(ALL_ON)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    anchors = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
               for h in re.findall(r"^#{2,4} (.+)$", doc, flags=re.M)}
    for g in one(docs, "PrometheusRule")["spec"]["groups"]:
        for r in g["rules"]:
            anchor = r["annotations"]["runbook_url"].rsplit("#", 1)[1]
            assert anchor in anchors, f"docs/observability.md has no section for {r['alert']}"
            assert "Runbook:" in doc.split(f"### {r['alert']}", 1)[1].split("\n### ", 1)[0], r["alert"]
    for p in _dashboard(docs)["panels"]:
        if p["type"] != "row":
            assert p["description"] and f"**{p['title']}**" in doc, f"panel {p['title']} not in the docs"


def test_dashboard_layout() -> None:
    dash = _dashboard(render(ALL_ON))
    assert dash["uid"] == "llmgateway-overview" and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "namespace", "gateway"}
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}"
            # every sidecar series is filtered by the dashboard's variables (operator series by gateway_namespace)
            if "llmgw_operator_reconciles" not in t["expr"]:
                assert 'gateway=~"$gateway"' in t["expr"], (p["title"], t["expr"])
    titles = [p["title"] for p in dash["panels"] if p["type"] != "row"]
    assert len(titles) == len(set(titles)) == 18


def test_promql_parses_with_a_real_parser() -> None:
    exprs = list(expressions(render(ALL_ON)))
    assert len(exprs) >= 25
    for where, expr in exprs:
        try:
            promql_parser.parse(expr)
        except ValueError as e:
            raise AssertionError(f"{where}: {e}: {expr}") from None
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(llmgw_requests_total[5m])")  # and it does refuse broken PromQL


async def _operator_exposition(tmp_path: Path) -> str:
    ca = trustme.CA()
    write_pair(ca, tmp_path)
    server = webhook.WebhookServer(webhook.WebhookConfig(host="127.0.0.1", port=0, cert_dir=str(tmp_path)),
                                   MemoryGateways(), RecordedEvents(), SETTINGS)
    await server.start()
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        async with aiohttp.ClientSession() as s, s.get(f"https://127.0.0.1:{server.port}/metrics", ssl=ctx) as r:
            assert r.status == 200
            return await r.text()
    finally:
        await server.stop()


def test_expressions_use_only_metrics_that_are_exported(redis_standalone: str, tmp_path: Path) -> None:
    cfg = sidecar_config({"url": redis_standalone}, fresh_prefix(), "team-a", "gw")
    srv, _ = start_sidecar(cfg)
    try:
        ask(srv, "m1", "hello", "k")
        sidecar = requests.get(srv.url + "/metrics", timeout=5).text
    finally:
        srv.stop()
    OPERATOR_METRICS.reconciled("team-a", "gw", "timer", {"conditions": [{"type": "Ready", "status": "True"}]})
    operator = asyncio.run(_operator_exposition(tmp_path))
    available = exported(sidecar) | exported(operator)
    used: dict[str, set[str]] = {}
    for where, expr in expressions(render(ALL_ON)):
        for name in metric_names(promql_parser.parse(expr)):
            used.setdefault(name, set()).add(where)
    missing = {n: sorted(w) for n, w in used.items() if n not in available}
    assert not missing, f"not exported by a running sidecar or operator: {missing}"
    assert {"llmgw_operator_uninjected_pods", "llmgw_operator_last_reconcile_timestamp_seconds",
            "llmgw_spend_handoff_age_seconds", "llmgw_cache_scope_saved_usd_total"} <= set(used)

"""The LLMGateway CRD: a valid, structural CustomResourceDefinition; every field described; examples valid against
its schema; CEL rules checked by documented cases (each rule has a Python twin here, and a test fails when a rule is
added without one)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmgw_operator.crd import (
    CHART_CRD_RELPATH,
    apply_defaults,
    cel_rules,
    crd_path,
    defaulted_spec,
    load_crd,
    openapi_schema,
    to_json_schema,
    version_entry,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "manifests" / "examples").glob("gateway-*.yaml"))
NEWEST = kubernetes_validate.latest_version()


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(to_json_schema(openapi_schema()))


def test_crd_is_found_in_the_chart_and_is_one_file() -> None:
    assert crd_path() == REPO / CHART_CRD_RELPATH
    copies = [p for p in REPO.rglob("llmgateways.llmgateway.dev.yaml") if ".venv" not in p.parts]
    assert copies == [REPO / CHART_CRD_RELPATH], "the CRD YAML has exactly one source"


@pytest.mark.parametrize("version", ["1.27", NEWEST])
def test_crd_is_a_valid_custom_resource_definition(version: str) -> None:
    kubernetes_validate.validate(load_crd(), version, strict=True)


def test_crd_names_scope_subresource_and_printer_columns() -> None:
    crd = load_crd()
    assert crd["spec"]["scope"] == "Namespaced" and crd["spec"]["names"]["shortNames"] == ["llmgw"]
    v = version_entry()
    assert v["served"] and v["storage"] and v["subresources"] == {"status": {}}
    cols = {c["name"]: c for c in v["additionalPrinterColumns"]}
    assert {"Mode", "Ready", "Age", "Spend-Today", "Hit-Ratio"} <= cols.keys()
    assert cols["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert cols["Spend-Today"]["jsonPath"] == ".status.spend.todayUsd"


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += _walk(schema["items"], f"{path}[]")
    return out


def test_schema_is_structural_and_every_field_is_described() -> None:
    for path, s in _walk(openapi_schema(), ""):
        if path == ".metadata":
            continue  # ObjectMeta: described by Kubernetes itself
        typed = "type" in s or s.get("x-kubernetes-int-or-string") or s.get("x-kubernetes-preserve-unknown-fields")
        assert typed, f"{path}: a structural schema needs a type"
        assert "$ref" not in s and not any(k.startswith("$ref") for k in s), path
        if path.endswith("[]"):
            continue  # list items are described by their list
        assert s.get("description"), f"{path}: no description (kubectl explain would show nothing)"


def test_defaults_are_pinned_and_complete() -> None:
    spec = defaulted_spec({"models": [{"name": "m", "provider": "mock"}]})
    r = spec["redis"]
    assert r["mode"] == "standalone" and r["image"] == "redis/redis-stack-server:7.4.0-v1"
    assert r["auth"] == {"enabled": True, "secretKey": "password"} and r["storage"]["size"] == "1Gi"
    assert spec["cache"]["exact"]["enabled"] and not spec["cache"]["semantic"]["enabled"]
    assert spec["sidecar"]["port"] == 4000 and spec["injection"] == {"enabled": True, "nativeSidecar": "Auto"}
    assert spec["models"][0]["provider"] == "mock"
    # Defaults never overwrite what the user set, and do not apply under a parent that is absent without default.
    assert defaulted_spec({"models": [], "redis": {"mode": "cluster"}})["redis"]["mode"] == "cluster"
    assert "external" not in r


def test_apply_defaults_does_not_mutate_its_input() -> None:
    spec = {"models": [{"name": "m"}]}
    before = copy.deepcopy(spec)
    apply_defaults(spec, openapi_schema()["properties"]["spec"])
    assert spec == before


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_against_the_crd_schema(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "llmgateway.dev/v1alpha1" and doc["kind"] == "LLMGateway"
    validator().validate(doc)
    validator().validate({**doc, "spec": defaulted_spec(doc["spec"])})
    for _path, rule, message in cel_rules():
        twin = CEL_TWINS[rule]
        for obj in _targets(doc, _path):
            assert twin.check(obj, None), f"{path.name}: {message}"


def test_every_mode_has_an_example() -> None:
    modes = {yaml.safe_load(p.read_text())["spec"]["redis"]["mode"] for p in EXAMPLES}
    assert modes == {"standalone", "sentinel", "cluster", "external"}


# (bad part of a spec, where the error points). tests/apiserver sends them to a real API server too.
BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"redis": {"mode": "replicated"}}, "mode"),
    ({"redis": {"shards": 2, "mode": "cluster"}}, "shards"),
    ({"redis": {"storage": {"size": "lots"}}}, "size"),
    ({"redis": {"image": "redis stack"}}, "image"),
    ({"cache": {"semantic": {"distanceThreshold": 2}}}, "distanceThreshold"),
    ({"cache": {"scop": "pod"}}, "scop"),
    ({"sidecar": {"port": 80}}, "port"),
    ({"models": []}, "models"),
    ({"models": [{"name": "m", "apiKeySecretRef": {"name": "s"}}]}, "key"),
    ({"budgets": [{"scope": "pod", "maxUsd": 0}]}, "maxUsd"),
    ({"limits": {"decisionTimeoutMilliseconds": 0}}, "decisionTimeoutMilliseconds"),
    ({"limits": {"unreachableAfterSeconds": 0}}, "unreachableAfterSeconds"),  # an integer below a fractional minimum
    ({"limits": {"heartbeatIntervalSeconds": 0}}, "heartbeatIntervalSeconds"),
]


@pytest.mark.parametrize("bad,where", BAD_SPECS)
def test_schema_refuses_bad_specs(bad: dict[str, Any], where: str) -> None:
    spec: dict[str, Any] = {"models": [{"name": "m", "provider": "mock"}]}
    spec.update(bad)
    doc = {"apiVersion": "llmgateway.dev/v1alpha1", "kind": "LLMGateway", "metadata": {"name": "gw"}, "spec": spec}
    errors = list(validator().iter_errors(doc))
    assert errors, f"accepted: {bad}"
    assert any(where in str(list(e.absolute_path)) + e.message for e in errors), [e.message for e in errors]


# -- CEL rules: Python twins with documented cases ------------------------------------------------------------------

class Twin:
    def __init__(self, fn: Callable[[dict[str, Any], dict[str, Any] | None], bool],
                 good: list[tuple[dict[str, Any], dict[str, Any] | None]],
                 bad: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        self.fn, self.good, self.bad = fn, good, bad

    def check(self, obj: dict[str, Any], old: dict[str, Any] | None) -> bool:
        return self.fn(obj, old)


def _transition(fn: Callable[[dict[str, Any], dict[str, Any]], bool]) -> Callable[..., bool]:
    # Transition rules (using oldSelf) are only evaluated on update.
    return lambda s, o: True if o is None else fn(s, o)


R = {"mode": "standalone", "shards": 3, "replicasPerShard": 1}

CEL_TWINS: dict[str, Twin] = {
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 40": Twin(
        lambda s, o: __import__("re").fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", s["metadata"]["name"]) is not None
        and len(s["metadata"]["name"]) <= 40,
        good=[({"metadata": {"name": "chat"}}, None), ({"metadata": {"name": "a" * 40}}, None)],
        bad=[({"metadata": {"name": "a" * 41}}, None), ({"metadata": {"name": "1chat"}}, None),
             ({"metadata": {"name": "chat.v2"}}, None)]),
    "self.mode == oldSelf.mode": Twin(
        _transition(lambda s, o: s["mode"] == o["mode"]),
        good=[(R, R), (R, None)], bad=[({**R, "mode": "cluster"}, R)]),
    "self.mode != 'external' || has(self.external)": Twin(
        lambda s, o: s["mode"] != "external" or "external" in s,
        good=[(R, None), ({"mode": "external", "external": {}}, None)], bad=[({"mode": "external"}, None)]),
    "self.mode == 'external' || !has(self.external)": Twin(
        lambda s, o: s["mode"] == "external" or "external" not in s,
        good=[(R, None)], bad=[({**R, "external": {"url": "redis://x:1"}}, None)]),
    "self.mode != 'cluster' || self.shards >= oldSelf.shards": Twin(
        _transition(lambda s, o: s["mode"] != "cluster" or s["shards"] >= o["shards"]),
        good=[({**R, "mode": "cluster", "shards": 4}, {**R, "mode": "cluster"})],
        bad=[({**R, "mode": "cluster", "shards": 3}, {**R, "mode": "cluster", "shards": 4})]),
    "self.mode != 'cluster' || self.replicasPerShard == oldSelf.replicasPerShard": Twin(
        _transition(lambda s, o: s["mode"] != "cluster" or s["replicasPerShard"] == o["replicasPerShard"]),
        good=[({**R, "mode": "cluster"}, {**R, "mode": "cluster"})],
        bad=[({**R, "mode": "cluster", "replicasPerShard": 2}, {**R, "mode": "cluster"})]),
    "!self.endsWith(':latest')": Twin(
        lambda s, o: not s.endswith(":latest"),
        good=[("redis/redis-stack-server:7.4.0-v1", None)], bad=[("redis:latest", None)]),  # type: ignore[list-item]
    "self.quorum <= self.count": Twin(
        lambda s, o: s["quorum"] <= s["count"],
        good=[({"count": 3, "quorum": 2}, None)], bad=[({"count": 3, "quorum": 4}, None)]),
    "!self.enabled || has(self.secretName)": Twin(
        lambda s, o: not s["enabled"] or "secretName" in s,
        good=[({"enabled": False}, None), ({"enabled": True, "secretName": "t"}, None)],
        bad=[({"enabled": True}, None)]),
    "self.mode != 'standalone' || has(self.url) != has(self.urlSecretRef)": Twin(
        lambda s, o: s["mode"] != "standalone" or (("url" in s) != ("urlSecretRef" in s)),
        good=[({"mode": "standalone", "url": "redis://h:1"}, None)],
        bad=[({"mode": "standalone"}, None),
             ({"mode": "standalone", "url": "redis://h:1", "urlSecretRef": {"name": "a", "key": "b"}}, None)]),
    "self.mode != 'sentinel' || (has(self.sentinels) && size(self.sentinels) > 0)": Twin(
        lambda s, o: s["mode"] != "sentinel" or bool(s.get("sentinels")),
        good=[({"mode": "sentinel", "sentinels": ["h:26379"]}, None)], bad=[({"mode": "sentinel"}, None)]),
    "self.mode != 'cluster' || (has(self.nodes) && size(self.nodes) > 0)": Twin(
        lambda s, o: s["mode"] != "cluster" or bool(s.get("nodes")),
        good=[({"mode": "cluster", "nodes": ["h:6379"]}, None)], bad=[({"mode": "cluster", "nodes": []}, None)]),
    "self.provider == 'mock' || has(self.baseUrl)": Twin(
        lambda s, o: s["provider"] == "mock" or "baseUrl" in s,
        good=[({"provider": "mock"}, None)], bad=[({"provider": "openai"}, None)]),
    "self.provider != 'azure' || has(self.apiVersion)": Twin(
        lambda s, o: s["provider"] != "azure" or "apiVersion" in s,
        good=[({"provider": "azure", "apiVersion": "2024-10-21"}, None)], bad=[({"provider": "azure"}, None)]),
    "!self.enabled || self.embedding.provider != 'openai' || (has(self.embedding.baseUrl) && "
    "has(self.embedding.model) && has(self.embedding.dims))": Twin(
        lambda s, o: not s["enabled"] or s["embedding"]["provider"] != "openai"
        or all(k in s["embedding"] for k in ("baseUrl", "model", "dims")),
        good=[({"enabled": True, "embedding": {"provider": "local"}}, None)],
        bad=[({"enabled": True, "embedding": {"provider": "openai", "model": "e"}}, None)]),
    "has(self.rpm) || has(self.tpm) || has(self.maxParallel)": Twin(
        lambda s, o: any(k in s for k in ("rpm", "tpm", "maxParallel")),
        good=[({"scope": "pod", "rpm": 1}, None)], bad=[({"scope": "pod"}, None)]),
}


def test_every_cel_rule_has_a_python_twin() -> None:
    rules = {rule for _p, rule, _m in cel_rules()}
    assert rules == set(CEL_TWINS), f"missing twins: {rules - set(CEL_TWINS)}; stale: {set(CEL_TWINS) - rules}"
    assert all(m for _p, _r, m in cel_rules()), "every rule needs a message users can act on"


@pytest.mark.parametrize("rule", sorted(CEL_TWINS))
def test_cel_rule_documented_cases(rule: str) -> None:
    twin = CEL_TWINS[rule]
    for obj, old in twin.good:
        assert twin.check(obj, old), (rule, obj)
    for obj, old in twin.bad:
        assert not twin.check(obj, old), (rule, obj)


def _targets(doc: dict[str, Any], path: str) -> list[Any]:
    """Values at a cel_rules() path such as .spec.models[] or . (the root), after defaulting like the API server."""
    full = {**doc, "spec": defaulted_spec(doc["spec"])}
    nodes: list[Any] = [full]
    for part in [p for p in path.split(".") if p]:
        many = part.endswith("[]")
        key = part.removesuffix("[]")
        nxt: list[Any] = []
        for n in nodes:
            if isinstance(n, dict) and key in n:
                nxt += list(n[key]) if many else [n[key]]
        nodes = nxt
    return nodes


def test_crd_path_can_be_set_for_packaged_installs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy_ = tmp_path / "crd.yaml"
    copy_.write_text((REPO / CHART_CRD_RELPATH).read_text())
    monkeypatch.setenv("LLMGW_CRD_PATH", str(copy_))
    assert crd_path() == copy_
    monkeypatch.setenv("LLMGW_CRD_PATH", str(tmp_path / "missing.yaml"))
    assert crd_path() == REPO / CHART_CRD_RELPATH, "a wrong env path falls back to the chart in the checkout"

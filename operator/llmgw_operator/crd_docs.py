"""docs/crd.md generated from the CRD: `python -m llmgw_operator.crd_docs > docs/crd.md` (a test keeps it in sync)."""

from __future__ import annotations

import json
from typing import Any

from .crd import cel_rules, load_crd, openapi_schema, version_entry

HEADER = """# LLMGateway reference (`llmgateways.llmgateway.dev/v1alpha1`)

Generated from `charts/llmgateway/crds/llmgateways.llmgateway.dev.yaml` by `python -m llmgw_operator.crd_docs`;
do not edit by hand (tests/operator/test_docs.py fails when this file and the CRD disagree). `kubectl explain
llmgateway.spec.redis` shows the same descriptions. Short name: `llmgw`. Examples: `manifests/examples/`.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type(s: dict[str, Any]) -> str:
    if s.get("x-kubernetes-int-or-string"):
        return "int or string"
    t = s.get("type", "object" if s.get("x-kubernetes-preserve-unknown-fields") else "")
    if t == "array":
        return f"[]{_type(s.get('items', {}))}"
    if t == "object" and isinstance(s.get("additionalProperties"), dict):
        return f"map[string]{_type(s['additionalProperties'])}"
    return str(t)


def _constraints(s: dict[str, Any], required: bool) -> str:
    parts = []
    if required:
        parts.append("required")
    if "enum" in s:
        parts.append("one of " + ", ".join(f"`{v}`" for v in s["enum"]))
    if "default" in s and s["default"] != {}:
        parts.append(f"default `{json.dumps(s['default'])}`")
    for k, sym in (("minimum", ">="), ("maximum", "<=")):
        if k in s:
            excl = s.get(f"exclusive{k.capitalize()}") is True
            parts.append(f"{'>' if excl and sym == '>=' else '<' if excl else sym} {s[k]}")
    if "minItems" in s:
        parts.append(f"at least {s['minItems']} item(s)")
    if "maxItems" in s:
        parts.append(f"at most {s['maxItems']} items")
    if "maxLength" in s:
        parts.append(f"at most {s['maxLength']} characters")
    if "pattern" in s:
        parts.append(f"pattern `{s['pattern']}`")
    if s.get("x-kubernetes-list-map-keys"):
        parts.append("unique by " + ", ".join(s["x-kubernetes-list-map-keys"]))
    return "; ".join(parts)


def _rows(s: dict[str, Any], path: str, required: bool, out: list[str]) -> None:
    desc = _cell(" ".join(str(s.get("description", "")).split()))
    out.append(f"| `{path}` | {_type(s)} | {desc} | {_cell(_constraints(s, required))} |")
    req = set(s.get("required", []))
    for name, sub in s.get("properties", {}).items():
        _rows(sub, f"{path}.{name}", name in req, out)
    items = s.get("items")
    if isinstance(items, dict) and items.get("properties"):
        ireq = set(items.get("required", []))
        for name, sub in items["properties"].items():
            _rows(sub, f"{path}[].{name}", name in ireq, out)


def render() -> str:
    schema = openapi_schema()
    lines = [HEADER]
    for section in ("spec", "status"):
        lines += [f"## {section}", "", "| Field | Type | Description | Constraints |", "|---|---|---|---|"]
        root = schema["properties"][section]
        req = set(root.get("required", []))
        for name, sub in root["properties"].items():
            _rows(sub, f"{section}.{name}", name in req, lines)
        lines.append("")
    lines += ["## Validation rules (CEL)", "",
              "Checked by the API server when an object is created or updated; `oldSelf` rules only on update.", "",
              "| Where | Rule | Message |", "|---|---|---|"]
    for path, rule, message in cel_rules():
        lines.append(f"| `{path}` | `{_cell(rule)}` | {_cell(message)} |")
    lines += ["", "## Printer columns", "", "| Column | JSONPath | Description |", "|---|---|---|"]
    for c in version_entry()["additionalPrinterColumns"]:
        lines.append(f"| {c['name']} | `{c['jsonPath']}` | {c.get('description', '')} |")
    lines += ["", f"Kind `{load_crd()['spec']['names']['kind']}`, scope "
              f"{load_crd()['spec']['scope']}, status subresource enabled.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")

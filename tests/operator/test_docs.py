"""docs/crd.md is generated from the CRD and must match it; docs/operations.md covers every mode."""

from __future__ import annotations

from pathlib import Path

from llmgw_operator.crd import openapi_schema
from llmgw_operator.crd_docs import render

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_crd_reference_is_in_sync() -> None:
    assert (DOCS / "crd.md").read_text() == render(), \
        "docs/crd.md is stale: python -m llmgw_operator.crd_docs > docs/crd.md"


def _paths(schema: dict, path: str) -> list[str]:
    out = [path]
    for name, sub in schema.get("properties", {}).items():
        out += _paths(sub, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict):
        for name, sub in items.get("properties", {}).items():
            out += _paths(sub, f"{path}[].{name}")
    return out


def test_every_field_is_documented() -> None:
    text = (DOCS / "crd.md").read_text()
    schema = openapi_schema()
    for section in ("spec", "status"):
        for path in _paths(schema["properties"][section], section)[1:]:
            assert f"| `{path}` |" in text, path


def test_operations_guide_covers_modes_sizing_failover_upgrades() -> None:
    text = (DOCS / "operations.md").read_text()
    for heading in ("### standalone", "### sentinel", "### cluster", "### external", "## Sizing", "## Upgrades"):
        assert heading in text
    assert "Failover behaviour" in text

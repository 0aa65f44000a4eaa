"""Every `default` in the CRD passes the CEL rules of its own schema node, evaluated as the API server does it.

Since CEL validation exists (Kubernetes 1.25+), the API server checks each `default` value against the rules of the
node it sits on (and of the nodes below, for the fields the default contains) WITHOUT filling in the nested defaults
first. A `default: {}` on a node whose rule reads `self.mode` is therefore refused ("no such key: mode") and the whole
CRD with it, although the Python twins in test_crd.py (which default first) pass. The rules are evaluated here with a
real CEL implementation (cel-python), not twins: a rule that errors counts as a refusal, like on the server.
"""

from __future__ import annotations

from typing import Any

import celpy
import pytest

from llmgw_operator.crd import openapi_schema

_env = celpy.Environment()


def _evaluate(rule: str, value: Any) -> tuple[bool, str]:
    """(passed, detail). oldSelf is the value itself: transition rules compare a default with itself."""
    try:
        program = _env.program(_env.compile(rule))
        cel_value = celpy.json_to_cel(value)
        result = program.evaluate({"self": cel_value, "oldSelf": cel_value})
    except celpy.CELEvalError as e:
        return False, f"error: {e.args[0] if e.args else e}"
    if isinstance(result, celpy.CELEvalError):
        return False, f"error: {result.args[0] if result.args else result}"
    return bool(result), str(result)


def _rules_failing(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Failures of the node's own rules and of its descendants' rules for the parts `value` contains."""
    failures = []
    for r in schema.get("x-kubernetes-validations", []):
        ok, detail = _evaluate(r["rule"], value)
        if not ok:
            failures.append(f"{path}: rule {r['rule']!r} ({r.get('message', '')}) -> {detail}")
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                failures += _rules_failing(value[name], sub, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            failures += _rules_failing(item, schema["items"], f"{path}[{i}]")
    return failures


def _defaults(schema: dict[str, Any], path: str = "") -> list[tuple[str, Any, dict[str, Any]]]:
    """(path, default, node) for every node that carries a default."""
    found = [(path or ".", schema["default"], schema)] if "default" in schema else []
    for name, sub in (schema.get("properties") or {}).items():
        found += _defaults(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += _defaults(schema["items"], f"{path}[]")
    return found


DEFAULTS = _defaults(openapi_schema())


def test_the_crd_has_defaults_and_rules_to_check() -> None:
    assert len(DEFAULTS) > 30
    assert any(node.get("x-kubernetes-validations") for _p, _d, node in DEFAULTS), "no defaulted node has rules"


@pytest.mark.parametrize(("path", "default", "node"), DEFAULTS, ids=[p for p, _d, _n in DEFAULTS])
def test_default_passes_its_own_cel_rules_without_nested_defaulting(path: str, default: Any,
                                                                   node: dict[str, Any]) -> None:
    failures = _rules_failing(default, node, path)
    assert not failures, ("the API server refuses this CRD: a default must satisfy its node's CEL rules as written "
                          "(write the fields the rules read into the default):\n" + "\n".join(failures))


@pytest.mark.parametrize(("rule", "value", "passes"), [
    ("self.mode == oldSelf.mode", {}, False),  # the reported refusal: "no such key: mode"
    ("self.mode == oldSelf.mode", {"mode": "standalone"}, True),
    ("!self.enabled || has(self.secretName)", {"enabled": False}, True),
    ("!self.enabled || has(self.secretName)", {"enabled": True}, False),
    ("self.quorum <= self.count", {"count": 3, "quorum": 4}, False),
])
def test_the_evaluator_refuses_what_the_server_refuses(rule: str, value: Any, passes: bool) -> None:
    assert _evaluate(rule, value)[0] is passes

"""The LLMGateway CRD: where its YAML lives, its schema, and structural defaulting like the API server does.

The YAML under charts/llmgateway/crds/ is the single source. The operator reads it at run time so that defaults are
defined once: the API server applies them on admission, and `apply_defaults` applies the same ones here, which matters
for objects that never passed a real API server (tests, the emulator, CRs stored before a default was added).
"""

from __future__ import annotations

import copy
import functools
import os
import sys
from pathlib import Path
from typing import Any

import yaml

GROUP = "llmgateway.dev"
VERSION = "v1alpha1"
PLURAL = "llmgateways"
KIND = "LLMGateway"
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILE = f"{CRD_NAME}.yaml"
CHART_CRD_RELPATH = Path("charts") / "llmgateway" / "crds" / CRD_FILE


class CRDNotFound(RuntimeError):
    """The CRD YAML could not be located; the message lists where we looked."""


def crd_path() -> Path:
    """Locate the CRD YAML: $LLMGW_CRD_PATH, the source checkout, or the chart copied into an image/prefix."""
    candidates: list[Path] = []
    if env := os.environ.get("LLMGW_CRD_PATH"):
        candidates.append(Path(env))
    # Source checkout / editable install: operator/llmgw_operator/crd.py -> repo root is two levels up.
    candidates.append(Path(__file__).resolve().parents[2] / CHART_CRD_RELPATH)
    # Images copy the chart next to the application (e.g. /app/charts/...) or into the prefix.
    candidates.append(Path.cwd() / CHART_CRD_RELPATH)
    candidates.append(Path(sys.prefix) / "share" / "llmgateway" / CHART_CRD_RELPATH)
    for c in candidates:
        if c.is_file():
            return c
    raise CRDNotFound("LLMGateway CRD not found; set LLMGW_CRD_PATH. Looked in: " + ", ".join(map(str, candidates)))


@functools.cache
def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(crd_path().read_text())
    return crd


def version_entry(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    crd = crd or load_crd()
    entry: dict[str, Any] = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
    return entry


def openapi_schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = version_entry(crd)["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it: a missing property with a `default` gets it (and is then
    defaulted itself); defaults never apply under a missing parent, which is why parents carry `default: {}`."""
    value = copy.deepcopy(value)
    _default_in_place(value, schema)
    return value


def _default_in_place(value: Any, schema: dict[str, Any]) -> None:
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default_in_place(value[name], sub)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default_in_place(item, schema["items"])


def defaulted_spec(spec: dict[str, Any] | Any) -> dict[str, Any]:
    """The spec with every CRD default filled in (kopf hands us a read-only mapping: copy it into plain dicts)."""
    plain = _plain(spec)
    defaulted: dict[str, Any] = apply_defaults(plain, openapi_schema()["properties"]["spec"])
    return defaulted


def _plain(value: Any) -> Any:
    if hasattr(value, "items") and not isinstance(value, dict | list | str):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3.0 (Kubernetes flavour) -> JSON Schema that `jsonschema` understands: boolean exclusive bounds become
    numeric ones, Kubernetes extensions and CEL rules are dropped (CEL is tested separately)."""
    out: dict[str, Any] = {}
    for k, v in schema.items():
        if k.startswith("x-kubernetes-"):
            continue
        if k == "properties":
            out[k] = {name: to_json_schema(sub) for name, sub in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            out[k] = to_json_schema(v)
        elif k in ("anyOf", "allOf", "oneOf"):
            out[k] = [to_json_schema(s) for s in v]
        elif k in ("exclusiveMinimum", "exclusiveMaximum"):
            continue
        else:
            out[k] = v
    for excl, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if schema.get(excl) is True and bound in schema:
            out[excl] = schema[bound]
            out.pop(bound, None)
    # Unknown fields: the API server prunes them, and `kubectl apply` (strict field validation, the default since
    # 1.27) refuses them. Refuse them here too, so a typo in an example is caught by the tests.
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def cel_rules(schema: dict[str, Any] | None = None, path: str = "") -> list[tuple[str, str, str]]:
    """Every CEL rule in the schema as (field path, rule, message), for tests and the docs."""
    schema = schema if schema is not None else openapi_schema()
    found = [(path or ".", r["rule"], r.get("message", "")) for r in schema.get("x-kubernetes-validations", [])]
    for name, sub in schema.get("properties", {}).items():
        found += cel_rules(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += cel_rules(schema["items"], f"{path}[]")
    return found

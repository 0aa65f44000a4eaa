"""Strict Kubernetes schema validation of built objects for the supported range (tests.chart.helpers.VERSIONS: the
oldest supported version and the newest schema). Combinations of options share most objects, so each distinct object
is validated once per session (same content, same verdict)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

from llmgw_operator.builders.meta import content_hash
from tests.chart.helpers import VERSIONS

_VALIDATED: set[str] = set()


def validate_strict(objs: list[dict[str, Any]]) -> None:
    for o in objs:
        digest = content_hash(o)
        if digest in _VALIDATED:
            continue
        for v in VERSIONS:
            kubernetes_validate.validate(o, v, strict=True)
        _VALIDATED.add(digest)

"""The exact-cache key layout documented in docs/configuration.md is the one the code writes."""

from __future__ import annotations

from pathlib import Path

from llmgw_sidecar.cache.keys import exact_key
from llmgw_sidecar.caller_scope import cache_partition as scope_key
from llmgw_sidecar.config import Scope
from llmgw_sidecar.context import Caller

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def test_documented_example_key_is_what_the_code_builds() -> None:
    scope = scope_key(Scope.namespace, "default", "local", Caller("team-a", "pod-1", "default"))
    key = exact_key("llmgw", scope, None, "<fingerprint: 64 hex digits>", generation=0, model="gpt-4o-mini")
    assert f"\n{key}\n" in DOC, key


def test_documented_template_matches_the_code() -> None:
    key = exact_key("P", "S", "N", "F", generation=7, model="M")
    assert key == "P:exact:S|g:7|cns:N|m:M:F"
    assert "{redis.key_prefix}:exact:{scope}|g:{cache.generation}[|cns:{cache namespace}][|m:{model}]:{fingerprint}" in DOC

"""Pure parts of gateway identity: JWT expiry bound of the review cache, namespace selectors, bearer parsing."""

from __future__ import annotations

import base64
import json

import pytest

from llmgw_sidecar.auth.tokenreview import selector_matches, token_expiry, trusted_until
from llmgw_sidecar.config import NamespaceSelector


def jwt(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_tokens_are_trusted_for_max_cache_s_but_never_past_their_expiry() -> None:
    now, wall = 1000.0, 1_700_000_000.0
    assert token_expiry(jwt({"exp": 1_700_000_060})) == 1_700_000_060
    assert trusted_until(now, wall, 300, jwt({"exp": wall + 60})) == now + 60  # expires first
    assert trusted_until(now, wall, 300, jwt({"exp": wall + 3600})) == now + 300  # cache bound first
    assert trusted_until(now, wall, 300, jwt({"exp": wall - 5})) < now  # already expired: not cached at all
    for odd in ("not-a-jwt", jwt({"sub": "x"}), "a.!!!.c", jwt({"exp": "soon"})):
        assert trusted_until(now, wall, 300, odd) == now + 300


@pytest.mark.parametrize(("sel", "labels", "ok"), [
    ({}, {}, True),
    ({"match_labels": {"llm": "yes"}}, {"llm": "yes", "x": "1"}, True),
    ({"match_labels": {"llm": "yes"}}, {"llm": "no"}, False),
    ({"match_expressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, {"team": "b"}, True),
    ({"match_expressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, {}, False),
    ({"match_expressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"match_expressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, {"team": "a"}, False),
    ({"match_expressions": [{"key": "pci", "operator": "DoesNotExist"}]}, {"pci": ""}, False),
    ({"match_expressions": [{"key": "pci", "operator": "Exists"}]}, {"pci": ""}, True),
    ({"match_labels": {"llm": "yes"}, "match_expressions": [{"key": "pci", "operator": "DoesNotExist"}]},
     {"llm": "yes"}, True),
])
def test_namespace_selector_semantics_match_kubernetes(sel: dict, labels: dict, ok: bool) -> None:
    assert selector_matches(NamespaceSelector.model_validate(sel), labels) is ok

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


async def test_concurrent_first_calls_share_one_review_cached_as_it_completes() -> None:
    """One TokenReview for a burst of first requests with one token, and its verdict is cached by the time the review
    completes: a request arriving before the waiters resume must not ask the API server again (it did, in CI)."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from llmgw_sidecar.auth.tokenreview import TokenReviewer
    from llmgw_sidecar.config import TokenReviewConfig
    from llmgw_sidecar.metrics import Metrics

    release = asyncio.Event()
    calls = 0

    class Kube:
        async def token_review(self, token: str, audience: str) -> dict:
            nonlocal calls
            calls += 1
            await release.wait()
            return {"authenticated": True, "audiences": [audience],
                    "user": {"username": "system:serviceaccount:team-a:app"}}

        async def close(self) -> None:
            return None

    rev = TokenReviewer(TokenReviewConfig(api_server="https://127.0.0.1:1"), "team-a", Metrics(CollectorRegistry()),
                        kube=Kube())  # type: ignore[arg-type]
    waiters = [asyncio.ensure_future(rev.caller("token")) for _ in range(8)]
    await asyncio.sleep(0)
    (review,) = rev._inflight.values()
    cached_when_done: list[int] = []
    review.add_done_callback(lambda _f: cached_when_done.append(len(rev)))
    release.set()
    callers = await asyncio.gather(*waiters)
    assert calls == 1 and cached_when_done == [1] and not rev._inflight
    assert await rev.caller("token") == callers[0] and calls == 1

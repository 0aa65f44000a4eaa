"""The one caller-scope encoder: both spellings, for every scope, exactly as Redis keys have carried them (a change
here orphans cached answers or resets limits and budgets, so the strings are pinned)."""

from __future__ import annotations

import pytest

from llmgw_sidecar.caller_scope import all_subjects, cache_partition, subject
from llmgw_sidecar.config import Scope
from llmgw_sidecar.context import Caller

WITH_KEY = Caller("team-a", "pod-1", "sa-1", "abc123")
ANON = Caller("team-a", "pod-1", "sa-1", None)


@pytest.mark.parametrize(("scope", "caller", "partition", "subj"), [
    (Scope.global_, WITH_KEY, "global", "gw"),
    (Scope.gateway, WITH_KEY, "gw:gns/gw", "gw"),
    (Scope.namespace, WITH_KEY, "gw:gns/gw|ns:team-a", "ns:team-a"),
    (Scope.service_account, WITH_KEY, "gw:gns/gw|ns:team-a|sa:sa-1", "sa:team-a/sa-1"),
    (Scope.pod, WITH_KEY, "gw:gns/gw|ns:team-a|pod:pod-1", "pod:team-a/pod-1"),
    (Scope.api_key, WITH_KEY, "gw:gns/gw|key:abc123", "key:abc123"),
    (Scope.api_key, ANON, "gw:gns/gw|key:-", "key:anonymous"),
    (Scope.namespace, Caller("", "", "", None), "gw:gns/gw|ns:", "ns:"),
])
def test_both_spellings(scope: Scope, caller: Caller, partition: str, subj: str) -> None:
    assert cache_partition(scope, "gns", "gw", caller) == partition
    assert subject(scope, caller) == subj


def test_all_subjects_covers_every_limit_scope() -> None:
    assert all_subjects(ANON) == ["gw", "ns:team-a", "sa:team-a/sa-1", "pod:team-a/pod-1", "key:anonymous"]

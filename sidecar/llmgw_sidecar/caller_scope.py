"""Caller scope: the one encoder of "who is this caller at this scope", used by the cache (which answers a caller may
share), rate limits, budgets and spend (which counter a request counts against).

A scope of a caller is a path below the gateway: namespace -> [ns], service_account -> [ns, sa], pod -> [ns, pod],
api_key -> [key], gateway and global -> []. Two spellings of that path exist because Redis keys already carry them
(changing either would orphan stored answers or reset counters):

    cache partition   "global" | "gw:<ns>/<name>" + "|ns:<ns>" ["|sa:<sa>" | "|pod:<pod>"] | "gw:..|key:<hash or ->"
    limit subject     "gw" | "ns:<ns>" | "sa:<ns>/<sa>" | "pod:<ns>/<pod>" | "key:<hash>" | "key:anonymous"
                      (and "vkey:<hash>" for a virtual key's own limits)

docs/operations.md lists both, with every key that embeds them, in one table.
"""

from __future__ import annotations

from typing import NewType

from .config import Scope
from .context import Caller

CachePartition = NewType("CachePartition", str)  # what a cached answer's key and entry carry
Subject = NewType("Subject", str)  # what a limit, budget or spend total counts against

ANONYMOUS_KEY = Subject("key:anonymous")  # not a hex digest: never collides with a real key's subject
_NO_KEY = "-"  # cache partition of callers without an Authorization header


def scope_path(scope: Scope, caller: Caller) -> list[tuple[str, str | None]]:
    """The caller's (kind, value) segments at this scope, outermost first, below the gateway."""
    if scope in (Scope.global_, Scope.gateway):
        return []
    if scope == Scope.namespace:
        return [("ns", caller.namespace)]
    if scope == Scope.service_account:
        return [("ns", caller.namespace), ("sa", caller.service_account)]
    if scope == Scope.pod:
        return [("ns", caller.namespace), ("pod", caller.pod)]
    return [("key", caller.api_key_hash)]


def cache_partition(scope: Scope, gateway_ns: str, gateway_name: str, caller: Caller) -> CachePartition:
    """The partition a cached answer belongs to. Everything but `global` includes the gateway."""
    if scope == Scope.global_:
        return CachePartition("global")
    segments = "".join(f"|{kind}:{_NO_KEY if kind == 'key' and not value else value}"
                       for kind, value in scope_path(scope, caller))
    return CachePartition(f"gw:{gateway_ns}/{gateway_name}{segments}")


def subject(scope: Scope, caller: Caller) -> Subject:
    """The subject a limit or budget of this scope counts against. Requests without an Authorization header share
    one `api_key` subject (the anonymous caller), so an api_key limit or budget is never skipped."""
    path = scope_path(scope, caller)
    if not path:
        return Subject("gw")
    kind, value = path[-1]
    if kind == "key" and not value:
        return ANONYMOUS_KEY
    return Subject(f"{kind}:{'/'.join(v or '' for _, v in path)}")


def virtual_key_subject(caller: Caller) -> Subject:
    """The subject of a virtual key's own limits (gateway mode): separate from an api_key scope limit's."""
    return Subject(f"vkey:{caller.api_key_hash}")


def all_subjects(caller: Caller) -> list[Subject]:
    """Every subject a record's cost is added to (so a budget of any scope can be checked)."""
    return [subject(s, caller) for s in (Scope.gateway, Scope.namespace, Scope.service_account, Scope.pod,
                                         Scope.api_key)]

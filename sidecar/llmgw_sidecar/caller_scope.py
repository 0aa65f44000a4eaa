"""Caller scope: the one encoder of "who is this caller at this scope", used by the cache (which answers a caller may
share), rate limits, budgets and spend (which counter a request counts against).

A scope of a caller is a path below the gateway: namespace -> ns, service_account -> ns, sa, pod -> ns, pod,
api_key -> key, gateway and global -> nothing. Two spellings of that path exist because Redis keys already carry them
(changing either would orphan stored answers or reset counters), so both live here, side by side:

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


def cache_partition(scope: Scope, gateway_ns: str, gateway_name: str, caller: Caller) -> CachePartition:
    """The partition a cached answer belongs to. Everything but `global` includes the gateway. (Direct branches, not a
    generic join: this runs on every request.)"""
    if scope == Scope.global_:
        return CachePartition("global")
    gw = f"gw:{gateway_ns}/{gateway_name}"
    if scope == Scope.gateway:
        return CachePartition(gw)
    if scope == Scope.namespace:
        return CachePartition(f"{gw}|ns:{caller.namespace}")
    if scope == Scope.service_account:
        return CachePartition(f"{gw}|ns:{caller.namespace}|sa:{caller.service_account}")
    if scope == Scope.pod:
        return CachePartition(f"{gw}|ns:{caller.namespace}|pod:{caller.pod}")
    return CachePartition(f"{gw}|key:{caller.api_key_hash or _NO_KEY}")


def subject(scope: Scope, caller: Caller) -> Subject:
    """The subject a limit or budget of this scope counts against. Requests without an Authorization header share
    one `api_key` subject (the anonymous caller), so an api_key limit or budget is never skipped."""
    if scope in (Scope.global_, Scope.gateway):
        return Subject("gw")
    if scope == Scope.namespace:
        return Subject(f"ns:{caller.namespace}")
    if scope == Scope.service_account:
        return Subject(f"sa:{caller.namespace}/{caller.service_account}")
    if scope == Scope.pod:
        return Subject(f"pod:{caller.namespace}/{caller.pod}")
    return Subject(f"key:{caller.api_key_hash}") if caller.api_key_hash else ANONYMOUS_KEY


def virtual_key_subject(caller: Caller) -> Subject:
    """The subject of a virtual key's own limits (gateway mode): separate from an api_key scope limit's."""
    return Subject(f"vkey:{caller.api_key_hash}")


def all_subjects(caller: Caller) -> list[Subject]:
    """Every subject a record's cost is added to (so a budget of any scope can be checked)."""
    return [subject(s, caller) for s in (Scope.gateway, Scope.namespace, Scope.service_account, Scope.pod,
                                         Scope.api_key)]

"""What counts as a change of a live object, as pure functions of (what we render, what the API server has):
drift of a field we render, and changes of StatefulSet fields the API server cannot make in place. apply.py acts on
them; values the API server normalises ("0.5" CPU -> "500m") compare as equal quantities, and fields it adds
(defaults, other managers' fields) are not ours and are ignored."""

from __future__ import annotations

from typing import Any

from kubernetes.utils import parse_quantity

from .builders.meta import Manifest


def claims(spec: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """What matters of each volume claim template, ignoring what the API server fills in (status, volumeMode)."""
    out = {}
    for c in spec.get("volumeClaimTemplates") or []:
        s = c.get("spec") or {}
        out[c["metadata"]["name"]] = (s.get("resources", {}).get("requests", {}).get("storage"),
                                      s.get("storageClassName"), tuple(s.get("accessModes") or ()))
    return out


def immutable_changes(want_obj: Manifest, have_obj: dict[str, Any]) -> list[str]:
    """The StatefulSet fields that would change although the API server cannot change them in place, described as
    "field old -> new" (empty: the apply may go ahead; unchanged immutable fields are no change to the server)."""
    want, have = want_obj["spec"], have_obj.get("spec") or {}
    changes = []
    if claims(want) != claims(have):
        changes.append(f"volumeClaimTemplates {claims(have)} -> {claims(want)}")
    for f in ("serviceName", "podManagementPolicy"):
        if f in have and want.get(f) != have.get(f):
            changes.append(f"{f} {have.get(f)!r} -> {want.get(f)!r}")
    if (want.get("selector") or {}).get("matchLabels") != (have.get("selector") or {}).get("matchLabels"):
        changes.append("selector")
    return changes


def drifted(want: Any, have: Any) -> bool:
    """True when a value we render differs on the live object. Fields only the live object has (server defaults,
    other managers) do not count; quantities compare by value ("0.5" == "500m")."""
    if isinstance(want, dict):
        return not isinstance(have, dict) or any(k not in have or drifted(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return not isinstance(have, list) or len(want) != len(have) or any(map(drifted, want, have))
    if want == have:
        return False
    if isinstance(want, str | int | float) and isinstance(have, str | int | float):
        try:
            return bool(parse_quantity(want) != parse_quantity(have))
        except ValueError:
            return True
    return True

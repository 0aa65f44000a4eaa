"""external mode: nothing is provisioned. The sidecar config points at the user's Redis (see sidecar_config)."""

from __future__ import annotations

from .meta import Manifest
from .spec import Gateway


def build(gw: Gateway) -> list[Manifest]:
    # Deliberately empty: the user owns the Redis. Reachability is checked at reconcile time and reported in status.
    del gw
    return []

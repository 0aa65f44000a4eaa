"""One-time initialisation of a shared Redis Cluster client before concurrent use.

redis-py's async RedisCluster initialises itself lazily on the first command; when several tasks issue their first
command at once (a burst right after start-up), some of them fail ("'NoneType' object has no attribute
'writelines'") and its internal retry can run a script twice. Initialising once, under a lock, avoids both.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

_locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()
_ready: weakref.WeakSet[Any] = weakref.WeakSet()


async def ensure_initialized(client: Any) -> None:
    """No-op for standalone/sentinel clients and for a cluster client that is already initialised."""
    if client in _ready or not hasattr(client, "get_node_from_key"):
        return
    lock = _locks.setdefault(client, asyncio.Lock())
    async with lock:
        if client not in _ready:
            await client.initialize()
            _ready.add(client)

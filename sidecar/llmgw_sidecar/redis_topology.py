"""Async Redis clients for the three topologies, from the one RedisConfig.

Every stage (cache, limits, spend) shares the same pooled client per process: no per-request connects.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import RedisConfig, RedisMode

AnyRedis = Redis | RedisCluster


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def _common_kwargs(cfg: RedisConfig, protocol: int) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "username": cfg.username,
        "password": cfg.resolved_password(),
        "socket_connect_timeout": cfg.connect_timeout_ms / 1000,
        # Cache calls carry their own (short) deadline; this only bounds a hung socket.
        "socket_timeout": max(cfg.op_timeout_ms / 1000 * 20, 1.0),
        "protocol": protocol,
        # Fail fast: the caller decides about fail-open; a retry here would blow the deadline.
        "retry": Retry(NoBackoff(), 0),
    }
    if cfg.tls.enabled:
        kw.update(
            ssl=True,
            ssl_ca_certs=cfg.tls.ca_file,
            ssl_certfile=cfg.tls.cert_file,
            ssl_keyfile=cfg.tls.key_file,
            ssl_cert_reqs=ssl.CERT_NONE if cfg.tls.insecure_skip_verify else ssl.CERT_REQUIRED,
            ssl_check_hostname=cfg.tls.check_hostname and not cfg.tls.insecure_skip_verify,
        )
    return kw


def make_client(cfg: RedisConfig, *, protocol: int = 2, decode_responses: bool = False) -> AnyRedis:
    """A pooled async client for the configured topology (RESP2 by default: redisvl needs it)."""
    kw = _common_kwargs(cfg, protocol)
    kw["decode_responses"] = decode_responses
    if cfg.mode == RedisMode.cluster:
        kw.pop("retry")
        return RedisCluster(
            startup_nodes=[ClusterNode(*_split(n)) for n in cfg.nodes],
            max_connections=cfg.max_connections,
            **kw,
        )
    if cfg.mode == RedisMode.sentinel:
        sentinel_kw: dict[str, Any] = {"socket_connect_timeout": cfg.connect_timeout_ms / 1000, "protocol": protocol}
        if cfg.sentinel_password:
            sentinel_kw["password"] = cfg.sentinel_password
        sentinel = Sentinel([_split(s) for s in cfg.sentinels], sentinel_kwargs=sentinel_kw, **kw)
        return sentinel.master_for(cfg.master_name, db=cfg.db, max_connections=cfg.max_connections)
    return Redis.from_url(cfg.url, db=cfg.db, max_connections=cfg.max_connections, **kw)


def redis_url(cfg: RedisConfig) -> str:
    """A URL for libraries that take one (redisvl). Password and TLS files are not encoded: prefer make_client."""
    if cfg.mode == RedisMode.cluster:
        host, port = _split(cfg.nodes[0])
        return f"redis://{host}:{port}/0?cluster=true"
    if cfg.mode == RedisMode.sentinel:
        return f"redis+sentinel://{','.join(cfg.sentinels)}/{cfg.master_name}"
    return cfg.url


_init_locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()
_initialized: weakref.WeakSet[Any] = weakref.WeakSet()


async def ensure_initialized(client: Any) -> None:
    """Initialise a shared cluster client once, under a lock, before concurrent use.

    redis-py's async RedisCluster initialises lazily on the first command; when several tasks send their first command
    at once (a burst right after start-up) some fail ("'NoneType' object has no attribute 'writelines'") and its
    internal retry can run a script twice. No-op for standalone/sentinel clients and once initialised.
    """
    if client in _initialized or not isinstance(client, RedisCluster):
        return
    lock = _init_locks.setdefault(client, asyncio.Lock())
    async with lock:
        if client not in _initialized:
            await client.initialize()
            _initialized.add(client)

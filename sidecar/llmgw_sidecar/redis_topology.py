"""Async Redis clients for the three topologies, from the one RedisConfig (built by redis_connect.py, the factory the
operator uses too).

Every stage (cache, limits, spend) shares the same pooled client per process: no per-request connects.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .config import RedisConfig, RedisMode
from .redis_auth import (
    IamConnection,
    IamSentinelConnection,
    IamSentinelSSLConnection,
    IamSSLConnection,
    make_credentials,
)
from .redis_connect import Endpoint, Tls, async_client, connection_kwargs, split_hostport

AnyRedis = Redis | RedisCluster


def endpoint(cfg: RedisConfig, *, protocol: int = 2, decode_responses: bool = False) -> Endpoint:
    """The connection factory's view of a RedisConfig (redis_connect.py builds the client)."""
    extra: dict[str, Any] = {}
    if cfg.iam is not None:
        # One token source per config, shared by the main client and any per-node clients built from these kwargs.
        if cfg._credentials is None:
            cfg._credentials = make_credentials(cfg.iam, cfg.username)
        extra["credential_provider"] = cfg._credentials
    tls = None
    if cfg.tls.enabled:
        tls = Tls(ca_file=cfg.tls.ca_file, cert_file=cfg.tls.cert_file, key_file=cfg.tls.key_file,
                  verify=not cfg.tls.insecure_skip_verify, check_hostname=cfg.tls.check_hostname)
    return Endpoint(
        mode=cfg.mode.value, url=cfg.url, sentinels=tuple(cfg.sentinels), master_name=cfg.master_name,
        nodes=tuple(cfg.nodes), db=cfg.db, username=cfg.username, password=cfg.resolved_password(),
        sentinel_password=cfg.sentinel_password, tls=tls, sentinel_tls=cfg.sentinel_tls,
        connect_timeout_s=cfg.connect_timeout_ms / 1000,
        # Cache calls carry their own (short) deadline; this only bounds a hung socket.
        socket_timeout_s=max(cfg.op_timeout_ms / 1000 * 20, 1.0),
        protocol=protocol, decode_responses=decode_responses, max_connections=cfg.max_connections, extra=extra)


def node_client(cfg: RedisConfig, host: str, port: int, *, protocol: int = 2) -> Redis:
    """A client for one cluster node by address, with the shared client's credentials, TLS and timeouts (the semantic
    cache searches each shard on its own node)."""
    kw = connection_kwargs(endpoint(cfg, protocol=protocol))
    kw.pop("retry", None)
    return Redis(host=host, port=port, max_connections=cfg.max_connections, **kw)


def make_client(cfg: RedisConfig, *, protocol: int = 2, decode_responses: bool = False,
                on_auth_event: Any = None) -> AnyRedis:
    """A pooled async client for the configured topology (RESP2 by default: redisvl needs it).

    With `redis.iam`, connections authenticate with short-lived tokens and re-authenticate when they rotate
    (redis_auth.py); `on_auth_event(kind, result)` counts refreshes and re-authentications."""
    ep = endpoint(cfg, protocol=protocol, decode_responses=decode_responses)
    creds = ep.extra.get("credential_provider")
    if creds is not None and on_auth_event is not None:
        creds.set_on_event(on_auth_event)
    iam_cls: type | None = None
    if creds is not None:
        tls = cfg.tls.enabled or cfg.url.startswith("rediss://")
        if cfg.mode == RedisMode.sentinel:
            iam_cls = IamSentinelSSLConnection if tls else IamSentinelConnection
        else:
            iam_cls = IamSSLConnection if tls else IamConnection
    client = async_client(ep, connection_class=iam_cls)
    if creds is not None:
        _credentials[client] = creds
    return client


_credentials: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


async def close_client(client: AnyRedis) -> None:
    """Close a client from make_client, and stop its token refresher."""
    creds = _credentials.pop(client, None)
    if creds is not None:
        await creds.close()
    await client.aclose()


def redis_url(cfg: RedisConfig) -> str:
    """A URL for libraries that take one (redisvl). Password and TLS files are not encoded: prefer make_client."""
    if cfg.mode == RedisMode.cluster:
        host, port = split_hostport(cfg.nodes[0])
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

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
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import RedisConfig, RedisMode
from .redis_auth import (
    IamConnection,
    IamSentinelConnection,
    IamSentinelSSLConnection,
    IamSSLConnection,
    make_credentials,
)

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
    if cfg.iam is not None:
        # One token source per config, shared by the main client and any per-node clients built from these kwargs.
        if cfg._credentials is None:
            cfg._credentials = make_credentials(cfg.iam, cfg.username)
        del kw["username"], kw["password"]
        kw["credential_provider"] = cfg._credentials
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


def make_client(cfg: RedisConfig, *, protocol: int = 2, decode_responses: bool = False,
                on_auth_event: Any = None) -> AnyRedis:
    """A pooled async client for the configured topology (RESP2 by default: redisvl needs it).

    With `redis.iam`, connections authenticate with short-lived tokens and re-authenticate when they rotate
    (redis_auth.py); `on_auth_event(kind, result)` counts refreshes and re-authentications."""
    kw = _common_kwargs(cfg, protocol)
    kw["decode_responses"] = decode_responses
    creds = kw.get("credential_provider")
    if creds is not None and on_auth_event is not None:
        creds.set_on_event(on_auth_event)
    tls = cfg.tls.enabled or cfg.url.startswith("rediss://")
    client: AnyRedis
    if cfg.mode == RedisMode.cluster:
        kw.pop("retry")
        client = RedisCluster(
            startup_nodes=[ClusterNode(*_split(n)) for n in cfg.nodes],
            max_connections=cfg.max_connections,
            **kw,
        )
        if creds is not None:
            # RedisCluster picks its connection class itself: hand it ours for every node, known or discovered.
            iam_cls = IamSSLConnection if tls else IamConnection
            client.nodes_manager.connection_kwargs["connection_class"] = iam_cls
            for node in client.nodes_manager.startup_nodes.values():
                node.connection_class = iam_cls
    elif cfg.mode == RedisMode.sentinel:
        sentinel_kw: dict[str, Any] = {"socket_connect_timeout": cfg.connect_timeout_ms / 1000, "protocol": protocol}
        if cfg.sentinel_password:
            sentinel_kw["password"] = cfg.sentinel_password
        master_kw: dict[str, Any] = {}
        if creds is not None:
            master_kw["connection_class"] = IamSentinelSSLConnection if tls else IamSentinelConnection
        sentinel = Sentinel([_split(s) for s in cfg.sentinels], sentinel_kwargs=sentinel_kw, **kw)
        client = sentinel.master_for(cfg.master_name, db=cfg.db, max_connections=cfg.max_connections, **master_kw)
    else:
        # from_url picks the connection class from the scheme; we pick it (TLS, IAM) and pass a plain scheme.
        url = cfg.url
        if url.startswith(("redis://", "rediss://")):
            url = "redis://" + url.split("://", 1)[1]
            kw.pop("ssl", None)
            if creds is not None:
                kw["connection_class"] = IamSSLConnection if tls else IamConnection
            elif tls:
                kw["connection_class"] = SSLConnection
            if tls and "ssl_ca_certs" not in kw:  # rediss:// without a tls section: verify against system CAs
                kw.update(ssl_cert_reqs=ssl.CERT_REQUIRED, ssl_check_hostname=True)
        client = Redis.from_url(url, db=cfg.db, max_connections=cfg.max_connections, **kw)
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

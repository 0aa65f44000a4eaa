"""The one Redis connection factory: the sidecar (async, redis_topology.make_client) and the operator (sync,
llmgw_operator.redis_access) describe where and how to connect as an `Endpoint` and get a client for its topology
(standalone URL, sentinel-discovered master, cluster) with the same TLS, ACL and timeout handling.

TLS applies to the sentinels too when they speak it (the operator's sentinels with spec.redis.tls listen on TLS only):
redis-py uses `sentinel_kwargs` alone for the sentinel connections, so the TLS settings must be repeated there.
No client-side retries anywhere: callers own their deadlines (fail open in the sidecar, next pass in the operator).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

AsyncRedis = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
SyncRedis = redis.Redis | redis.cluster.RedisCluster


@dataclass(frozen=True)
class Tls:
    """TLS to Redis. Either a CA file (the sidecar's mounted Secret) or CA data (the operator reads the Secret)."""

    ca_file: str | None = None
    ca_data: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    check_hostname: bool = True

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "ssl_cert_reqs": ssl.CERT_REQUIRED if self.verify else ssl.CERT_NONE,
            "ssl_check_hostname": self.check_hostname and self.verify,
        }
        for k, v in (("ssl_ca_certs", self.ca_file), ("ssl_ca_data", self.ca_data), ("ssl_certfile", self.cert_file),
                     ("ssl_keyfile", self.key_file)):
            if v is not None:
                kw[k] = v
        return kw


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one Redis, secrets already resolved (never logged)."""

    mode: str = "standalone"  # standalone | sentinel | cluster
    url: str = "redis://127.0.0.1:6379/0"
    sentinels: tuple[str, ...] = ()
    master_name: str = "mymaster"
    nodes: tuple[str, ...] = ()
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: Tls | None = None  # None: plain TCP, unless the URL says rediss:// (then verified against the system CAs)
    sentinel_tls: bool | None = None  # None: the sentinels speak TLS when the data nodes do
    connect_timeout_s: float = 0.5
    socket_timeout_s: float = 1.0
    protocol: int = 2
    decode_responses: bool = False
    max_connections: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. credential_provider (IAM tokens)


def split_hostport(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def connection_kwargs(ep: Endpoint) -> dict[str, Any]:
    """Keyword arguments of every data-node connection (not the sentinels)."""
    kw: dict[str, Any] = {
        "username": ep.username,
        "password": ep.password,
        "socket_connect_timeout": ep.connect_timeout_s,
        "socket_timeout": ep.socket_timeout_s,
        "protocol": ep.protocol,
        "decode_responses": ep.decode_responses,
        "retry": _no_retry(),
        **ep.extra,
    }
    if "credential_provider" in kw:  # the provider answers (user, token): no static credentials beside it
        del kw["username"], kw["password"]
    if ep.tls is not None:
        kw.update(ssl=True, **ep.tls.kwargs())
    return kw


def sentinel_kwargs(ep: Endpoint) -> dict[str, Any]:
    """Keyword arguments of the connections to the sentinels themselves."""
    kw: dict[str, Any] = {
        "socket_connect_timeout": ep.connect_timeout_s,
        "socket_timeout": ep.socket_timeout_s,
        "protocol": ep.protocol,
        "retry": _no_retry(),
    }
    if ep.sentinel_password:
        kw["password"] = ep.sentinel_password
    tls = ep.tls is not None if ep.sentinel_tls is None else ep.sentinel_tls
    if tls:
        kw.update(ssl=True, **(ep.tls or Tls()).kwargs())
    return kw


def _standalone_kwargs(ep: Endpoint) -> tuple[str, dict[str, Any], bool]:
    """(plain redis:// URL, kwargs, tls): the connection class is ours to pick (TLS, IAM), not the URL scheme's."""
    kw = connection_kwargs(ep)
    url = ep.url
    tls = ep.tls is not None or url.startswith("rediss://")
    if url.startswith(("redis://", "rediss://")):
        url = "redis://" + url.split("://", 1)[1]
        kw.pop("ssl", None)
        if tls and ep.tls is None:  # rediss:// without TLS settings: verify against the system CAs
            kw.update(Tls().kwargs())
    if ep.password is None:
        kw.pop("password", None)  # keep a password that is part of the URL
    if ep.username is None:
        kw.pop("username", None)
    return url, kw, tls


def async_client(ep: Endpoint, *, connection_class: type | None = None) -> AsyncRedis:
    """A pooled asyncio client. `connection_class` replaces redis-py's (IAM re-authenticating connections); it must
    match the topology (a SentinelManagedConnection subclass for sentinel) and the TLS setting."""
    pool_kw: dict[str, Any] = {"max_connections": ep.max_connections} if ep.max_connections else {}
    if ep.mode == "cluster":
        kw = connection_kwargs(ep)
        kw.pop("retry")  # the async cluster client has its own retry knobs and no per-connection Retry
        client = redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(*split_hostport(n)) for n in ep.nodes], **pool_kw, **kw)
        if connection_class is not None:
            # RedisCluster picks its connection class itself: hand it ours for every node, known or discovered.
            client.nodes_manager.connection_kwargs["connection_class"] = connection_class
            for node in client.nodes_manager.startup_nodes.values():
                node.connection_class = connection_class
        return client
    if connection_class is not None:
        pool_kw["connection_class"] = connection_class
    if ep.mode == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel([split_hostport(s) for s in ep.sentinels],
                                                   sentinel_kwargs=sentinel_kwargs(ep), **connection_kwargs(ep))
        master: redis.asyncio.Redis = sentinel.master_for(ep.master_name, db=ep.db, **pool_kw)
        return master
    url, kw, tls = _standalone_kwargs(ep)
    if tls and connection_class is None:
        pool_kw["connection_class"] = redis.asyncio.connection.SSLConnection
    return redis.asyncio.Redis.from_url(url, db=ep.db, **pool_kw, **kw)


def sync_client(ep: Endpoint) -> SyncRedis:
    """A blocking client (the operator's reachability checks, cluster bootstrap and spend reads)."""
    if ep.mode == "cluster":
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(*split_hostport(n)) for n in ep.nodes],
            cluster_error_retry_attempts=0, **connection_kwargs(ep))
    if ep.mode == "sentinel":
        sentinel = redis.sentinel.Sentinel([split_hostport(s) for s in ep.sentinels],
                                           sentinel_kwargs=sentinel_kwargs(ep), **connection_kwargs(ep))
        master_sync: redis.Redis = sentinel.master_for(ep.master_name, db=ep.db)
        return master_sync
    url, kw, tls = _standalone_kwargs(ep)
    if tls:
        kw["connection_class"] = redis.connection.SSLConnection
    return redis.Redis.from_url(url, db=ep.db, **kw)


def node_client(ep: Endpoint, host: str, port: int) -> redis.Redis:
    """A blocking connection to one node by address (cluster bootstrap talks to each member directly)."""
    kw = connection_kwargs(ep)
    return redis.Redis(host=host, port=port, db=ep.db, **kw)

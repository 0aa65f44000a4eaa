"""Redis clients the operator itself uses: reachability checks, cluster bootstrap, spend reads. Short timeouts and no
client-side retries: a slow Redis must never stall a reconcile pass (the timer simply tries again)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel


@dataclass(frozen=True)
class Target:
    """Where and how to reach one gateway's Redis, with secrets already resolved (never logged)."""

    mode: str  # standalone | sentinel | cluster
    url: str | None = None
    sentinels: tuple[str, ...] = ()
    master_name: str = "mymaster"
    nodes: tuple[str, ...] = ()
    password: str | None = None
    username: str | None = None  # external Redis: ACL user
    tls: bool = False
    ca_pem: str | None = None
    timeout_s: float = 1.0


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def _kw(t: Target) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "password": t.password,
        "username": t.username,
        "socket_timeout": t.timeout_s,
        "socket_connect_timeout": t.timeout_s,
        "decode_responses": True,
        "protocol": 2,
        "retry": Retry(NoBackoff(), 0),  # redis-py's default retries with backoff would stall a pass for seconds
    }
    if t.tls:
        kw.update(ssl=True, ssl_cert_reqs="required", ssl_ca_data=t.ca_pem)
    return kw


def node_client(t: Target, host: str, port: int) -> redis.Redis:
    """A plain connection to one node (cluster bootstrap talks to each member directly)."""
    return redis.Redis(host=host, port=port, **_kw(t))


def client(t: Target) -> Any:
    """A sync client for the topology: Redis, a sentinel-discovered master, or RedisCluster."""
    if t.mode == "cluster":
        return RedisCluster(startup_nodes=[ClusterNode(*_split(n)) for n in t.nodes], cluster_error_retry_attempts=0,
                            **_kw(t))
    if t.mode == "sentinel":
        skw: dict[str, Any] = {"socket_timeout": t.timeout_s, "socket_connect_timeout": t.timeout_s,
                               "retry": Retry(NoBackoff(), 0)}
        if t.password:
            skw["password"] = t.password
        return Sentinel([_split(s) for s in t.sentinels], sentinel_kwargs=skw, **_kw(t)).master_for(t.master_name)
    kw = _kw(t)
    if t.password is None:
        kw.pop("password")  # keep a password that is part of the URL
    return redis.Redis.from_url(t.url or "", **kw)

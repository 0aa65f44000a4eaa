"""Redis clients the operator itself uses: reachability checks, cluster bootstrap, spend reads. Short timeouts and no
client-side retries: a slow Redis must never stall a reconcile pass (the timer simply tries again). The clients come
from the connection factory the sidecar uses too (llmgw_sidecar.redis_connect), so TLS (also to the sentinels), ACL
users and timeouts behave the same on both sides."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from llmgw_sidecar.redis_connect import Endpoint, SyncRedis, Tls, sync_client
from llmgw_sidecar.redis_connect import node_client as _node_client


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

    def endpoint(self) -> Endpoint:
        url = self.url or ""
        tls = Tls(ca_data=self.ca_pem) if self.tls or self.ca_pem or url.startswith("rediss://") else None
        return Endpoint(mode=self.mode, url=url, sentinels=self.sentinels, master_name=self.master_name,
                        nodes=self.nodes, username=self.username, password=self.password,
                        # the operator's sentinels share the data nodes' password (requirepass on both)
                        sentinel_password=self.password, tls=tls, connect_timeout_s=self.timeout_s,
                        socket_timeout_s=self.timeout_s, decode_responses=True)


def node_client(t: Target, host: str, port: int) -> redis.Redis:
    """A plain connection to one node (cluster bootstrap talks to each member directly)."""
    return _node_client(t.endpoint(), host, port)


def client(t: Target) -> SyncRedis:
    """A sync client for the topology: Redis, a sentinel-discovered master, or RedisCluster."""
    return sync_client(t.endpoint())

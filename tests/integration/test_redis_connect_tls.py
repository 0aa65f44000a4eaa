"""The one Redis connection factory (llmgw_sidecar.redis_connect) against real TLS-only servers: a sentinel set whose
sentinels, master and replica all listen on TLS only (as the operator deploys them with spec.redis.tls), reached by
the sidecar's async client and the operator's sync client; a standalone TLS Redis reached with CA data from a URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from llmgw_operator import redis_access
from llmgw_sidecar.config import RedisConfig, parse_config
from llmgw_sidecar.redis_topology import close_client, make_client
from tests.redis_servers import (
    RedisProcess,
    SentinelTopology,
    TlsCerts,
    free_port,
    make_certs,
    server_args,
    start_tls_sentinel,
    wait_tls_ready,
)

PASSWORD = "sentinel-tls-pw"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsCerts:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_sentinel(tmp_path_factory: pytest.TempPathFactory, certs: TlsCerts) -> Iterator[SentinelTopology]:
    topo = start_tls_sentinel(tmp_path_factory.mktemp("tls-sentinel"), certs, PASSWORD)
    yield topo
    topo.stop()


def _sidecar_section(topo: SentinelTopology, certs: TlsCerts, **over: object) -> dict[str, object]:
    return {"mode": "sentinel", "sentinels": topo.sentinel_addrs, "master_name": topo.master_name,
            "password": PASSWORD, "sentinel_password": PASSWORD, "connect_timeout_ms": 2000,
            "tls": {"enabled": True, "ca_file": certs.ca}, **over}


def _cfg(section: dict[str, object]) -> RedisConfig:
    return parse_config({"models": [{"name": "m", "provider": "mock"}], "redis": section}, environ={}).redis


async def test_sidecar_reaches_master_through_tls_only_sentinels(tls_sentinel: SentinelTopology,
                                                                 certs: TlsCerts) -> None:
    c = make_client(_cfg(_sidecar_section(tls_sentinel, certs)))
    try:
        await c.set("connect-tls", b"sidecar", ex=30)
        assert await c.get("connect-tls") == b"sidecar"
        role = await c.execute_command("ROLE")
        assert role[0] in (b"master", "master")  # sentinel gave us the master, over TLS
    finally:
        await close_client(c)


async def test_plaintext_to_tls_only_sentinels_fails(tls_sentinel: SentinelTopology, certs: TlsCerts) -> None:
    """sentinel_tls: false is what both clients did before: against TLS-only sentinels no master is found."""
    c = make_client(_cfg(_sidecar_section(tls_sentinel, certs, sentinel_tls=False)))
    try:
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            await c.get("connect-tls")
    finally:
        await close_client(c)


def test_operator_reaches_master_through_tls_only_sentinels(tls_sentinel: SentinelTopology, certs: TlsCerts) -> None:
    target = redis_access.Target(mode="sentinel", sentinels=tuple(tls_sentinel.sentinel_addrs),
                                 master_name=tls_sentinel.master_name, password=PASSWORD, tls=True,
                                 ca_pem=Path(certs.ca).read_text(), timeout_s=2.0)
    c = redis_access.client(target)
    try:
        assert c.ping() is True
        c.set("connect-tls-op", "operator", ex=30)
        assert c.get("connect-tls-op") == "operator"  # decode_responses as before
    finally:
        c.close()


def test_operator_rediss_url_uses_the_ca_it_was_given(tmp_path: Path, certs: TlsCerts) -> None:
    """An external rediss:// URL with a caSecretRef: the CA is used (redis-py alone would try the system CAs)."""
    port = free_port()
    tls = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", certs.cert, "--tls-key-file", certs.key,
           "--tls-ca-cert-file", certs.ca, "--tls-auth-clients", "no"]
    proc = RedisProcess(port, tmp_path / "data", server_args(port, modules=False, extra=tls)).start(wait=False)
    try:
        wait_tls_ready(port, certs, None)
        ok = redis_access.Target(mode="standalone", url=f"rediss://127.0.0.1:{port}/0",
                                 ca_pem=Path(certs.ca).read_text(), timeout_s=2.0)
        c = redis_access.client(ok)
        assert c.ping() is True
        c.close()
        other = make_certs(tmp_path / "other")
        wrong = redis_access.Target(mode="standalone", url=f"rediss://127.0.0.1:{port}/0",
                                    ca_pem=Path(other.ca).read_text(), timeout_s=2.0)
        c = redis_access.client(wrong)
        with pytest.raises(redis.exceptions.ConnectionError):
            c.ping()
        c.close()
    finally:
        proc.kill()

"""Redis over TLS for real: a Redis Stack server with --tls-port and certificates made by trustme, reached with a CA
file, a client certificate (mutual TLS) and an ACL user, from the config and from LiteLLM's REDIS_* variables."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from llmgw_sidecar.config import parse_config
from llmgw_sidecar.redis_topology import close_client, make_client
from tests.integration.conftest import gateway_config
from tests.redis_servers import RedisProcess, free_port, server_args


class TlsRedis:
    def __init__(self, proc: RedisProcess, tls_port: int, certs: dict[str, str]) -> None:
        self.proc, self.tls_port, self.certs = proc, tls_port, certs


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    d = tmp_path_factory.mktemp("redis-tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("gateway-client")
    certs = {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key"),
             "client_cert": str(d / "client.pem"), "client_key": str(d / "client.key")}
    ca.cert_pem.write_to_path(certs["ca"])
    server.cert_chain_pems[0].write_to_path(certs["cert"])
    server.private_key_pem.write_to_path(certs["key"])
    client.cert_chain_pems[0].write_to_path(certs["client_cert"])
    client.private_key_pem.write_to_path(certs["client_key"])
    port, tls_port = free_port(), free_port()
    # The plain port stays for the readiness probe and the test's admin client; the gateway uses only the TLS port.
    extra = ["--tls-port", str(tls_port), "--tls-cert-file", certs["cert"], "--tls-key-file", certs["key"],
             "--tls-ca-cert-file", certs["ca"], "--tls-auth-clients", "yes"]
    proc = RedisProcess(port, d / "data", server_args(port, extra=extra)).start()
    admin = redis.Redis(port=port)
    admin.acl_setuser("tlsuser", enabled=True, passwords=["+tlspw"], keys=["~*"], channels=["&*"], commands=["+@all"])
    admin.close()
    yield TlsRedis(proc, tls_port, certs)
    proc.kill()


def tls_section(t: TlsRedis, **over: object) -> dict:
    return {"url": f"rediss://127.0.0.1:{t.tls_port}/0", "username": "tlsuser", "password": "tlspw",
            "tls": {"enabled": True, "ca_file": t.certs["ca"], "cert_file": t.certs["client_cert"],
                    "key_file": t.certs["client_key"]}, **over}


async def roundtrip(section: dict, environ: dict | None = None) -> None:
    cfg = parse_config({"models": [{"name": "m", "provider": "mock"}], **({"redis": section} if section else {})},
                       environ=environ or {})
    c = make_client(cfg.redis)
    try:
        await c.set("tls-key", b"v", ex=30)
        assert await c.get("tls-key") == b"v"
        assert (await c.acl_whoami()) in (b"tlsuser", "tlsuser")
    finally:
        await close_client(c)


async def test_tls_with_ca_client_cert_and_acl_user(tls_redis: TlsRedis) -> None:
    await roundtrip(tls_section(tls_redis))


async def test_tls_from_litellm_environment(tls_redis: TlsRedis) -> None:
    c = tls_redis.certs
    await roundtrip({}, environ={"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(tls_redis.tls_port), "REDIS_SSL": "True",
                                 "REDIS_USERNAME": "tlsuser", "REDIS_PASSWORD": "tlspw", "REDIS_SSL_CA_CERTS": c["ca"],
                                 "REDIS_SSL_CERTFILE": c["client_cert"], "REDIS_SSL_KEYFILE": c["client_key"]})


async def test_tls_wrong_ca_is_refused(tls_redis: TlsRedis, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    section = tls_section(tls_redis)
    section["tls"] = {**section["tls"], "ca_file": str(other)}
    with pytest.raises(redis.ConnectionError):
        await roundtrip(section)


async def test_tls_without_client_cert_is_refused(tls_redis: TlsRedis) -> None:
    section = tls_section(tls_redis)
    section["tls"] = {"enabled": True, "ca_file": tls_redis.certs["ca"]}
    with pytest.raises(redis.ConnectionError):
        await roundtrip(section)


def test_gateway_caches_over_tls(tls_redis: TlsRedis, make_gateway, fake_upstream) -> None:
    gw = make_gateway(gateway_config(tls_section(tls_redis), fake_upstream.url))
    c = gw.client()
    q = f"tls question {time.time()}"
    first = c.chat.completions.with_raw_response.create(model="ok", messages=[{"role": "user", "content": q}])
    assert first.headers["x-llmgw-cache"] == "miss"
    for _ in range(100):
        r = c.chat.completions.with_raw_response.create(model="ok", messages=[{"role": "user", "content": q}])
        if r.headers["x-llmgw-cache"] == "hit-exact":
            break
        time.sleep(0.02)
    assert r.headers["x-llmgw-cache"] == "hit-exact"
    assert gw.sample("llmgw_redis_errors_total") == 0

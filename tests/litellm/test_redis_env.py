"""LiteLLM's REDIS_* environment, read as litellm/_redis.py reads it, and the real Redis each combination reaches."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from llmgw_sidecar.config import ConfigError, parse_config
from llmgw_sidecar.redis_env import CLUSTER_JSON_MESSAGE, MISSING_MESSAGE, describe, redis_from_env
from llmgw_sidecar.redis_topology import make_client
from tests.redis_servers import ClusterTopology, SentinelTopology, free_port, standalone

MODELS = [{"name": "m", "provider": "mock"}]


def section(env: dict[str, str]) -> dict:
    found = redis_from_env(env)
    assert found is not None
    return found.section


def test_url_wins_over_host_and_nodes() -> None:
    env = {"REDIS_URL": "redis://u:p@h1:7000/2", "REDIS_HOST": "h2", "REDIS_PORT": "7001",
           "REDIS_CLUSTER_NODES": '[{"host": "h3", "port": 7002}]'}
    assert section(env) == {"url": "redis://u:p@h1:7000/2"}


def test_host_port_password_username_ssl() -> None:
    env = {"REDIS_HOST": "cache.example", "REDIS_PORT": "6380", "REDIS_PASSWORD": "pw", "REDIS_USERNAME": "app",
           "REDIS_SSL": "True", "REDIS_SSL_CA_CERTS": "/ca.pem", "REDIS_DB": "3"}
    found = redis_from_env(env)
    assert found is not None
    assert found.section == {"url": "rediss://cache.example:6380", "password": "pw", "username": "app", "db": 3,
                             "tls": {"enabled": True, "ca_file": "/ca.pem"}}
    assert set(found.used) == set(env)


def test_host_without_port_is_6379_and_ssl_false_is_plain() -> None:
    assert section({"REDIS_HOST": "h", "REDIS_SSL": "false"}) == {"url": "redis://h:6379"}


def test_cluster_nodes_json_objects() -> None:
    env = {"REDIS_CLUSTER_NODES": '[{"host": "10.0.0.1", "port": "7001"}, {"host": "10.0.0.2", "port": 7002}]',
           "REDIS_PASSWORD": "pw"}
    assert section(env) == {"mode": "cluster", "nodes": ["10.0.0.1:7001", "10.0.0.2:7002"], "password": "pw"}


def test_cluster_nodes_not_json_says_litellms_words() -> None:
    with pytest.raises(ValueError, match="REDIS_CLUSTER_NODES environment variable is not valid JSON"):
        redis_from_env({"REDIS_CLUSTER_NODES": "10.0.0.1:7001"})
    assert "properly formatted" in CLUSTER_JSON_MESSAGE


def test_sentinel_pairs_service_name_and_password() -> None:
    env = {"REDIS_SENTINEL_NODES": '[["s1", 26379], ["s2", "26380"]]', "REDIS_SERVICE_NAME": "mymaster",
           "REDIS_SENTINEL_PASSWORD": "spw"}
    # As LiteLLM: without REDIS_PASSWORD the sentinel password authenticates to the master as well.
    assert section(env) == {"mode": "sentinel", "sentinels": ["s1:26379", "s2:26380"], "master_name": "mymaster",
                            "sentinel_password": "spw", "password": "spw"}


def test_sentinel_without_service_name() -> None:
    with pytest.raises(ValueError, match="Both 'sentinel_nodes' and 'service_name' are required"):
        redis_from_env({"REDIS_SENTINEL_NODES": '[["s1", 26379]]'})


def test_kubernetes_service_link_port_is_explained() -> None:
    with pytest.raises(ValueError, match="enableServiceLinks"):
        redis_from_env({"REDIS_HOST": "redis", "REDIS_PORT": "tcp://10.0.0.9:6379"})


def test_gcp_service_account_selects_iam() -> None:
    env = {"REDIS_HOST": "10.0.0.3", "REDIS_PORT": "6379", "REDIS_SSL": "true", "REDIS_GCP_SSL_CA_CERTS": "/ca.pem",
           "REDIS_GCP_SERVICE_ACCOUNT": "projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com"}
    s = section(env)
    assert s["iam"] == {"provider": "gcp", "gcp_service_account": env["REDIS_GCP_SERVICE_ACCOUNT"]}
    assert s["tls"] == {"enabled": True, "ca_file": "/ca.pem"}


def test_not_carried_variables_warn_one_each() -> None:
    found = redis_from_env({"REDIS_HOST": "h", "REDIS_SOCKET_TIMEOUT": "5", "REDIS_CLIENT_NAME": "x"})
    assert found is not None and len(found.warnings) == 2
    assert all("is set but not used" in w for w in found.warnings)


def test_config_without_redis_section_uses_env(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cfg = parse_config({"models": MODELS}, environ={"REDIS_HOST": "h", "REDIS_PORT": "1234",
                                                        "REDIS_SOCKET_TIMEOUT": "2"})
    assert cfg.redis.url == "redis://h:1234"
    assert describe(cfg.redis) == ("redis: standalone h:1234, from the environment (REDIS_HOST, REDIS_PORT; "
                                   "the config has no redis section)")
    assert "REDIS_SOCKET_TIMEOUT is set but not used" in caplog.text


def test_redis_section_wins_and_says_so() -> None:
    cfg = parse_config({"models": MODELS, "redis": {"url": "redis://cfg:1/0"}}, environ={"REDIS_URL": "redis://e:2"})
    assert cfg.redis.url == "redis://cfg:1/0"
    assert "REDIS_URL in the environment ignored: the redis section wins" in describe(cfg.redis)


def test_default_when_nothing_is_set() -> None:
    cfg = parse_config({"models": MODELS}, environ={})
    assert cfg.redis.url == "redis://127.0.0.1:6379/0"
    assert "from the default" in describe(cfg.redis)


def test_from_env_with_nothing_set_is_litellms_message() -> None:
    with pytest.raises(ConfigError, match=MISSING_MESSAGE.replace("(", r"\(").replace(")", r"\)")):
        parse_config({"models": MODELS, "redis": {"from_env": True}}, environ={})


def test_from_env_keeps_other_keys() -> None:
    cfg = parse_config({"models": MODELS, "redis": {"from_env": True, "key_prefix": "ns1"}},
                       environ={"REDIS_URL": "redis://e:2/1"})
    assert (cfg.redis.url, cfg.redis.key_prefix) == ("redis://e:2/1", "ns1")


# --- the three topologies, for real -------------------------------------------------------------------------------
async def roundtrip(env: dict[str, str]) -> None:
    cfg = parse_config({"models": MODELS, "redis": {"from_env": True, "op_timeout_ms": 2000}}, environ=env)
    client = make_client(cfg.redis)
    try:
        key = f"litellm-env-{free_port()}"
        await client.set(key, b"v", ex=30)
        assert await client.get(key) == b"v"
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def redis_with_acl(tmp_path_factory: pytest.TempPathFactory):
    import redis

    r = standalone(free_port(), tmp_path_factory.mktemp("redis-acl")).start()
    admin = redis.Redis(port=r.port)
    admin.acl_setuser("app", enabled=True, passwords=["+apppw"], keys=["~*"], channels=["&*"], commands=["+@all"])
    admin.config_set("requirepass", "s3cret")  # the default user's password (LiteLLM's REDIS_PASSWORD alone)
    admin.close()
    yield r
    r.kill()


async def test_env_host_port_password(redis_with_acl) -> None:
    await roundtrip({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_with_acl.port), "REDIS_PASSWORD": "s3cret"})


async def test_env_username_password(redis_with_acl) -> None:
    await roundtrip({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_with_acl.port), "REDIS_USERNAME": "app",
                     "REDIS_PASSWORD": "apppw"})


async def test_env_url(redis_with_acl) -> None:
    await roundtrip({"REDIS_URL": f"redis://app:apppw@127.0.0.1:{redis_with_acl.port}/0"})


async def test_env_wrong_password_fails(redis_with_acl) -> None:
    import redis.exceptions

    with pytest.raises(redis.exceptions.AuthenticationError):
        await roundtrip({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_with_acl.port), "REDIS_PASSWORD": "no"})


async def test_env_sentinel(redis_sentinel: SentinelTopology) -> None:
    nodes = [["127.0.0.1", s.port] for s in redis_sentinel.sentinels]
    await roundtrip({"REDIS_SENTINEL_NODES": json.dumps(nodes), "REDIS_SERVICE_NAME": redis_sentinel.master_name})


async def test_env_cluster(redis_cluster: ClusterTopology) -> None:
    nodes = [{"host": "127.0.0.1", "port": n.port} for n in redis_cluster.nodes[:2]]
    await roundtrip({"REDIS_CLUSTER_NODES": json.dumps(nodes)})


def test_every_redis_variable_is_in_the_migration_doc() -> None:
    """The doc's table covers every variable the code carries and every one it names as not carried."""
    from llmgw_sidecar.redis_env import CARRIED, NOT_CARRIED

    doc = (Path(__file__).resolve().parents[2] / "docs" / "migrating-from-litellm.md").read_text()
    for var in (*CARRIED, *NOT_CARRIED):
        base = var.removesuffix("_OPTIONS").removesuffix("_ERRORS").removesuffix("_STAPLED")
        # `VAR`, `VAR=value` or `VAR(_SUFFIX)` in a table row
        assert re.search(rf"`({re.escape(var)}|{re.escape(base)}\(_[A-Z]+\))(?![A-Z_])", doc), var

"""LiteLLM proxy configs mapped onto the native schema: providers, per-model settings, cache_params, one warning per
field not carried, and `llmgw-sidecar convert-litellm`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmgw_sidecar.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
ENV = {"OPENAI_API_KEY": "sk-o", "AZURE_API_KEY": "az", "REDIS_HOST": "10.1.2.3", "REDIS_PORT": "6380"}


def lite(cache_params: dict | None = None, **extra) -> dict:
    doc = {"model_list": [{"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o",
                                                                       "api_key": "os.environ/OPENAI_API_KEY"}}],
           "litellm_settings": {"cache": True, "cache_params": cache_params or {"type": "redis"}}}
    doc.update(extra)
    return doc


def test_providers_and_per_model_settings() -> None:
    doc = lite(model_list=[
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://vllm:8000/v1",
                                                    "api_key": "os.environ/OPENAI_API_KEY", "rpm": 60, "tpm": 9000,
                                                    "timeout": 30, "max_retries": 1}},
        {"model_name": "chat", "litellm_params": {"model": "azure/my-deployment", "api_base": "https://x.openai.azure.com",
                                                  "api_key": "os.environ/AZURE_API_KEY", "api_version": "2024-06-01"}},
        {"model_name": "gpt-4o-mini", "litellm_params": {"model": "gpt-4o-mini"}},
    ])
    cfg = parse_config(doc, environ=ENV)
    m = cfg.model_by_name()
    assert (m["gpt-4o"].base_url, m["gpt-4o"].api_key, m["gpt-4o"].upstream_model) == ("http://vllm:8000/v1", "sk-o",
                                                                                      "gpt-4o")
    assert (m["gpt-4o"].limits.rpm, m["gpt-4o"].limits.tpm, m["gpt-4o"].timeouts.total_s,
            m["gpt-4o"].retry.max_retries) == (60, 9000, 30.0, 1)
    assert (m["chat"].provider.value, m["chat"].upstream_model, m["chat"].api_version, m["chat"].api_key) == (
        "azure", "my-deployment", "2024-06-01", "az")
    assert (m["gpt-4o-mini"].provider.value, m["gpt-4o-mini"].base_url) == ("openai", "https://api.openai.com/v1")


def test_openai_api_base_env_like_litellm() -> None:
    cfg = parse_config(lite(), environ={**ENV, "OPENAI_API_BASE": "http://proxy:9/v1"})
    assert cfg.models[0].base_url == "http://proxy:9/v1"


def test_one_warning_per_field_not_carried(caplog: pytest.LogCaptureFixture) -> None:
    doc = lite({"type": "redis", "ttl": 60, "default_in_memory_ttl": 5, "unknown_knob": 1},
               router_settings={"routing_strategy": "usage-based-routing", "redis_host": "r"},
               general_settings={"master_key": "sk-1234", "alerting": ["slack"]})
    doc["model_list"][0]["litellm_params"]["stream_timeout"] = 5
    doc["model_list"].append({"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3"}})
    doc["model_list"].append({"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o"}})
    doc["litellm_settings"]["drop_params"] = True
    with caplog.at_level(logging.WARNING, logger="llmgw.litellm"):
        cfg = parse_config(doc, environ=ENV)
    assert [m.name for m in cfg.models] == ["gpt-4o"]
    warned = [r.getMessage() for r in caplog.records]
    for field in ("litellm_params.stream_timeout", "provider 'anthropic/'", "a second deployment of 'gpt-4o'",
                  "litellm_settings.drop_params", "cache_params.default_in_memory_ttl", "cache_params.unknown_knob",
                  "router_settings.routing_strategy", "router_settings.redis_host", "general_settings.alerting"):
        assert sum(field in w for w in warned) == 1, (field, warned)
    assert "sk-1234" not in caplog.text and "master_key" not in caplog.text  # carried: the admin token
    assert cfg.admin.resolved_token() == "sk-1234"


@pytest.mark.parametrize(("general", "env", "token"), [
    ({"master_key": "sk-literal"}, {}, "sk-literal"),
    ({"master_key": "os.environ/MK"}, {"MK": "sk-from-env"}, "sk-from-env"),
    ({"master_key": "os.environ/MK"}, {}, None),  # LiteLLM: an unset variable is no key; here: admin API off
    ({"master_key": "os.environ/MK"}, {"MK": ""}, None),
    ({}, {"LITELLM_MASTER_KEY": "sk-lmk"}, "sk-lmk"),  # LiteLLM's fallback when the config names none
    ({"master_key": "sk-wins"}, {"LITELLM_MASTER_KEY": "sk-lmk"}, "sk-wins"),
    ({"master_key": None}, {"LITELLM_MASTER_KEY": "sk-lmk"}, None),
    ({}, {}, None),
])
def test_master_key_is_the_admin_token_as_litellm_reads_it(general: dict, env: dict, token: str | None,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llmgw.litellm"):
        cfg = parse_config(lite(general_settings=general), environ={**ENV, **env})
    assert cfg.admin.resolved_token() == token
    assert "sk-" not in caplog.text.replace("sk-o", "")  # no key value in any warning
    if general.get("master_key") == "os.environ/MK" and token is None:
        assert "names MK, which is not set" in caplog.text


def test_master_key_guards_the_admin_routes(redis_standalone: str, tmp_path: Path) -> None:
    """The converted config's admin token is what the admin routes ask for (a real sidecar process)."""
    import httpx

    from llmgw_sidecar.devredis import free_port
    from tests.servers import wait_ready

    port = free_port()
    doc = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_key": "x",
                                                                "api_base": "http://127.0.0.1:9/v1"}}],
           "general_settings": {"master_key": "os.environ/PROXY_MASTER_KEY"}}
    path = tmp_path / "litellm.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "sidecar"), str(REPO)]),
           "PROXY_MASTER_KEY": "sk-admin-0123", "REDIS_URL": redis_standalone}
    log = tmp_path / "sidecar.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "serve", "--config", str(path), "--port",
                                 str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", log)
        url = f"http://127.0.0.1:{port}/admin/cache/entries"
        assert httpx.get(url, timeout=5).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        ok = httpx.get(url, headers={"Authorization": "Bearer sk-admin-0123"}, timeout=5)
        assert ok.status_code == 200 and ok.json()["object"] == "list"
    finally:
        proc.terminate()
        proc.wait(10)
    assert "sk-admin-0123" not in log.read_text()


def test_cache_params_connection_and_namespace() -> None:
    doc = lite({"type": "redis", "host": "os.environ/REDIS_HOST", "port": "os.environ/REDIS_PORT",
                "password": "os.environ/RPW", "namespace": "litellm.caching", "ttl": 600, "ssl": True})
    cfg = parse_config(doc, environ={**ENV, "RPW": "secret"})
    assert (cfg.redis.url, cfg.redis.password, cfg.redis.key_prefix, cfg.redis.tls.enabled) == (
        "rediss://10.1.2.3:6380", "secret", "litellm.caching", True)
    assert cfg.cache.exact.ttl_s == 600


def test_cluster_and_sentinel_in_cache_params() -> None:
    cfg = parse_config(lite({"type": "redis", "redis_startup_nodes": [{"host": "127.0.0.1", "port": "7001"}]}),
                       environ={"OPENAI_API_KEY": "x"})
    assert (cfg.redis.mode.value, cfg.redis.nodes) == ("cluster", ["127.0.0.1:7001"])
    cfg = parse_config(lite({"type": "redis", "service_name": "mymaster", "sentinel_nodes": [["localhost", 26379]],
                             "sentinel_password": "os.environ/SPW"}), environ={"OPENAI_API_KEY": "x", "SPW": "sp"})
    assert (cfg.redis.mode.value, cfg.redis.sentinels, cfg.redis.sentinel_password) == (
        "sentinel", ["localhost:26379"], "sp")


def test_semantic_mapping() -> None:
    doc = lite({"type": "redis-semantic", "similarity_threshold": 0.9,
                "redis_semantic_cache_embedding_model": "emb"})
    doc["model_list"].append({"model_name": "emb", "litellm_params": {"model": "openai/text-embedding-3-large",
                                                                      "api_base": "http://emb:1/v1", "api_key": "k"}})
    sem = parse_config(doc, environ=ENV).cache.semantic
    assert sem.enabled and sem.distance_threshold == pytest.approx(0.1)
    assert (sem.embedding.provider.value, sem.embedding.base_url, sem.embedding.model, sem.embedding.dims,
            sem.embedding.api_key) == ("openai", "http://emb:1/v1", "text-embedding-3-large", 3072, "k")


def test_semantic_needs_similarity_threshold_and_refuses_a_distance_that_cannot_be_right() -> None:
    with pytest.raises(ConfigError, match="similarity_threshold must be provided"):
        parse_config(lite({"type": "redis-semantic"}), environ=ENV)
    with pytest.raises(ConfigError, match="did you mean similarity_threshold"):
        parse_config(lite({"type": "redis-semantic", "similarity_threshold": 0.3}), environ=ENV)


def test_supported_call_types_and_mode() -> None:
    cfg = parse_config(lite({"type": "redis", "supported_call_types": ["acompletion", "aembedding", "atranscription"],
                             "mode": "default_off"}), environ=ENV)
    assert [e.value for e in cfg.cache.endpoints] == ["chat", "embeddings"]
    assert cfg.cache.mode == "default_off"
    assert parse_config(lite({"type": "redis", "supported_call_types": []}), environ=ENV).cache.endpoints == []


def test_cache_off_caches_nothing() -> None:
    doc = lite()
    doc["litellm_settings"] = {"cache": False}
    cfg = parse_config(doc, environ={"OPENAI_API_KEY": "x"})
    assert not cfg.cache.exact.enabled and not cfg.cache.semantic.enabled


def test_mixed_formats_are_refused() -> None:
    with pytest.raises(ConfigError, match="mixes LiteLLM keys"):
        parse_config({**lite(), "models": [{"name": "m", "provider": "mock"}]}, environ=ENV)


def test_convert_litellm_cli_prints_a_native_config_without_secrets(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}, **ENV, "REDIS_PASSWORD": "pw-secret",
           "PYTHONPATH": os.pathsep.join([str(REPO / "sidecar"), str(REPO)])}
    for seed in ("exact.yaml", "semantic.yaml"):
        p = subprocess.run([sys.executable, "-m", "llmgw_sidecar", "convert-litellm",
                            str(REPO / "examples" / "litellm" / seed)], env=env, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("# Converted from the LiteLLM proxy config")
        assert "pw-secret" not in p.stdout and "sk-o" not in p.stdout
        out = tmp_path / seed
        out.write_text(p.stdout)
        native = yaml.safe_load(p.stdout)
        assert "model_list" not in native and native["models"][0]["name"] == "gpt-4o-mini"
        cfg = load_config(out, environ=env)  # the converted file loads on its own
        assert cfg.redis.password == "pw-secret"
    assert "distance_threshold 0.2" in p.stdout

"""The config schema: defaults, env references, and errors that name the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmgw_sidecar.config import ConfigError, load_config, parse_config

MIN = {"models": [{"name": "m", "provider": "mock"}]}


def test_defaults() -> None:
    cfg = parse_config(MIN)
    assert (cfg.listen.host, cfg.listen.port) == ("127.0.0.1", 4000)
    assert cfg.cache.scope.value == "namespace" and cfg.cache.exact.enabled and not cfg.cache.semantic.enabled
    assert cfg.redis.mode.value == "standalone" and cfg.models[0].upstream_model == "m"


def test_env_references_resolved() -> None:
    cfg = parse_config({"models": [{"name": "m", "base_url": "https://x/v1", "api_key": "os.environ/KEY"}]},
                       environ={"KEY": "sk-1"})
    assert cfg.models[0].resolved_api_key() == "sk-1"
    doc = {"models": [{"name": "m", "provider": "os.environ/P:-mock", "api_key": "os.environ/K:-"}]}
    assert parse_config(doc, environ={}).models[0].provider.value == "mock"
    assert parse_config(doc, environ={"P": ""}).models[0].api_key == ""
    with pytest.raises(ConfigError, match="base_url"):
        parse_config(doc, environ={"P": "openai"})


@pytest.mark.parametrize(("doc", "needle"), [
    ({"models": [{"name": "m", "base_url": "https://x", "api_key": "os.environ/NOPE"}]},
     "models[0].api_key: environment variable NOPE is not set"),
    ({"models": []}, "models: List should have at least 1 item"),
    ({"models": [{"name": "m"}]}, "models[0]: provider openai needs base_url"),
    ({"models": [{"name": "m", "provider": "azure", "base_url": "https://x"}]}, "needs api_version"),
    ({"models": [{"name": "m", "provider": "mock"}, {"name": "m", "provider": "mock"}]}, "appears twice"),
    ({**MIN, "listen": {"port": 70000}}, "listen.port: Input should be less than or equal to 65535"),
    ({**MIN, "redis": {"mode": "cluster"}}, "redis: mode cluster needs 'nodes'"),
    ({**MIN, "redis": {"mode": "sentinel", "sentinels": ["nohost"]}}, "'nohost' is not host:port"),
    ({**MIN, "cache": {"scope": "planet"}}, "cache.scope: Input should be"),
    ({**MIN, "cache": {"exact": {"ttl": 5}}}, "cache.exact.ttl: Extra inputs are not permitted"),
    ({**MIN, "metrics": {"port": 4000}}, "metrics.port must differ from listen.port"),
    ([1, 2], "must be a mapping"),
])
def test_errors_name_the_field(doc: object, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc, environ={})
    assert needle in str(e.value)


def test_cli_exits_2_with_message_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: m\n    provider: mock\n    timeouts: {connect_s: -1}\n")
    for args in (["check-config", str(bad)], ["serve", "--config", str(bad)],
                 ["check-config", str(tmp_path / "missing.yaml")]):
        p = subprocess.run([sys.executable, "-m", "llmgw_sidecar", *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr
    assert "models[0].timeouts.connect_s: Input should be greater than 0" in p.stderr or "cannot read" in p.stderr


def test_invalid_yaml(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)


def test_examples_are_valid() -> None:
    for f in sorted(Path(__file__).resolve().parents[2].glob("examples/*.yaml")):
        load_config(f, environ={"OPENAI_API_KEY": "sk-test"})

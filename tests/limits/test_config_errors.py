"""Malformed limit, budget or price config: exit code 2 and the field named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmgw_sidecar.config import ConfigError, parse_config
from llmgw_sidecar.pricing import builtin_price
from llmgw_sidecar.ratelimit import estimate_completion_tokens, estimate_prompt_tokens, format_reset
from tests.spend.procs import REPO

BAD = [
    ({"models": [{"name": "m", "provider": "mock", "limits": {"rpm": 0}}]}, "models[0].limits.rpm"),
    ({"models": [{"name": "m", "provider": "mock", "limits": {"tpm": "lots"}}]}, "models[0].limits.tpm"),
    ({"models": [{"name": "m", "provider": "mock", "pricing": {"input_per_1m": -1, "output_per_1m": 1}}]},
     "models[0].pricing.input_per_1m"),
    ({"models": [{"name": "m", "provider": "mock", "pricing": {"input_per_1m": 1}}]}, "models[0].pricing.output_per_1m"),
    ({"models": [{"name": "m", "provider": "mock"}], "limits": {"scopes": [{"scope": "team", "rpm": 5}]}},
     "limits.scopes[0].scope"),
    ({"models": [{"name": "m", "provider": "mock"}], "limits": {"scopes": [{"scope": "pod", "max_parallel": -2}]}},
     "limits.scopes[0].max_parallel"),
    ({"models": [{"name": "m", "provider": "mock"}], "limits": {"scopes": [{"scope": "pod"}]}},
     "limits.scopes[0]: set at least one of rpm, tpm, max_parallel"),
    ({"models": [{"name": "m", "provider": "mock"}], "budgets": [{"scope": "namespace", "max_usd": 0}]},
     "budgets[0].max_usd"),
    ({"models": [{"name": "m", "provider": "mock"}], "budgets": [{"scope": "namespace", "period": "week",
                                                                 "max_usd": 3}]}, "budgets[0].period"),
]


@pytest.mark.parametrize(("doc", "field"), BAD)
def test_bad_config_names_the_field(doc: dict, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    assert field in str(e.value)


def test_cli_exits_2_naming_the_field(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(BAD[2][0]))
    res = subprocess.run([sys.executable, "-m", "llmgw_sidecar", "check-config", str(p)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "models[0].pricing.input_per_1m" in res.stderr + res.stdout


def test_price_table_and_estimates() -> None:
    p = builtin_price("gpt-4o-2024-08-06")
    assert p is not None and (p.input, p.cached_input, p.output) == (2500, 1250, 10000)
    assert builtin_price("gpt-4o-mini") != builtin_price("gpt-4o")  # longest prefix wins
    assert builtin_price("openai/gpt-4.1-nano").input == 100  # type: ignore[union-attr]
    assert builtin_price("my-own-finetune") is None
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 40}]}], "max_tokens": 7}
    assert estimate_prompt_tokens(body) == 10 + 4 + 1
    assert estimate_completion_tokens(body, "chat", 1024) == 7
    assert estimate_completion_tokens({}, "chat", 1024) == 1024
    assert estimate_completion_tokens({"max_tokens": 9}, "embeddings", 1024) == 0
    assert [format_reset(x) for x in (120, 1500, 59_400, 360_000)] == ["120ms", "1.5s", "59.4s", "6m0s"]

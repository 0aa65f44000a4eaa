"""Generated reference sections must match the code: regenerate with `make docs`."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw_sidecar import config_docs, metrics_docs

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(("doc", "gen"), [("configuration.md", config_docs), ("metrics.md", metrics_docs)])
def test_generated_section_in_sync(doc: str, gen) -> None:
    text = (DOCS / doc).read_text()
    start, end = text.index(gen.BEGIN), text.index(gen.END) + len(gen.END)
    assert text[start:end] == gen.generate(), f"docs/{doc} is out of date: run `make docs`"


def _blocks(text: str, lang: str) -> list[str]:
    import re

    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_configuration_examples_are_valid() -> None:
    import yaml

    from llmgw_sidecar.config import parse_config

    env = {"LLMGW_REDIS_PASSWORD": "x", "OPENAI_API_KEY": "sk-x", "AZURE_OPENAI_API_KEY": "az-x"}
    blocks = [b for b in _blocks((DOCS / "configuration.md").read_text(), "yaml") if "models:" in b]
    assert blocks
    for b in blocks:
        parse_config(yaml.safe_load(b), environ=env)

"""Gateway-mode fixtures: the integration tier's fake upstream and in-process gateways, plus virtual-key folders laid
out the way the operator projects labelled Secrets (one sub-folder per Secret)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import fake_upstream, gateway_config, make_gateway  # noqa: F401 (fixtures)
from tests.webhook.conftest import h, harness  # noqa: F401 (fixtures)


def write_key(folder: Path, name: str, key: str, **extra: str) -> Path:
    d = folder / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "key").write_text(key)
    for k, v in extra.items():
        (d / k).write_text(v)
    return d

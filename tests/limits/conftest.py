"""Fixtures of the limit tests: a Redis of one test's own that may be paused with DEBUG SLEEP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmgw_sidecar.devredis import RedisProcess
from tests.redis_servers import free_port, standalone


@pytest.fixture
def redis_debug(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis for one test that accepts DEBUG SLEEP (Redis >= 7 refuses DEBUG unless enabled)."""
    r = standalone(free_port(), tmp_path / "redis-debug", extra=["--enable-debug-command", "yes"]).start()
    yield r
    r.kill()

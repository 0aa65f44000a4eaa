"""Session fixtures that start real Redis Stack processes on loopback (see tests/redis_servers.py). The Kubernetes
control plane fixture is in tests/apiserver/conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_servers import ClusterTopology, SentinelTopology, free_port, standalone, start_cluster, start_sentinel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a session-wide Redis Stack (search + JSON modules). Tests must use their own key prefixes."""
    r = standalone(free_port(), tmp_path_factory.mktemp("redis-standalone")).start()
    yield r.url
    r.kill()


@pytest.fixture
def redis_own(tmp_path: Path) -> Iterator:
    """A Redis that belongs to one test alone: kill it, restart it (AOF on, so restarts keep data)."""
    r = standalone(free_port(), tmp_path / "redis", persist=True).start()
    yield r
    r.kill()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    topo = start_sentinel(tmp_path_factory.mktemp("redis-sentinel"))
    yield topo
    topo.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    topo = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield topo
    topo.stop()


@pytest.fixture
def redis_sync(redis_standalone: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_standalone)
    yield c
    c.close()


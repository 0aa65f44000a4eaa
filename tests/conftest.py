"""Session fixtures that start real processes on loopback: Redis Stack (tests/redis_servers.py) and a Kubernetes
control plane (tests/apiserver/cluster.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.apiserver.cluster import ApiServer, bin_dir, missing_binaries
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


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """etcd + kube-apiserver + kube-controller-manager (v1.20.2) on free loopback ports, once per session.

    Binaries from tests/apiserver/k8s/build.sh (`.ci/run` builds them). Without them the tests that use this fixture
    skip with the reason, except in CI (CI=true), where a missing control plane is a failure."""
    missing = missing_binaries()
    if missing:
        msg = (f"no Kubernetes control plane binaries in {bin_dir()} (missing {', '.join(missing)}): "
               "run `bash tests/apiserver/k8s/build.sh .cache/k8s` or set LLMGW_K8S_BIN")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    server = ApiServer.start(bin_dir(), tmp_path_factory.mktemp("k8s"))
    yield server
    server.stop()

"""Shared gateway identity against a real kube-apiserver (v1.20): the gateway process runs as its own ServiceAccount,
bound to the chart's gateway ClusterRole exactly as the operator binds it, and checks callers' real ServiceAccount
tokens with TokenReview. Callers use the official openai client with their token as the API key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from kubernetes import client

from llmgw_operator.builders import Gateway
from llmgw_operator.builders import gateway as gwb
from llmgw_sidecar.devredis import free_port
from tests.apiserver.cluster import ApiServer, wait_for
from tests.chart.helpers import by_kind, render
from tests.integration.conftest import fake_upstream  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
HOME = "gw-home"  # the gateway's namespace
AUDIENCE = "llmgateway.dev"
ALLOWED = {"llmgateway.dev/clients": "yes"}
MODELS = [{"name": "demo", "provider": "mock"}]


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, token: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=token, max_retries=0, timeout=20)

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.url + "/metrics", timeout=5).text
        return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def install_gateway_rbac(server: ApiServer) -> str:
    """The chart's gateway ClusterRole, and the gateway's ServiceAccount + ClusterRoleBinding from the operator's own
    builders. Returns the gateway ServiceAccount's token (what the kubelet would mount)."""
    role = next(r for r in by_kind(render(), "ClusterRole") if r["metadata"]["name"].endswith("-gateway"))
    server.apply(role)
    server.ensure_namespace(HOME)
    gw = Gateway.from_spec("gw", HOME, {"redis": {}, "models": MODELS, "gateway": {}})
    server.apply(gwb.service_account(gw))
    server.apply(gwb.cluster_role_binding(gw, role["metadata"]["name"]))
    return server.service_account_token(HOME, gwb.name(gw))


def start_gateway(server: ApiServer, tmp: Path, redis_url: str, own_token: str, **token_review: Any) -> Proc:
    (tmp / "token").write_text(own_token)
    port = free_port()
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port},
        "gateway": {"name": "gw", "namespace": HOME},
        "redis": {"url": redis_url, "key_prefix": f"t{uuid.uuid4().hex[:10]}"},
        "models": [{"name": "demo", "provider": "mock"}],
        "auth": {"mode": "gateway", "token_review": {
            "api_server": server.url, "ca_file": str(server.ca_file), "token_file": str(tmp / "token"),
            "audience": AUDIENCE, "allowed_namespaces": {"match_labels": ALLOWED}, **token_review}},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp / "gateway.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "sidecar"), str(REPO)])}
    proc = subprocess.Popen([sys.executable, "-m", "llmgw_sidecar", "serve", "--config", str(path)],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the gateway process", up, 30)
    return Proc(url, proc, log)


@pytest.fixture(scope="module")
def cluster(apiserver: ApiServer) -> ApiServer:
    for ns, labels in (("team-a", ALLOWED), ("team-b", ALLOWED), ("outsider", {})):
        apiserver.ensure_namespace(ns)
        # Our own field manager: ensure_namespace (called again by service_account_token) applies without these
        # labels, and server-side apply would otherwise take them away again.
        apiserver.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
                        manager="llmgw-gateway-tests")
    return apiserver


@pytest.fixture(scope="module")
def gateway(cluster: ApiServer, redis_standalone: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    own = install_gateway_rbac(cluster)
    p = start_gateway(cluster, tmp_path_factory.mktemp("gw"), redis_standalone, own, max_cache_s=2.0,
                      negative_cache_s=0.0)
    yield p
    p.proc.terminate()
    p.proc.wait(10)


def token(server: ApiServer, ns: str, sa: str, audiences: tuple[str, ...] = (AUDIENCE,)) -> str:
    return server.service_account_token(ns, sa, audiences=audiences)


def chat(gw: Proc, tok: str, content: str) -> str:
    raw = gw.client(tok).chat.completions.with_raw_response.create(
        model="demo", messages=[{"role": "user", "content": content}])
    return raw.headers["x-llmgw-cache"]


def test_valid_tokens_identify_the_namespace_and_tenants_never_share_entries(gateway: Proc,
                                                                             cluster: ApiServer) -> None:
    a, b = token(cluster, "team-a", "app"), token(cluster, "team-b", "app")
    a2 = token(cluster, "team-a", "worker")  # another ServiceAccount of the same namespace
    q = f"what is 6 times 7? {time.time_ns()}"
    assert chat(gateway, a, q) == "miss"
    assert chat(gateway, a, q) == "hit-exact"
    assert chat(gateway, b, q) == "miss"  # same question, other tenant: never team-a's answer
    assert chat(gateway, a2, q) == "hit-exact"  # cache.scope namespace: team-a's accounts share
    # The repeated token was answered from the review cache, not by another TokenReview.
    assert gateway.metric("llmgw_auth_decisions_total", method="token_review", result="cached") >= 1
    assert gateway.metric("llmgw_auth_decisions_total", method="token_review", result="ok") >= 3


def test_wrong_audience_and_garbage_get_401(gateway: Proc, cluster: ApiServer) -> None:
    api_server_token = token(cluster, "team-a", "app", audiences=())  # issued for the API server, not for us
    other = token(cluster, "team-a", "app", audiences=("vault",))
    for bad in (api_server_token, other, api_server_token[:-4] + "AAAA"):
        with pytest.raises(openai.AuthenticationError) as e:
            chat(gateway, bad, "hello")
        assert e.value.status_code == 401 and e.value.body["type"] == "authentication_error", e.value.body
        assert bad not in str(e.value.body)


def test_other_namespace_is_forbidden(gateway: Proc, cluster: ApiServer) -> None:
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(gateway, token(cluster, "outsider", "app"), "hello")
    assert e.value.status_code == 403 and e.value.body["code"] == "namespace_not_allowed"
    assert "outsider" in e.value.body["message"]
    # The gateway's own namespace is not special once a selector is set.
    with pytest.raises(openai.PermissionDeniedError):
        chat(gateway, token(cluster, HOME, "app"), "hello")


def test_deleted_service_account_stops_working_within_the_cache_bound(gateway: Proc, cluster: ApiServer) -> None:
    core = client.CoreV1Api(cluster.client())
    cached = token(cluster, "team-a", "temp")
    assert chat(gateway, cached, f"before {time.time_ns()}") == "miss"
    fresh = token(cluster, "team-a", "temp")
    core.delete_namespaced_service_account("temp", "team-a")
    wait_for("the ServiceAccount to be gone",
             lambda: "temp" not in [s.metadata.name for s in core.list_namespaced_service_account("team-a").items])
    # Both are refused once the API server knows (its ServiceAccount informer saw the deletion) and, for the token
    # reviewed before, once max_cache_s (2 s here) has passed, plus the API server's own 10 s cache of authenticated
    # tokens. The margin is for a busy machine.
    bound = time.monotonic() + 2 + 10 + 8
    assert refused_within(gateway, fresh, bound)
    assert refused_within(gateway, cached, bound)


def refused_within(gw: Proc, tok: str, deadline: float) -> bool:
    while True:
        try:
            chat(gw, tok, f"after {time.time_ns()}")
        except openai.AuthenticationError as e:
            return e.status_code == 401
        assert time.monotonic() < deadline, "a deleted ServiceAccount's token kept working"
        time.sleep(0.25)


def test_gateway_without_its_binding_answers_503_not_401(cluster: ApiServer, redis_standalone: str,
                                                          tmp_path: Path) -> None:
    # A ServiceAccount without the gateway ClusterRole: TokenReview is forbidden to it. Callers must not be told
    # their token is bad; the gateway is misconfigured (and says so with 503 + Retry-After).
    unbound = token(cluster, HOME, "not-bound", audiences=())
    p = start_gateway(cluster, tmp_path, redis_standalone, unbound)
    try:
        with pytest.raises(openai.InternalServerError) as e:
            chat(p, token(cluster, "team-a", "app"), "hello")
        assert e.value.status_code == 503 and e.value.body["code"] == "auth_unavailable"
        assert e.value.response.headers["retry-after"] == "1"
    finally:
        p.proc.terminate()
        p.proc.wait(10)


def test_review_cache_is_bounded_and_concurrent_first_calls_share_one_review(cluster: ApiServer, redis_standalone: str,
                                                                             tmp_path: Path) -> None:
    import concurrent.futures

    own = install_gateway_rbac(cluster)
    p = start_gateway(cluster, tmp_path, redis_standalone, own, cache_size=1)
    try:
        def reviews() -> float:
            return p.metric("llmgw_auth_decisions_total", method="token_review", result="ok")

        a = token(cluster, "team-a", "bounded-a")
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: chat(p, a, f"burst {i}"), range(16)))
        assert reviews() == 1, "16 concurrent first requests with one token: one TokenReview"
        b = token(cluster, "team-b", "bounded-b")
        chat(p, b, "b")  # evicts a (cache_size 1)
        chat(p, a, "a again")
        assert reviews() == 3, "an evicted token is reviewed again: the cache holds at most cache_size tokens"
    finally:
        p.proc.terminate()
        p.proc.wait(10)

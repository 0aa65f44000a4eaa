"""The webhook's Kubernetes side against kmock's emulator over real HTTP: gateway reads (cached), Events (deduplicated),
server version detection, and the kopf startup/cleanup registration serving HTTPS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import pytest
import trustme
from kubernetes import client

from llmgw_operator import webhook, webhook_kube
from tests.webhook.conftest import write_pair
from tests.webhook.pods import GW, NS, inject, pod

GW_PATH = f"/apis/{webhook_kube.GROUP}/{webhook_kube.VERSION}/namespaces/{NS}/{webhook_kube.PLURAL}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def k8s() -> AsyncIterator[tuple[kmock.KubernetesEmulator, client.ApiClient]]:
    async with kmock.KubernetesEmulator() as emu, kmock.Server(emu):
        emu.resources[f"{webhook_kube.GROUP}/{webhook_kube.VERSION}/{webhook_kube.PLURAL}"] = kmock.ResourceInfo(
            kind="LLMGateway", namespaced=True, verbs={"get", "list", "watch", "create", "patch"})
        emu.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True,
                                                        verbs={"get", "list", "create"})
        api = client.ApiClient(client.Configuration(host=str(emu.url).rstrip("/")))
        yield emu, api
        api.close()


def events(emu: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    return [o.raw for (res, _ns, _name), o in emu.objects.items() if res.plural == "events" and not o.deleted]


async def wait_until(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_gateway_lookup_cached_and_misses_not_cached(k8s: tuple[kmock.KubernetesEmulator, Any]) -> None:
    emu, api = k8s
    clock = Clock()
    backend = webhook_kube.KubeBackend(api, ttl_s=5, clock=clock)
    assert await backend.get(NS, GW) is None
    body = {"apiVersion": f"{webhook_kube.GROUP}/{webhook_kube.VERSION}", "kind": "LLMGateway",
            "metadata": {"name": GW, "namespace": NS}, "spec": {"sidecar": {"port": 4100}}}
    async with emu.post(GW_PATH, json=body) as r:
        assert r.status < 300
    assert await backend.get(NS, GW) == {"sidecar": {"port": 4100}}, "a miss is not cached"
    async with emu.patch(f"{GW_PATH}/{GW}", json={"spec": {"sidecar": {"port": 4200}}},
                         headers={"Content-Type": "application/merge-patch+json"}) as r:
        assert r.status < 300
    assert (await backend.get(NS, GW))["sidecar"]["port"] == 4100, "within the TTL: cached"
    clock.now += 6
    assert (await backend.get(NS, GW))["sidecar"]["port"] == 4200


async def test_events_are_posted_once_per_window(k8s: tuple[kmock.KubernetesEmulator, Any]) -> None:
    emu, api = k8s
    clock = Clock()
    backend = webhook_kube.KubeBackend(api, event_every_s=300, clock=clock)
    p = pod(inject("nope"))
    await backend.warn(NS, p, "GatewayNotFound", "gateway 'nope' not found")
    await wait_until(lambda: len(events(emu)) == 1)
    ev = events(emu)[0]
    assert ev["reason"] == "GatewayNotFound" and ev["type"] == "Warning"
    assert ev["involvedObject"]["kind"] == "ReplicaSet"
    await backend.warn(NS, p, "GatewayNotFound", "again")  # a Deployment of 100 replicas: one Event, not 100
    await asyncio.sleep(0.2)
    assert len(events(emu)) == 1
    clock.now += 301
    await backend.warn(NS, p, "GatewayNotFound", "later")
    await wait_until(lambda: len(events(emu)) == 2)


async def test_server_version_decides_native_sidecars(k8s: tuple[kmock.KubernetesEmulator, Any],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    emu, api = k8s
    version = {"major": "1", "minor": "28", "gitVersion": "v1.28.15", "gitCommit": "0" * 40, "gitTreeState": "clean",
               "buildDate": "2024-10-22T20:28:14Z", "goVersion": "go1.22.8", "compiler": "gc",
               "platform": "linux/amd64"}

    async def serve_version(_request: Any) -> dict[str, str]:
        return version

    emu["get /version/"] << serve_version  # the kubernetes client asks for /version/
    assert await asyncio.to_thread(webhook_kube.detect_native_support, api) is False
    version.update(minor="31+", gitVersion="v1.31.2-eks-1")
    assert await asyncio.to_thread(webhook_kube.detect_native_support, api) is True
    assert "cannot read the server version" not in caplog.text, "both answers were read, not guessed"
    unreachable = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    try:
        assert await asyncio.to_thread(webhook_kube.detect_native_support, unreachable) is False
    finally:
        unreachable.close()


async def test_kopf_registration_starts_and_stops_the_server(k8s: tuple[kmock.KubernetesEmulator, Any],
                                                             tmp_path: Path) -> None:
    _emu, api = k8s
    ca = trustme.CA()
    write_pair(ca, tmp_path)
    registry = kopf.OperatorRegistry()
    cfg = webhook.WebhookConfig(host="127.0.0.1", port=0, cert_dir=str(tmp_path))
    webhook.register(registry, api_client_factory=lambda: api, config=cfg)
    handlers = {h.id: h for h in registry._activities.get_all_handlers()}
    assert set(handlers) == {"llmgw-webhook-start", "llmgw-webhook-stop"}
    memo = kopf.Memo()
    await handlers["llmgw-webhook-start"].fn(memo=memo)
    server = memo["llmgw_webhook"]
    assert server.settings.native_sidecars_supported is False  # the stock emulator has no /version/: unknown
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    async with aiohttp.ClientSession() as s, s.get(f"https://127.0.0.1:{server.port}/healthz", ssl=ctx) as r:
        assert r.status == 200
    await handlers["llmgw-webhook-stop"].fn(memo=memo)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as s, s.get(f"https://127.0.0.1:{server.port}/healthz", ssl=ctx):
            pass

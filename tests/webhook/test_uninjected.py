"""Pods that ask for a gateway but started without its sidecar: the kopf timer that `webhook.register` adds, run in a
real kopf operator against kmock's emulator over HTTP, writes status.injection and one Event per change."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import trustme
from kubernetes import client

from llmgw_operator import injection, webhook, webhook_kube
from llmgw_operator.crd import GROUP, PLURAL, VERSION
from tests.webhook.conftest import write_pair
from tests.webhook.pods import GW, NS, inject, pod

GW_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
PODS_PATH = f"/api/v1/namespaces/{NS}/pods"


class Emulator(kmock.KubernetesEmulator):
    """kopf needs uid and resourceVersion on the objects it handles; the stock emulator does not set them."""

    _rv = 0

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            Emulator._rv += 1
            md = request.data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                md.setdefault("uid", str(uuid.uuid4()))
            md["resourceVersion"] = str(Emulator._rv)
        return await super()._handle(request)


def declare(emu: Emulator) -> None:
    emu.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(
        kind="LLMGateway", namespaced=True, subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "delete"})
    for plural, kind in (("pods", "Pod"), ("events", "Event")):
        emu.resources[f"v1/{plural}"] = kmock.ResourceInfo(kind=kind, namespaced=True,
                                                           verbs={"get", "list", "watch", "create", "delete"})
    emu.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs={"get", "list", "watch"})
    emu.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False,
                                                        verbs={"get", "list", "watch"})


def objects(emu: Emulator, plural: str) -> dict[str, dict[str, Any]]:
    return {name: o.raw for (res, _ns, name), o in emu.objects.items() if res.plural == plural and not o.deleted}


async def eventually(what: str, cond: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return result


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Emulator]:
    async with Emulator() as emu, kmock.Server(emu):
        declare(emu)
        url = str(emu.url).rstrip("/")
        api = client.ApiClient(client.Configuration(host=url))
        write_pair(trustme.CA(), tmp_path)
        registry = kopf.OperatorRegistry()

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=url, insecure=True)

        webhook.register(registry, api_client_factory=lambda: api, uninjected_interval_s=0.3,
                         config=webhook.WebhookConfig(host="127.0.0.1", port=0, cert_dir=str(tmp_path)))
        settings = kopf.OperatorSettings()
        settings.posting.level = 20
        settings.watching.server_timeout = 10
        stop, ready = threading.Event(), threading.Event()

        def run() -> None:
            asyncio.run(kopf.operator(registry=registry, settings=settings, clusterwide=True, standalone=True,
                                      stop_flag=stop, ready_flag=ready))

        thread = threading.Thread(target=run, name="kopf", daemon=True)
        thread.start()
        await eventually("kopf ready", ready.is_set, timeout=20)
        try:
            yield emu
        finally:
            stop.set()
            await eventually("kopf stopped", lambda: not thread.is_alive(), timeout=10)
            api.close()


async def create(emu: Emulator, path: str, body: dict[str, Any]) -> None:
    async with emu.post(path, json=body) as r:
        assert r.status < 300, await r.text()


def named(name: str, p: dict[str, Any]) -> dict[str, Any]:
    p["metadata"]["name"] = name
    return p


async def test_uninjected_pods_reported_in_status_and_events(running: Emulator) -> None:
    emu = running
    ok = named("web-ok", pod(inject()))
    ok["spec"]["initContainers"] = [{"name": injection.SIDECAR_NAME, "image": "s:1"}]
    for p in [ok, named("web-missed-1", pod(inject())), named("web-missed-2", pod(inject())),
              named("web-optout", pod({"llmgateway.dev/inject": "false"})), named("other", pod(inject("other")))]:
        await create(emu, PODS_PATH, p)
    await create(emu, GW_PATH, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LLMGateway",
                                "metadata": {"name": GW, "namespace": NS}, "spec": {"models": []}})

    def injection_status() -> dict[str, Any] | None:
        return (objects(emu, PLURAL).get(GW, {}).get("status") or {}).get("injection")

    status = await eventually("status.injection", injection_status)
    assert status == {"uninjectedCount": 2, "uninjectedPods": ["web-missed-1", "web-missed-2"]}
    reported = await eventually("an UninjectedPods event", lambda: [
        e for e in objects(emu, "events").values() if e.get("reason") == "UninjectedPods"])
    assert "web-missed-1, web-missed-2" in reported[0]["message"]
    await asyncio.sleep(1.0)  # several timer runs: the same set is not reported again
    assert len([e for e in objects(emu, "events").values() if e.get("reason") == "UninjectedPods"]) == 1

    async with emu.delete(f"{PODS_PATH}/web-missed-1") as r:  # "restarted": replaced by an injected pod
        assert r.status < 300
    await eventually("the count to drop", lambda: (injection_status() or {}).get("uninjectedCount") == 1)
    assert injection_status() == {"uninjectedCount": 1, "uninjectedPods": ["web-missed-2"]}


def test_report_respects_disabled_injection_and_caps_names() -> None:
    pods = [named(f"p{i:02}", pod(inject())) for i in range(25)]
    status, names = webhook_kube.uninjected_report(pods, GW, {"injection": {"enabled": True}})
    assert status["uninjectedCount"] == 25 and len(status["uninjectedPods"]) == webhook_kube.MAX_LISTED_PODS
    assert "and 5 more" in webhook_kube.uninjected_message(names)
    assert webhook_kube.uninjected_report(pods, GW, {"injection": {"enabled": False}}) == (
        {"uninjectedCount": 0, "uninjectedPods": []}, [])

"""A real HTTPS admission server on loopback (trustme certificates) with in-memory gateways and an event recorder."""

from __future__ import annotations

import base64
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import kubernetes_validate
import pytest
import trustme

from llmgw_operator import injection, webhook

OLDEST, NEWEST = "1.29", kubernetes_validate.latest_version()


@dataclass
class MemoryGateways:
    """GatewaySource over a dict; `fail` makes every lookup raise, like an unreachable API server."""

    specs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fail: bool = False

    async def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        if self.fail:
            raise ConnectionError("api server unreachable")
        return self.specs.get((namespace, name))


@dataclass
class RecordedEvents:
    events: list[tuple[str, str, str, str]] = field(default_factory=list)

    async def warn(self, namespace: str, pod: Mapping[str, Any], reason: str, message: str) -> None:
        self.events.append((namespace, injection.pod_label(pod), reason, message))


def write_pair(ca: trustme.CA, directory: Path) -> None:
    cert = ca.issue_cert("127.0.0.1", "llmgw-webhook.llmgateway-system.svc")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    (directory / "tls.key").write_bytes(cert.private_key_pem.bytes())


@dataclass
class Harness:
    server: webhook.WebhookServer
    gateways: MemoryGateways
    events: RecordedEvents
    ca: trustme.CA
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}{webhook.MUTATE_PATH}"

    def client_ssl(self, ca: trustme.CA | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        (ca or self.ca).configure_trust(ctx)
        return ctx

    async def review(self, pod: dict[str, Any], namespace: str = "team-a", operation: str = "CREATE",
                     dry_run: bool = False) -> dict[str, Any]:
        uid = str(uuid.uuid4())
        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": operation, "object": pod, "dryRun": dry_run,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"}}}
        async with self.session.post(self.url, json=body, ssl=self.client_ssl(),
                                     timeout=aiohttp.ClientTimeout(total=10)) as r:
            assert r.status == 200, await r.text()
            out = await r.json()
        assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
        assert out["response"]["uid"] == uid
        assert out["response"]["allowed"] is True  # never a rejected pod
        assert all(len(w) <= 256 and "\n" not in w for w in out["response"].get("warnings", []))
        return out["response"]


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def mutate(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """Apply the returned patch the way the API server does, then validate the result strictly (both ends)."""
    out = jsonpatch.JsonPatch(patch_of(response)).apply(pod)
    for version in (OLDEST, NEWEST):
        kubernetes_validate.validate(out, version, strict=True)
    return out


SETTINGS = injection.InjectionSettings(default_image="ghcr.io/llmgateway/sidecar:0.1.0",
                                       native_sidecars_supported=True)


@pytest.fixture(scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    ca = trustme.CA()
    cert_dir = tmp_path_factory.mktemp("webhook-tls")
    write_pair(ca, cert_dir)
    gateways, events = MemoryGateways(), RecordedEvents()
    config = webhook.WebhookConfig(host="127.0.0.1", port=0, cert_dir=str(cert_dir), reload_interval_s=3600)
    server = webhook.WebhookServer(config, gateways, events, SETTINGS)
    await server.start()
    async with aiohttp.ClientSession() as session:
        yield Harness(server, gateways, events, ca, session)
    await server.stop()


@pytest.fixture
def h(harness: Harness) -> Harness:
    """Per test: fresh gateways and events on the shared server."""
    harness.gateways.specs.clear()
    harness.gateways.fail = False
    harness.events.events.clear()
    harness.server.settings = SETTINGS
    return harness

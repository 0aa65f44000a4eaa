"""TLS rotation from the mounted Secret, uninjected-pod detection, event bodies, server version parsing."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import kubernetes_validate
import pytest
import trustme

from llmgw_operator import injection, webhook, webhook_kube
from tests.webhook.conftest import NEWEST, OLDEST, SETTINGS, MemoryGateways, RecordedEvents, write_pair
from tests.webhook.pods import GW, NS, inject, pod


async def _handshake(port: int, ca: trustme.CA) -> int:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    async with aiohttp.ClientSession() as s, s.get(f"https://127.0.0.1:{port}/healthz", ssl=ctx) as r:
        return r.status


async def test_certificate_rotation_without_restart(tmp_path: Path) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    write_pair(old_ca, tmp_path)
    cfg = webhook.WebhookConfig(host="127.0.0.1", port=0, cert_dir=str(tmp_path), reload_interval_s=3600)
    server = webhook.WebhookServer(cfg, MemoryGateways(), RecordedEvents(), SETTINGS)
    await server.start()
    try:
        assert await _handshake(server.port, old_ca) == 200
        # A half-written rotation (new cert, old key) must keep serving the old pair.
        (tmp_path / "tls.crt").write_bytes(new_ca.issue_cert("127.0.0.1").cert_chain_pems[0].bytes())
        assert server.tls.check()
        assert await _handshake(server.port, old_ca) == 200
        write_pair(new_ca, tmp_path)
        assert server.tls.check()
        assert await _handshake(server.port, new_ca) == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await _handshake(server.port, old_ca)
    finally:
        await server.stop()


def test_missing_certificate_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no usable certificate"):
        webhook.ReloadingTLS(tmp_path)


def test_find_uninjected() -> None:
    def named(name: str, p: dict) -> dict:
        p["metadata"]["name"] = name
        return p

    injected = named("ok", pod(inject()))
    injected["spec"]["initContainers"] = [{"name": injection.SIDECAR_NAME, "image": "s:1"}]
    done = named("done", pod(inject()))
    done["status"] = {"phase": "Succeeded"}
    leaving = named("leaving", pod(inject()))
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    pods = [
        named("b-missed", pod(inject())), named("a-missed", pod(inject())), injected, done, leaving,
        named("other-gw", pod(inject("other"))), named("opted-out", pod({"llmgateway.dev/inject": "false"})),
        named("host", pod(inject(), hostNetwork=True)), named("plain", pod(None)),
    ]
    assert injection.find_uninjected(pods, GW) == ["a-missed", "b-missed"]
    assert injection.find_uninjected(pods, "other") == ["other-gw"]
    assert injection.find_uninjected([], GW) == []


@pytest.mark.parametrize("owned", [True, False])
def test_event_body_is_a_valid_event(owned: bool) -> None:
    p = pod(inject("nope"))
    if not owned:
        del p["metadata"]["ownerReferences"]
        p["metadata"]["name"] = "solo"
    body = webhook_kube.event_body(NS, p, "GatewayNotFound", "x" * 5000, "op-0")
    for version in (OLDEST, NEWEST):
        kubernetes_validate.validate(body, version, strict=True)
    involved = body["involvedObject"]
    assert (involved["kind"], involved["name"]) == (("ReplicaSet", "web-7d9f8") if owned else ("Pod", "solo"))
    assert len(body["message"]) <= 1024


@pytest.mark.parametrize(("major", "minor", "native"), [
    ("1", "28", False), ("1", "29", True), ("1", "33+", True), ("1", "", False), ("x", "30", False), ("2", "0", True),
])
def test_native_support_from_server_version(major: str, minor: str, native: bool) -> None:
    assert webhook_kube.native_sidecars_supported(major, minor) is native


def test_settings_from_env() -> None:
    s = webhook.settings_from_env(True, {"LLMGW_SIDECAR_IMAGE": "r/s:2", "LLMGW_NATIVE_SIDECARS": "false"})
    assert s.default_image == "r/s:2" and s.native_sidecars_supported is False
    assert webhook.settings_from_env(False, {}).native_sidecars_supported is False
    # Forced on where the server cannot run them: plain containers (an old server would refuse every such pod).
    assert webhook.settings_from_env(False, {"LLMGW_NATIVE_SIDECARS": "true"}).native_sidecars_supported is False
    assert webhook.settings_from_env(True, {"LLMGW_NATIVE_SIDECARS": "true"}).native_sidecars_supported is True
    assert webhook.settings_from_env(True, {}).native_sidecars_supported is True
    cfg = webhook.WebhookConfig.from_env({"LLMGW_WEBHOOK_PORT": "8443", "LLMGW_WEBHOOK_CERT_DIR": "/x"})
    assert (cfg.port, cfg.cert_dir) == (8443, "/x")

"""The whole declarative-invalidation loop with the real operator (kopf + handlers against the Kubernetes emulator)
and a real sidecar process loop: the operator renders spec.cache.generation into the ConfigMap, a sidecar runs that
very config (the kubelet's part, copying the ConfigMap into the mounted file, is played by the test), reports the
generation it serves, and the gateway's status says how many sidecars applied it; a patched generation follows."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmgw_operator.builders import Gateway
from llmgw_operator.builders.sidecar_config import sidecar_secret_env
from llmgw_sidecar.app import create_app
from llmgw_sidecar.config import load_config
from llmgw_sidecar.metrics import Metrics
from tests.operator.conftest import GW_PATH, NS, Cluster, cluster, operator  # noqa: F401 - fixtures
from tests.servers import ThreadServer

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "gateway-external.yaml"


def _status_cache(c: Cluster) -> dict[str, Any]:
    return ((c.gateway("shared") or {}).get("status") or {}).get("cache") or {}


async def test_generation_bump_reaches_the_sidecar_and_the_status(operator: Cluster, redis_standalone: str,  # noqa: F811
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["cache"]["generation"] = 3
    body["spec"]["cache"]["scope"] = "namespace"
    await operator.create_secret("shared-redis", {"url": redis_standalone})
    await operator.create_secret("openai", {"api-key": "sk-test"})
    await operator.create_gateway(body)
    cm = await operator.wait("config", lambda: operator.objects("configmaps").get("shared-sidecar"))
    assert yaml.safe_load(cm["data"]["config.yaml"])["cache"]["generation"] == 3
    assert (await operator.wait("status.cache", lambda: _status_cache(operator)))["generation"] == 3

    # The injected sidecar's environment (values from the Secrets) and its mounted config file.
    for e in sidecar_secret_env(Gateway.from_spec("shared", NS, copy.deepcopy(body["spec"]))):
        ref = e["valueFrom"]["secretKeyRef"]
        monkeypatch.setenv(e["name"], redis_standalone if ref["name"] == "shared-redis" else "sk-test")
    monkeypatch.setenv("POD_NAME", "app-1")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    srv = ThreadServer(lambda: create_app(load_config(path), config_path=path, metrics=Metrics(),
                                          reload_interval_s=0.1)).start()
    try:
        got = await operator.wait("sidecar applied 3", lambda: (s := _status_cache(operator))
                                  .get("sidecarsApplied") == 1 and s, timeout=20)
        assert got == {"generation": 3, "sidecarsReporting": 1, "sidecarsApplied": 1}

        # kubectl patch llmgateway shared --type merge -p '{"spec":{"cache":{"generation":4}}}'
        await operator.patch(f"{GW_PATH}/shared", {"spec": {"cache": {"generation": 4}}})
        new_cm = await operator.wait("config 4", lambda: (c := operator.objects("configmaps")["shared-sidecar"]) and
                                     yaml.safe_load(c["data"]["config.yaml"])["cache"]["generation"] == 4 and c)
        # Before the file changes the sidecar still serves 3: the status says it has not applied 4 yet.
        await operator.wait("generation 4 rendered", lambda: _status_cache(operator).get("generation") == 4)
        assert _status_cache(operator).get("sidecarsApplied", 0) == 0
        path.write_text(new_cm["data"]["config.yaml"])  # the kubelet updates the mounted file
        got = await operator.wait("sidecar applied 4", lambda: (s := _status_cache(operator))
                                  .get("sidecarsApplied") == 1 and s, timeout=20)
        assert got == {"generation": 4, "sidecarsReporting": 1, "sidecarsApplied": 1}
    finally:
        await asyncio.to_thread(srv.stop)

"""The injected container and the configuration the operator renders for it must agree: port, host, config path,
volumes, and the Secrets the config refers to by environment variable."""

from __future__ import annotations

import pytest

from llmgw_operator import injection
from llmgw_operator.builders.sidecar_config import CONFIG_KEY, render_sidecar_config, sidecar_configmap
from llmgw_operator.builders.spec import Gateway, SpecError
from tests.webhook.conftest import SETTINGS
from tests.webhook.pods import GW, NS, gateway_spec


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _env_refs(value: object) -> set[str]:
    """Every os.environ/NAME the rendered config refers to."""
    if isinstance(value, dict):
        return {r for v in value.values() for r in _env_refs(v)}
    if isinstance(value, list):
        return {r for v in value for r in _env_refs(v)}
    if isinstance(value, str) and value.startswith("os.environ/"):
        return {value.removeprefix("os.environ/")}
    return set()


@pytest.mark.parametrize("over", [{}, {"sidecar": {"port": 4321}},
                                  {"redis": {"tls": {"enabled": True, "secretName": "redis-tls"}}}])
def test_injected_container_matches_rendered_config(over: dict) -> None:
    spec = gateway_spec(**over)
    gw = Gateway.from_spec(GW, NS, spec)
    config = render_sidecar_config(gw)
    sidecar = injection.build_sidecar(GW, spec, SETTINGS, native=True)

    port = config["listen"]["port"]
    assert config["listen"]["host"] == "127.0.0.1", "the sidecar must not be reachable from other pods"
    assert sidecar["ports"][0]["containerPort"] == port
    assert f"127.0.0.1:{port}/readyz" in " ".join(sidecar["startupProbe"]["exec"]["command"])
    assert {e["name"]: e["value"] for e in injection.app_env(port)}["OPENAI_BASE_URL"] == f"http://127.0.0.1:{port}/v1"

    cm = sidecar_configmap(gw)
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "llmgw-config")
    assert sidecar["args"][-1] == f"{mount['mountPath']}/{CONFIG_KEY}" and CONFIG_KEY in cm["data"]
    assert cm["metadata"]["name"] == next(
        v for v in injection._volumes(GW, spec) if v["name"] == "llmgw-config")["configMap"]["name"]

    provided = {e["name"] for e in sidecar["env"]}
    missing = _env_refs(config) - provided
    assert not missing, f"config refers to env vars the injected container does not set: {missing}"

    mounts = [m["mountPath"] for m in sidecar["volumeMounts"]]
    for path in (v for v in _strings(config) if v.startswith("/")):
        assert any(path.startswith(m.rstrip("/") + "/") for m in mounts), f"{path} is not on a mounted volume"


def test_metrics_listener_port_matches_rendered_config() -> None:
    """The API stays on 127.0.0.1; Prometheus scrapes the metrics-only listener on the pod IP (default 9464)."""
    gw = Gateway.from_spec(GW, NS, gateway_spec())  # as stored by the API server: CRD defaults applied
    config = render_sidecar_config(gw)
    ports = {p["name"]: p["containerPort"] for p in injection.build_sidecar(GW, gw.spec, SETTINGS, True)["ports"]}
    assert config["metrics"] == {"port": 9464, "host": "0.0.0.0"} and ports["llmgw-metrics"] == 9464
    off = Gateway.from_spec(GW, NS, gateway_spec(sidecar={"metricsPort": 0}))
    assert "metrics" not in render_sidecar_config(off)
    assert "llmgw-metrics" not in {p["name"] for p in injection.build_sidecar(GW, off.spec, SETTINGS, True)["ports"]}
    clash = Gateway.from_spec(GW, NS, gateway_spec(sidecar={"metricsPort": 4000}))
    with pytest.raises(SpecError, match=r"metrics\.port must differ"):
        render_sidecar_config(clash)

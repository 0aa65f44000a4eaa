"""The sidecar's pull policy, from the chart value to the containers the operator builds: an explicit
spec.sidecar.imagePullPolicy wins for its gateway; otherwise the chart's sidecar.image.pullPolicy (the CRD gives the
field no default, or the chart value could never apply). Rendered by the real Helm engine; the operator reads the
rendered Deployment's environment exactly as it reads its own at start-up."""

from __future__ import annotations

from typing import Any

import pytest

from llmgw_operator import injection, webhook
from llmgw_operator.__main__ import settings_from_env
from llmgw_operator.builders import gateway
from llmgw_operator.builders.spec import Gateway
from llmgw_operator.crd import defaulted_spec, openapi_schema
from tests.chart.helpers import one, render

MODELS = [{"name": "m", "provider": "mock"}]


def _operator_env(values: dict[str, Any]) -> dict[str, str]:
    container = one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _policies(env: dict[str, str], spec: dict[str, Any]) -> tuple[str, str]:
    """(injected sidecar, shared gateway Deployment) pull policy for this spec under this operator environment."""
    settings = webhook.settings_from_env(native_supported=False, env=env)
    sidecar = injection.build_sidecar("gw", spec, settings, native=False)
    reconcile = settings_from_env("cluster.local", env)
    gw = Gateway.from_spec("gw", "team", {**spec, "gateway": {}})
    objs = gateway.build(gw, image=reconcile.gateway_image, cluster_role=reconcile.gateway_cluster_role,
                         pull_policy=reconcile.gateway_pull_policy)
    dep = next(o for o in objs if o["kind"] == "Deployment")
    return sidecar["imagePullPolicy"], dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"]


def test_the_crd_leaves_the_sidecar_pull_policy_unset() -> None:
    schema = openapi_schema()["properties"]["spec"]["properties"]["sidecar"]["properties"]["imagePullPolicy"]
    assert "default" not in schema
    assert "imagePullPolicy" not in defaulted_spec({"models": MODELS})["sidecar"]


@pytest.mark.parametrize("chart_value", ["Always", "Never", "IfNotPresent"])
def test_chart_value_reaches_both_builders_when_the_spec_is_silent(chart_value: str) -> None:
    env = _operator_env({"sidecar": {"image": {"pullPolicy": chart_value}}})
    assert env["LLMGW_SIDECAR_PULL_POLICY"] == chart_value
    assert _policies(env, {"models": MODELS}) == (chart_value, chart_value)


def test_an_explicit_spec_value_beats_the_chart_value() -> None:
    env = _operator_env({"sidecar": {"image": {"pullPolicy": "Always"}}})
    spec = {"models": MODELS, "sidecar": {"imagePullPolicy": "Never"}}
    assert _policies(env, spec) == ("Never", "Never")


def test_chart_default_is_if_not_present_and_so_is_an_operator_without_the_variable() -> None:
    assert _policies(_operator_env({}), {"models": MODELS}) == ("IfNotPresent", "IfNotPresent")
    assert _policies({}, {"models": MODELS}) == ("IfNotPresent", "IfNotPresent")


def test_an_operator_environment_kubernetes_would_refuse_is_an_error_at_start() -> None:
    with pytest.raises(ValueError, match="LLMGW_SIDECAR_PULL_POLICY='always'"):
        settings_from_env("cluster.local", {"LLMGW_SIDECAR_PULL_POLICY": "always"})

"""The webhook points pods at a shared gateway without a sidecar (annotation llmgateway.dev/use-gateway): env for the
OpenAI SDKs and a projected ServiceAccount token for the gateway's audience, through the real HTTPS admission server."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from llmgw_operator import gateway_client, injection
from tests.webhook.conftest import Harness, mutate, patch_of
from tests.webhook.pods import NS, gateway_spec, pod


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


async def test_pod_is_pointed_at_the_shared_gateway_in_another_namespace(h: Harness) -> None:
    h.gateways.specs[("llm", "shared")] = gateway_spec(gateway={"service": {"port": 8080},
                                                                "auth": {"audience": "llm.example"}})
    p = pod({gateway_client.ANNOTATION_USE_GATEWAY: "llm/shared"})
    out = mutate(p, await h.review(p))
    spec = out["spec"]
    assert [c["name"] for c in spec["containers"]] == ["app"] and not spec.get("initContainers"), "no sidecar"
    env = env_of(spec["containers"][0])
    assert env["OPENAI_BASE_URL"] == "http://shared-gateway.llm.svc:8080/v1"
    assert env["LLMGW_TOKEN_FILE"] == gateway_client.TOKEN_PATH and "OPENAI_API_KEY" not in env
    (vol,) = [v for v in spec["volumes"] if v["name"] == gateway_client.TOKEN_VOLUME]
    sat = vol["projected"]["sources"][0]["serviceAccountToken"]
    assert (sat["audience"], sat["path"]) == ("llm.example", "token")
    assert {"name": gateway_client.TOKEN_VOLUME, "mountPath": gateway_client.TOKEN_DIR, "readOnly": True} in \
        spec["containers"][0]["volumeMounts"]
    assert '"mode":"shared-gateway"' in out["metadata"]["annotations"][injection.ANNOTATION_STATUS]


async def test_same_namespace_default_port_and_existing_env_kept(h: Harness) -> None:
    h.gateways.specs[(NS, "gw")] = gateway_spec(gateway={})
    p = pod({gateway_client.ANNOTATION_USE_GATEWAY: "gw"},
            containers=[{"name": "app", "image": "app:1", "env": [{"name": "OPENAI_BASE_URL", "value": "mine"}]},
                        {"name": "helper", "image": "h:1"}])
    out = mutate(p, await h.review(p))
    app, helper = out["spec"]["containers"]
    assert env_of(app)["OPENAI_BASE_URL"] == "mine", "the app's own setting wins"
    assert env_of(helper)["OPENAI_BASE_URL"] == f"http://gw-gateway.{NS}.svc:80/v1"
    assert out["spec"]["volumes"][-1]["projected"]["sources"][0]["serviceAccountToken"]["audience"] == \
        "llmgateway.dev"


async def test_no_shared_gateway_or_lookup_failure_leaves_the_pod_alone(h: Harness) -> None:
    h.gateways.specs[(NS, "sidecar-only")] = gateway_spec()  # no spec.gateway
    for target in ("sidecar-only", "missing"):
        resp = await h.review(pod({gateway_client.ANNOTATION_USE_GATEWAY: target}))
        assert patch_of(resp) == [] and "not a shared gateway" in resp["warnings"][0]
    assert [e[2] for e in h.events.events] == ["GatewayNotFound", "GatewayNotFound"]
    h.gateways.fail = True
    resp = await h.review(pod({gateway_client.ANNOTATION_USE_GATEWAY: "gw"}))
    assert patch_of(resp) == [] and "could not read gateway" in resp["warnings"][0]


async def test_inject_annotation_wins_over_use_gateway(h: Harness) -> None:
    h.gateways.specs[(NS, "gw")] = gateway_spec(gateway={})
    p = pod({injection.ANNOTATION_INJECT: "gw", gateway_client.ANNOTATION_USE_GATEWAY: "gw"})
    out = mutate(p, await h.review(p))
    assert injection.SIDECAR_NAME in [c["name"] for c in out["spec"].get("initContainers") or []]
    assert gateway_client.TOKEN_VOLUME not in [v["name"] for v in out["spec"]["volumes"]]


SECRET = "sk-live-never-in-a-log-0123456789"


async def test_unusable_spec_values_fall_back_to_the_defaults_with_one_log_line(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A gateway object written past the schema (or by an older CRD) never fails admission: port and audience fall
    back to the CRD defaults, logged once per gateway and problem, and no value is quoted."""
    h.gateways.specs[(NS, "odd")] = gateway_spec(gateway={"service": {"port": f"http-{SECRET}"},
                                                          "auth": {"audience": {"token": SECRET}}})
    with caplog.at_level(logging.WARNING, logger="llmgw_operator"):
        for _ in range(3):
            p = pod({gateway_client.ANNOTATION_USE_GATEWAY: "odd"})
            out = mutate(p, await h.review(p))
            assert env_of(out["spec"]["containers"][0])["OPENAI_BASE_URL"] == f"http://odd-gateway.{NS}.svc:80/v1"
            sat = out["spec"]["volumes"][-1]["projected"]["sources"][0]["serviceAccountToken"]
            assert sat["audience"] == gateway_client.DEFAULT_AUDIENCE
    lines = [r.getMessage() for r in caplog.records if "odd" in r.getMessage()]
    assert len(lines) == 2, lines  # one for the port, one for the audience; not one per pod
    assert not [r for r in caplog.records if SECRET in r.getMessage() or (r.exc_text and SECRET in r.exc_text)]


async def test_an_exception_while_pointing_admits_the_pod_unchanged(h: Harness,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    h.gateways.specs[(NS, "broken")] = {**gateway_spec(), "gateway": [SECRET]}  # not an object: .get raises
    before = h.server.metrics.admissions.labels("error")._value.get()
    with caplog.at_level(logging.WARNING, logger="llmgw_operator"):
        for _ in range(2):
            resp = await h.review(pod({gateway_client.ANNOTATION_USE_GATEWAY: "broken"}))
            assert patch_of(resp) == [] and "admitted unchanged" in resp["warnings"][0]
            assert SECRET not in resp["warnings"][0]
    assert h.server.metrics.admissions.labels("error")._value.get() == before + 2
    assert [e[2] for e in h.events.events] == ["InjectionFailed", "InjectionFailed"]
    lines = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert len(lines) == 1 and "AttributeError" in lines[0] and SECRET not in lines[0], lines


async def test_a_review_that_fails_anywhere_is_still_an_allowed_answer(h: Harness) -> None:
    # Annotations that are not an object cannot come from a real API server; a hand-made review still gets an answer
    # (200, allowed, no patch) instead of a 500, and the webhook keeps serving.
    bad = pod({})
    bad["metadata"]["annotations"] = [1]
    resp = await h.review(bad)
    assert patch_of(resp) == [] and resp["allowed"] is True
    h.gateways.specs[(NS, "gw")] = gateway_spec(gateway={})
    p = pod({gateway_client.ANNOTATION_USE_GATEWAY: "gw"})
    assert mutate(p, await h.review(p))["spec"]["volumes"][-1]["name"] == gateway_client.TOKEN_VOLUME

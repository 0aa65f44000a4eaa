"""Real HTTPS AdmissionReview round trips: the patch is applied with `jsonpatch` and the pod validated strictly."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from llmgw_operator import injection
from llmgw_operator.builders.sidecar_config import sidecar_configmap_name
from tests.webhook.conftest import Harness, mutate, patch_of
from tests.webhook.pods import GW, NS, gateway_spec, inject, pod

APP_ENV = {"OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY", "LLMGW_URL"}


def sidecar_of(p: dict[str, Any]) -> dict[str, Any]:
    spec = p["spec"]
    found = [c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == injection.SIDECAR_NAME]
    assert len(found) == 1, "exactly one sidecar"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


async def test_native_sidecar_single_container(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec()
    original = pod(inject())
    resp = await h.review(original)
    assert "warnings" not in resp
    out = mutate(original, resp)

    side = out["spec"]["initContainers"][0]
    assert side["name"] == injection.SIDECAR_NAME and side["restartPolicy"] == "Always"
    assert side["image"] == "ghcr.io/llmgateway/sidecar:0.1.0"
    assert side["args"] == ["serve", "--config", "/etc/llmgw/config.yaml"]
    probe = " ".join(side["startupProbe"]["exec"]["command"])
    assert "http://127.0.0.1:4000/readyz" in probe  # exec, because the sidecar listens on loopback only
    assert "readinessProbe" not in side and "lifecycle" not in side
    sc = side["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert side["resources"]["limits"] and side["resources"]["requests"]
    env = env_of(side)
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_SERVICE_ACCOUNT"] == {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}
    assert {"secretKeyRef": {"name": "openai", "key": "api-key"}} in env.values(), "upstream key as Secret env"

    app = out["spec"]["containers"][0]
    app_env = env_of(app)
    assert app_env["OPENAI_BASE_URL"] == "http://127.0.0.1:4000/v1"
    assert app_env["OPENAI_API_BASE"] == "http://127.0.0.1:4000/v1"
    assert not any(isinstance(v, dict) and "secretKeyRef" in v for v in app_env.values()), "keys stay in the sidecar"

    vols = {v["name"]: v for v in out["spec"]["volumes"]}
    assert vols["llmgw-config"]["configMap"]["name"] == sidecar_configmap_name(GW)
    mounts = {m["name"]: m for m in side["volumeMounts"]}
    assert mounts["llmgw-config"]["mountPath"] == "/etc/llmgw" and "subPath" not in mounts["llmgw-config"]

    status = json.loads(out["metadata"]["annotations"][injection.ANNOTATION_STATUS])
    assert status["gateway"] == GW and status["mode"] == "native" and status["env"]["app"]
    # Explicit add ops only, on the paths we own: nothing else in the pod is rewritten.
    for op in patch_of(resp):
        assert op["op"] == "add"
        assert op["path"].startswith(("/spec/containers/0/env", "/spec/initContainers", "/spec/volumes",
                                      "/metadata/annotations"))
    assert out["metadata"]["ownerReferences"] == original["metadata"]["ownerReferences"]


async def test_reinvocation_is_a_no_op(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec()
    once = mutate(pod(inject()), await h.review(pod(inject())))
    again = await h.review(once)
    assert patch_of(again) == [] and "warnings" not in again
    assert injection.find_uninjected([once], GW) == []


async def test_several_containers_existing_env_is_kept(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec()
    containers = [
        {"name": "api", "image": "api:1", "env": [{"name": "OPENAI_BASE_URL", "value": "https://proxy.corp/v1"},
                                                  {"name": "OTHER", "value": "x"}]},
        {"name": "worker", "image": "worker:1"},
        {"name": "metrics", "image": "exporter:1", "env": []},
    ]
    original = pod(inject(), containers=containers)
    out = mutate(original, await h.review(original))
    api, worker, metrics = out["spec"]["containers"]
    assert env_of(api)["OPENAI_BASE_URL"] == "https://proxy.corp/v1", "an existing value is never replaced"
    assert [e["name"] for e in api["env"]][:2] == ["OPENAI_BASE_URL", "OTHER"]
    assert set(env_of(api)) == APP_ENV | {"OTHER"}
    assert set(env_of(worker)) == APP_ENV and set(env_of(metrics)) == APP_ENV
    status = json.loads(out["metadata"]["annotations"][injection.ANNOTATION_STATUS])
    assert "OPENAI_BASE_URL" not in status["env"]["api"]


async def test_existing_init_containers_and_volumes(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec()
    init = [{"name": "migrate", "image": "migrate:1"}, {"name": "warm", "image": "warm:1"}]
    volumes = [{"name": "data", "emptyDir": {}}]
    original = pod(inject(), init=init, volumes=volumes)
    out = mutate(original, await h.review(original))
    assert [c["name"] for c in out["spec"]["initContainers"]] == [injection.SIDECAR_NAME, "migrate", "warm"]
    assert [v["name"] for v in out["spec"]["volumes"]] == ["data", "llmgw-config", "llmgw-tmp"]


async def test_plain_container_mode(h: Harness) -> None:
    h.server.settings = injection.InjectionSettings(default_image="reg.local/sidecar:9", native_sidecars_supported=False)
    h.gateways.specs[(NS, GW)] = gateway_spec(sidecar={"port": 4100})
    containers = [{"name": "app", "image": "app:1"}, {"name": "side", "image": "other:1"}]
    original = pod(inject(), containers=containers)
    out = mutate(original, await h.review(original))
    names = [c["name"] for c in out["spec"]["containers"]]
    assert names == [injection.SIDECAR_NAME, "app", "side"], "first: containers start in order"
    assert "initContainers" not in out["spec"]
    side = out["spec"]["containers"][0]
    assert "restartPolicy" not in side and side["image"] == "reg.local/sidecar:9"
    assert "127.0.0.1:4100/readyz" in " ".join(side["lifecycle"]["postStart"]["exec"]["command"])
    assert "preStop" in side["lifecycle"]
    assert out["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "app"
    assert env_of(out["spec"]["containers"][1])["OPENAI_BASE_URL"] == "http://127.0.0.1:4100/v1"
    assert env_of(out["spec"]["containers"][2])["OPENAI_BASE_URL"] == "http://127.0.0.1:4100/v1"


async def test_native_choice_pod_beats_gateway_and_cluster_limits_it(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec(injection={"nativeSidecar": "Always"})
    p = pod(inject(**{injection.ANNOTATION_NATIVE: "false"}))
    out = mutate(p, await h.review(p))
    assert out["spec"]["containers"][0]["name"] == injection.SIDECAR_NAME

    h.gateways.specs[(NS, GW)] = gateway_spec(injection={"nativeSidecar": "Never"})
    out = mutate(pod(inject()), await h.review(pod(inject())))
    assert out["spec"]["containers"][0]["name"] == injection.SIDECAR_NAME

    h.server.settings = injection.InjectionSettings(default_image="s:1", native_sidecars_supported=False)
    h.gateways.specs[(NS, GW)] = gateway_spec(injection={"nativeSidecar": "Always"})
    resp = await h.review(pod(inject()))
    out = mutate(pod(inject()), resp)
    assert out["spec"]["containers"][0]["name"] == injection.SIDECAR_NAME
    assert any("1.29" in w for w in resp["warnings"])


async def test_job_pod_in_plain_mode_is_warned(h: Harness) -> None:
    h.server.settings = injection.InjectionSettings(default_image="s:1", native_sidecars_supported=False)
    h.gateways.specs[(NS, GW)] = gateway_spec()
    p = pod(inject(), restartPolicy="Never")
    resp = await h.review(p)
    mutate(p, resp)
    assert any("Job" in w for w in resp["warnings"])


async def test_host_network_is_skipped_with_warning(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec()
    resp = await h.review(pod(inject(), hostNetwork=True))
    assert patch_of(resp) == [] and "hostNetwork" in resp["warnings"][0]


async def test_opt_outs(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec()
    for p in [pod({"llmgateway.dev/inject": "false"}), pod({}), pod(None),
              pod(inject(), labels={"llmgateway.dev/inject": "false"})]:
        resp = await h.review(p)
        assert patch_of(resp) == [] and "warnings" not in resp
    assert h.events.events == []


async def test_unknown_gateway_admitted_with_warning_and_event(h: Harness) -> None:
    resp = await h.review(pod(inject("nope")))
    assert patch_of(resp) == []
    assert "'nope' not found" in resp["warnings"][0]
    assert [(e[0], e[2]) for e in h.events.events] == [(NS, "GatewayNotFound")]

    h.events.events.clear()
    resp = await h.review(pod(inject("nope")), dry_run=True)
    assert resp["warnings"] and h.events.events == [], "dry runs have no side effects"


async def test_api_trouble_admits_uninjected(h: Harness) -> None:
    h.gateways.fail = True
    resp = await h.review(pod(inject()))
    assert patch_of(resp) == [] and "could not read gateway" in resp["warnings"][0]
    assert h.events.events[0][2] == "InjectionFailed"


async def test_injection_disabled_on_gateway(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec(injection={"enabled": False})
    resp = await h.review(pod(inject()))
    assert patch_of(resp) == [] and "disabled" in resp["warnings"][0]
    assert h.events.events[0][2] == "InjectionSkipped"


async def test_env_controls(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec()
    containers = [{"name": "a", "image": "a:1", "envFrom": [{"configMapRef": {"name": "cfg"}}]},
                  {"name": "b", "image": "b:1"}]
    resp = await h.review(pod(inject(), containers=containers))
    out = mutate(pod(inject(), containers=containers), resp)
    assert any("envFrom" in w for w in resp["warnings"])
    assert set(env_of(out["spec"]["containers"][0])) == APP_ENV

    p = pod(inject(**{injection.ANNOTATION_INJECT_ENV: "false"}), containers=containers)
    out = mutate(p, await h.review(p))
    assert all("env" not in c for c in out["spec"]["containers"])

    p = pod(inject(**{injection.ANNOTATION_CONTAINERS: "b,ghost"}), containers=containers)
    resp = await h.review(p)
    out = mutate(p, resp)
    assert "env" not in out["spec"]["containers"][0] and set(env_of(out["spec"]["containers"][1])) == APP_ENV
    assert any("ghost" in w for w in resp["warnings"])


async def test_existing_sidecar_name_or_volume_clash(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec()
    p = pod(inject(), containers=[{"name": injection.SIDECAR_NAME, "image": "x:1"}])
    resp = await h.review(p)
    assert patch_of(resp) == [] and resp["warnings"]
    p = pod(inject(), volumes=[{"name": "llmgw-config", "emptyDir": {}}])
    resp = await h.review(p)
    assert patch_of(resp) == [] and "llmgw-config" in resp["warnings"][0]


async def test_stale_status_annotation_is_replaced(h: Harness) -> None:
    """A manifest copied from a running pod (`kubectl get -o yaml`) may carry our annotation without the sidecar."""
    h.gateways.specs[(NS, GW)] = gateway_spec()
    p = pod(inject(**{injection.ANNOTATION_STATUS: '{"gateway":"old"}'}))
    out = mutate(p, await h.review(p))
    assert json.loads(out["metadata"]["annotations"][injection.ANNOTATION_STATUS])["gateway"] == GW
    sidecar_of(out)


async def test_redis_tls_ca_is_mounted(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec(redis={"tls": {"enabled": True, "secretName": "redis-tls"}})
    out = mutate(pod(inject()), await h.review(pod(inject())))
    vols = {v["name"] for v in out["spec"]["volumes"]}
    assert {m["name"] for m in sidecar_of(out)["volumeMounts"]} <= vols


async def test_other_operations_and_resources_pass_untouched(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec()
    resp = await h.review(pod(inject()), operation="UPDATE")
    assert patch_of(resp) == [] and "warnings" not in resp


async def test_malformed_requests_get_400(h: Harness) -> None:
    for data in [b"not json", b"[1,2]", b'{"kind": "AdmissionReview"}']:
        async with h.session.post(h.url, data=data, ssl=h.client_ssl(),
                                  headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
    async with h.session.get(f"https://127.0.0.1:{h.server.port}/healthz", ssl=h.client_ssl()) as r:
        assert r.status == 200


async def test_plain_http_is_refused(h: Harness) -> None:
    try:
        async with h.session.get(f"http://127.0.0.1:{h.server.port}/healthz") as r:
            assert r.status == 400  # aiohttp answers garbage with 400 at most; never serves it
    except aiohttp.ClientError:
        pass


async def test_metrics_count_outcomes(h: Harness) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def counts() -> dict[str, float]:
        fam = {f.name: f for f in text_string_to_metric_families(body)}["llmgw_webhook_admissions"]
        return {s.labels["result"]: s.value for s in fam.samples if s.name.endswith("_total")}

    url = f"https://127.0.0.1:{h.server.port}/metrics"
    async with h.session.get(url, ssl=h.client_ssl()) as r:
        body = await r.text()
    before = counts()
    h.gateways.specs[(NS, GW)] = gateway_spec()
    await h.review(pod(inject()))
    await h.review(pod(inject("nope")))
    async with h.session.get(url, ssl=h.client_ssl()) as r:
        body = await r.text()
    after = counts()
    assert after["injected"] - before.get("injected", 0) == 1
    assert after["unknown-gateway"] - before.get("unknown-gateway", 0) == 1
    assert "llmgw_webhook_admission_duration_seconds_bucket" in body


async def test_port_clash_is_not_injected(h: Harness) -> None:
    h.gateways.specs[(NS, GW)] = gateway_spec()
    containers = [{"name": "app", "image": "app:1", "ports": [{"containerPort": 4000}]}]
    resp = await h.review(pod(inject(), containers=containers))
    assert patch_of(resp) == [] and "port 4000" in resp["warnings"][0]
    assert h.events.events[0][2] == "InjectionSkipped"
    h.gateways.specs[(NS, GW)] = gateway_spec(sidecar={"port": 4001})
    out = mutate(pod(inject(), containers=containers), await h.review(pod(inject(), containers=containers)))
    assert sidecar_of(out)["ports"][0]["containerPort"] == 4001


async def test_gateway_spec_the_operator_refuses_admits_uninjected(h: Harness) -> None:
    clash = [{"name": n, "provider": "openai", "baseUrl": "https://x.example/v1",
              "apiKeySecretRef": {"name": "k", "key": n}} for n in ("gpt-4o", "gpt.4o")]
    h.gateways.specs[(NS, GW)] = gateway_spec(models=clash)  # both map to one key variable
    resp = await h.review(pod(inject()))
    assert patch_of(resp) == [] and "injection failed" in resp["warnings"][0]
    assert h.events.events[0][2] == "InjectionFailed"

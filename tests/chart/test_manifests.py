"""manifests/install.yaml is the chart rendered by `make manifests`; every object in it is valid."""

from __future__ import annotations

import kubernetes_validate
import yaml

from llmgw_operator import render_manifests
from tests.chart.helpers import REPO, validate

INSTALL = REPO / "manifests" / "install.yaml"


def test_install_yaml_is_in_sync_with_the_chart() -> None:
    assert INSTALL.read_text() == render_manifests.render(), (
        "manifests/install.yaml is out of date: run `make manifests` and commit the result")


def test_install_yaml_objects_are_valid_and_ordered() -> None:
    docs = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace"
    crds = [i for i, k in enumerate(kinds) if k == "CustomResourceDefinition"]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"} >= {
        "llmgateways.llmgateway.dev", "clusterkopfpeerings.kopf.dev"}
    assert max(crds) < kinds.index("Deployment") < kinds.index("MutatingWebhookConfiguration")
    for d in docs:
        if d["kind"] != "CustomResourceDefinition":
            validate(d)
    # kubectl cannot keep a Helm-generated key: the install manifest must carry no private key at all.
    assert "PRIVATE KEY" not in INSTALL.read_text() and not [d for d in docs if d["kind"] == "Secret"]
    assert "Job" in kinds, "certificates come from the certgen Jobs"


def test_install_yaml_namespace_enforces_restricted_pod_security() -> None:
    ns = next(yaml.safe_load_all(INSTALL.read_text()))
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_demo_app_is_valid_and_injectable() -> None:
    """The demo app as the webhook would see it: its pod, patched for a mock gateway, is still a valid pod."""
    import jsonpatch

    from llmgw_operator import injection
    from llmgw_operator.crd import defaulted_spec

    demo = yaml.safe_load((REPO / "manifests" / "examples" / "demo-app.yaml").read_text())
    validate(demo)
    template = demo["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": "demo-app-7c9d-x2k4p"},
           "spec": template["spec"]}
    spec = defaulted_spec({"models": [{"name": "demo", "provider": "mock"}]})
    for native in (False, True):
        settings = injection.InjectionSettings(default_image="ghcr.io/llmgateway/sidecar:0.1.0",
                                               native_sidecars_supported=native)
        result = injection.build_patch(pod, "chat", spec, settings)
        assert result.injected and not result.warnings
        patched = jsonpatch.JsonPatch(result.patch).apply(pod)
        if native:  # native sidecars exist from 1.29 on; older servers get the plain container
            for version in ("1.29", kubernetes_validate.latest_version()):
                kubernetes_validate.validate(patched, version, strict=True)
        else:
            validate(patched)
    app = next(c for c in patched["spec"]["containers"] if c["name"] == "app")
    assert {"OPENAI_BASE_URL", "OPENAI_API_KEY", "LLMGW_URL"} <= {e["name"] for e in app["env"]}

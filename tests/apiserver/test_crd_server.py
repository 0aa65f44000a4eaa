"""The chart's CRDs on a real API server: accepted by server-side apply, defaults equal to the operator's own
defaulting, schema constraints refusing bad specs. (1.20 has no CEL: the rules are covered by
tests/operator/test_crd_defaults_cel.py and the Python twins.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from llmgw_operator.crd import CRD_NAME, GROUP, PLURAL, VERSION, defaulted_spec, openapi_schema
from tests.apiserver.conftest import MODES, Installed, crd_docs, example
from tests.operator.test_crd import BAD_SPECS

NS = "crd-check"


def _dry_run_create(installed: Installed, doc: dict[str, Any]) -> dict[str, Any]:
    return client.CustomObjectsApi(installed.server.client()).create_namespaced_custom_object(
        GROUP, VERSION, doc["metadata"]["namespace"], PLURAL, doc, dry_run="All")


def test_crds_are_accepted_by_server_side_apply_as_shipped(installed: Installed) -> None:
    ext = client.ApiextensionsV1Api(installed.server.client())
    names = {d["metadata"]["name"] for d in crd_docs()}
    assert names == {CRD_NAME, "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    live = installed.server.client().sanitize_for_serialization(ext.read_custom_resource_definition(CRD_NAME))
    served = next(v for v in live["spec"]["versions"] if v["name"] == VERSION)["schema"]["openAPIV3Schema"]
    # What the server stores is what we ship (1.20 drops only the CEL rules it does not know).
    assert served["properties"]["spec"]["properties"]["redis"]["default"] == \
        openapi_schema()["properties"]["spec"]["properties"]["redis"]["default"]
    assert "llmgw-install" in {m["manager"] for m in live["metadata"]["managedFields"]}


@pytest.mark.parametrize("mode", MODES)
def test_server_defaults_equal_the_operators_defaulting(installed: Installed, mode: str) -> None:
    installed.server.ensure_namespace(NS)
    doc = example(mode, NS)
    stored = _dry_run_create(installed, doc)
    assert stored["spec"] == defaulted_spec(doc["spec"]), json.dumps(stored["spec"], indent=1)


def test_a_minimal_spec_is_defaulted_alike(installed: Installed) -> None:
    installed.server.ensure_namespace(NS)
    doc = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LLMGateway", "metadata": {"name": "tiny", "namespace": NS},
           "spec": {"models": [{"name": "m", "provider": "mock"}]}}
    stored = _dry_run_create(installed, doc)["spec"]
    assert stored == defaulted_spec(doc["spec"])
    # No server default for the sidecar's pull policy: an unset field is how the chart-wide default reaches a gateway.
    assert "imagePullPolicy" not in stored["sidecar"]


@pytest.mark.parametrize(("bad", "where"), [(b, w) for b, w in BAD_SPECS if w != "scop"],
                         ids=[w for _b, w in BAD_SPECS if w != "scop"])
def test_schema_constraints_refuse_bad_specs(installed: Installed, bad: dict[str, Any], where: str) -> None:
    # (An unknown field is pruned, not refused, by a 1.20 server: strict field validation is 1.25+.)
    installed.server.ensure_namespace(NS)
    spec: dict[str, Any] = {"models": [{"name": "m", "provider": "mock"}], **bad}
    doc = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LLMGateway", "metadata": {"name": "bad", "namespace": NS},
           "spec": spec}
    with pytest.raises(ApiException) as err:
        _dry_run_create(installed, doc)
    assert err.value.status == 422, err.value.body
    assert where in json.loads(err.value.body)["message"], err.value.body

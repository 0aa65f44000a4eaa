"""apply.py's server-side apply against a real API server, in-process (no operator running): objects an earlier
operator wrote with create + merge patch are adopted, so a field removed from the spec also disappears from them."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from llmgw_operator.apply import FIELD_MANAGER, LEGACY_MANAGERS, Applier, _hashed, owner_reference
from llmgw_operator.builders import Gateway, build_all
from llmgw_operator.crd import defaulted_spec
from llmgw_operator.reconcile import Reconciler
from tests.apiserver.conftest import Installed, example, secrets_for

NS = "legacy"
TOLERATION = {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}


def _managers(obj: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m["manager"], m["operation"]) for m in obj["metadata"].get("managedFields") or []}


def test_objects_written_by_an_older_operator_are_adopted_and_lose_removed_fields(installed: Installed) -> None:
    server, api = installed.server, installed.server.client()
    apps = client.AppsV1Api(api)
    server.ensure_namespace(NS)
    secrets_for(server, NS)
    doc = example("standalone", NS, "old")
    doc["spec"]["redis"]["tolerations"] = [TOLERATION]
    live = server.apply(doc, "kubectl")

    # What the previous operator version did: create the rendered object without a field manager (the client's user
    # agent names it), then merge patches. (1.20 does not know the retention policy field: left out here.)
    gw = Gateway.from_spec("old", NS, defaulted_spec(doc["spec"]))
    sts = next(m for m in build_all(gw, "pw") if m["kind"] == "StatefulSet")
    body, _ = _hashed(sts, owner_reference(live))
    body["spec"].pop("persistentVolumeClaimRetentionPolicy", None)
    created = api.sanitize_for_serialization(apps.create_namespaced_stateful_set(NS, body))
    assert _managers(created) & {(m, "Update") for m in LEGACY_MANAGERS}, _managers(created)
    assert created["spec"]["template"]["spec"]["tolerations"] == [TOLERATION]

    # The user removes the toleration; the new operator's pass applies the spec without it.
    del doc["spec"]["redis"]["tolerations"]
    live = server.apply(doc, "kubectl")
    result = Reconciler(Applier(api)).reconcile(live, read_spend=False)
    assert result.applied.get("StatefulSet/old-redis") == "patched", [c["message"] for c in result.status["conditions"]]

    now = api.sanitize_for_serialization(apps.read_namespaced_stateful_set("old-redis", NS))
    assert not now["spec"]["template"]["spec"].get("tolerations"), now["spec"]["template"]["spec"]
    assert (FIELD_MANAGER, "Apply") in _managers(now)
    assert not _managers(now) & {(m, "Update") for m in LEGACY_MANAGERS}, _managers(now)
    # And the next pass writes nothing.
    again = Reconciler(Applier(api)).reconcile(live, read_spend=False)
    assert again.applied["StatefulSet/old-redis"] == "unchanged", again.applied

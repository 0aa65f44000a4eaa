"""The operator's ClusterRole grants exactly the API calls the operator makes: nothing missing, nothing extra."""

from __future__ import annotations

import yaml

from llmgw_operator import apply, webhook
from tests.chart.helpers import CHART, one, render

# Calls kopf itself makes (not visible in our code): the watched resource, resource discovery (CRDs appearing
# later, e.g. the peering CRD), namespace observation when watchNamespaces holds patterns, peering keep-alives, and the
# events kopf posts about handler progress and errors (core/v1).
KOPF_CALLS = [
    # The resource the handlers are registered for (handlers.py): kopf lists and watches it and patches finalizers
    # and its progress annotations onto it.
    ("llmgateway.dev", "llmgateways", "list"),
    ("llmgateway.dev", "llmgateways", "watch"),
    ("llmgateway.dev", "llmgateways", "patch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("kopf.dev", "clusterkopfpeerings", "get"),
    ("kopf.dev", "clusterkopfpeerings", "list"),
    ("kopf.dev", "clusterkopfpeerings", "watch"),
    ("kopf.dev", "clusterkopfpeerings", "patch"),
    ("", "events", "create"),
]


def granted(rules: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        assert "resourceNames" not in rule, "names are per gateway: no static resourceNames for the operator"
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def needed() -> set[tuple[str, str, str]]:
    calls = {tuple(c) for c in [*apply.API_CALLS, *webhook.API_CALLS, *KOPF_CALLS]}
    for group, resource, verb in calls:
        assert verb in {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}, verb
        assert resource and resource == resource.lower(), resource
        assert group == group.lower()
    return calls


def test_cluster_role_covers_every_call_and_nothing_else() -> None:
    rules = one(render(), "ClusterRole")["rules"]
    have, want = granted(rules), needed()
    assert not want - have, f"API calls without RBAC: {sorted(want - have)}"
    assert not have - want, f"RBAC nobody uses (least privilege): {sorted(have - want)}"


def test_rules_file_is_what_the_template_renders() -> None:
    rules = yaml.safe_load((CHART / "files" / "operator-rules.yaml").read_text())
    assert one(render(), "ClusterRole")["rules"] == rules


def test_secrets_are_never_listed_cluster_wide_by_the_webhook() -> None:
    assert not [c for c in webhook.API_CALLS if c[1] == "secrets"], "the webhook only references Secrets by name"

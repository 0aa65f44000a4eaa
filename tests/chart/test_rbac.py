"""The operator's ClusterRole grants exactly the API calls the operator makes: nothing missing, nothing extra."""

from __future__ import annotations

import yaml

from llmgw_operator import apply, webhook
from tests.chart.helpers import CHART, by_kind, one, render

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
    # With watchNamespaces kopf keeps its peering in a KopfPeering per namespace (the operator reads it at start).
    ("kopf.dev", "kopfpeerings", "get"),
    ("kopf.dev", "kopfpeerings", "list"),
    ("kopf.dev", "kopfpeerings", "watch"),
    ("kopf.dev", "kopfpeerings", "patch"),
    ("", "events", "create"),
]


def operator_role(docs: list[dict] | None = None) -> dict:
    roles = [r for r in by_kind(docs or render(), "ClusterRole")
             if not r["metadata"]["name"].endswith(("-gateway", "-certgen"))]
    assert len(roles) == 1, [r["metadata"]["name"] for r in roles]
    return roles[0]


def gateway_role(docs: list[dict] | None = None) -> dict:
    return next(r for r in by_kind(docs or render(), "ClusterRole") if r["metadata"]["name"].endswith("-gateway"))


def named_rules(rules: list[dict]) -> list[dict]:
    """The rules about the gateway ClusterRole (by name): bind it, read it."""
    return [r for r in rules if "resourceNames" in r]


def granted(rules: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        if rule in named_rules(rules):
            # checked by test_operator_may_bind_and_read_only_the_gateway_role; `bind` is no API call
            out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
                    if v != "bind"}
            continue
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
    rules = operator_role()["rules"]
    have, want = granted(rules), needed()
    assert not want - have, f"API calls without RBAC: {sorted(want - have)}"
    assert not have - want, f"RBAC nobody uses (least privilege): {sorted(have - want)}"


def test_rules_file_is_what_the_template_renders() -> None:
    rules = yaml.safe_load((CHART / "files" / "operator-rules.yaml").read_text())
    rendered = operator_role()["rules"]
    assert [r for r in rendered if r not in named_rules(rendered)] == rules
    assert not [r for r in rules if "resourceNames" in r], "names are per gateway: no static resourceNames"


def test_operator_may_bind_and_read_only_the_gateway_role() -> None:
    docs = render()
    name = gateway_role(docs)["metadata"]["name"]
    assert named_rules(operator_role(docs)["rules"]) == [
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": [verb],
         "resourceNames": [name]} for verb in ("bind", "get")]
    # The operator is told the same name (it binds it to each shared gateway's ServiceAccount).
    env = {e["name"]: e.get("value") for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LLMGW_GATEWAY_CLUSTER_ROLE"] == gateway_role(docs)["metadata"]["name"]


def test_gateway_service_account_may_review_tokens_and_read_no_secrets() -> None:
    rules = gateway_role()["rules"]
    have = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert have == {("authentication.k8s.io", "tokenreviews", "create"), ("", "namespaces", "get")}


def test_secrets_are_never_listed_cluster_wide_by_the_webhook() -> None:
    assert not [c for c in webhook.API_CALLS if c[1] == "secrets"], "the webhook only references Secrets by name"

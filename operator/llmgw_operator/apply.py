"""The only module that talks to the Kubernetes API (kopf's own watching and event posting aside).

Create-or-patch with a content hash: each object we write carries `llmgateway.dev/applied-hash`, the hash of what we
rendered. Equal hash -> no write at all, so a second reconcile makes no API writes (and no rollouts). The API server's
defaulting of fields we never set does not matter, and values it normalises ("0.5" CPU -> "500m") cannot cause
endless patching. Patches are JSON merge patches of the whole rendered object: lists we own are replaced as a whole.

Every call is listed in API_CALLS as (group, resource, verb); the chart's ClusterRole is tested against that list.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from .builders.common import MANAGED_BY, Manifest, content_hash
from .builders.gateway import GATEWAY_NS_LABEL
from .crd import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

HASH_ANNOTATION = "llmgateway.dev/applied-hash"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Kind:
    group: str
    resource: str
    api: Callable[[client.ApiClient], Any]
    suffix: str  # e.g. "config_map" in read_namespaced_config_map
    create_only: bool = False  # never patched (the generated password must not change)
    prunable: bool = True
    namespaced: bool = True  # cluster-scoped children cannot be owned by a gateway: pruned by their labels


KINDS: dict[str, Kind] = {
    "Secret": Kind("", "secrets", client.CoreV1Api, "secret", create_only=True, prunable=False),
    "ConfigMap": Kind("", "configmaps", client.CoreV1Api, "config_map"),
    "Service": Kind("", "services", client.CoreV1Api, "service"),
    "StatefulSet": Kind("apps", "statefulsets", client.AppsV1Api, "stateful_set"),
    "PodDisruptionBudget": Kind("policy", "poddisruptionbudgets", client.PolicyV1Api, "pod_disruption_budget"),
    # The shared gateway (builders/gateway.py).
    "ServiceAccount": Kind("", "serviceaccounts", client.CoreV1Api, "service_account"),
    "Deployment": Kind("apps", "deployments", client.AppsV1Api, "deployment"),
    "NetworkPolicy": Kind("networking.k8s.io", "networkpolicies", client.NetworkingV1Api, "network_policy"),
    "HorizontalPodAutoscaler": Kind("autoscaling", "horizontalpodautoscalers", client.AutoscalingV2Api,
                                    "horizontal_pod_autoscaler"),
    "ClusterRoleBinding": Kind("rbac.authorization.k8s.io", "clusterrolebindings", client.RbacAuthorizationV1Api,
                               "cluster_role_binding", namespaced=False),
}


def _calls() -> list[tuple[str, str, str]]:
    calls = []
    for k in KINDS.values():
        calls += [(k.group, k.resource, "get"), (k.group, k.resource, "create")]
        if not k.create_only:
            calls.append((k.group, k.resource, "patch"))
        if k.prunable:
            calls += [(k.group, k.resource, "list"), (k.group, k.resource, "delete")]
    calls.append((GROUP, f"{PLURAL}/status", "patch"))
    calls.append(("", "secrets", "list"))  # virtual-key Secrets of a shared gateway, by label, in its namespace
    calls.append((GROUP, PLURAL, "get"))  # does the gateway of a cluster-scoped child still exist?
    return calls


API_CALLS: list[tuple[str, str, str]] = _calls()


class ApplyError(RuntimeError):
    """The API refused a write (e.g. 422 on an immutable StatefulSet field). `reason` goes into the condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    md = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", f"{GROUP}/{VERSION}"),
        "kind": owner.get("kind", "LLMGateway"),
        "name": md["name"],
        "uid": md["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _hashed(manifest: Manifest, owner_ref: dict[str, Any]) -> tuple[Manifest, str]:
    refs = [owner_ref] if KINDS[manifest["kind"]].namespaced else []  # a namespaced owner is invalid on these
    body = {**manifest, "metadata": {**manifest["metadata"], **({"ownerReferences": refs} if refs else {})}}
    digest = content_hash(body)
    body["metadata"]["annotations"] = {**body["metadata"].get("annotations", {}), HASH_ANNOTATION: digest}
    return body, digest


class Applier:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)

    def _api(self, kind: str) -> tuple[Kind, Any]:
        k = KINDS[kind]
        return k, k.api(self.api_client)

    def _plain(self, obj: Any) -> dict[str, Any]:
        return self.api_client.sanitize_for_serialization(obj)

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        k, api = self._api(kind)
        try:
            if not k.namespaced:
                return self._plain(getattr(api, f"read_{k.suffix}")(name))
            return self._plain(getattr(api, f"read_namespaced_{k.suffix}")(name, namespace))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def ensure(self, manifest: Manifest, owner_ref: dict[str, Any]) -> str:
        """Create or patch one object. Returns "created", "patched" or "unchanged"."""
        kind, ns, name = manifest["kind"], manifest["metadata"].get("namespace", ""), manifest["metadata"]["name"]
        k, api = self._api(kind)
        body, digest = _hashed(manifest, owner_ref)
        existing = self.read(kind, ns, name)
        try:
            if existing is None:
                if k.namespaced:
                    getattr(api, f"create_namespaced_{k.suffix}")(ns, body)
                else:
                    getattr(api, f"create_{k.suffix}")(body)
                return "created"
            if k.create_only:
                return "unchanged"
            if (existing["metadata"].get("annotations") or {}).get(HASH_ANNOTATION) == digest:
                return "unchanged"
            if kind == "StatefulSet":
                body = _statefulset_patch(body, existing)
            if k.namespaced:
                getattr(api, f"patch_namespaced_{k.suffix}")(name, ns, body, _content_type=MERGE_PATCH)
            else:
                getattr(api, f"patch_{k.suffix}")(name, body, _content_type=MERGE_PATCH)
            return "patched"
        except ApiException as e:
            if e.status == 409 and existing is None:
                return "unchanged"  # created concurrently (a replayed watch event, another pass): next pass patches
            raise ApplyError(_reason(e), f"{kind} {ns}/{name}: {e.status} {_message(e)}") from None

    def prune(self, namespace: str, gateway: str, owner_uid: str, keep: set[tuple[str, str]]) -> list[str]:
        """Delete our children of this gateway that the spec no longer asks for (e.g. a PDB that was disabled).
        Only objects with our managed-by label AND an ownerReference to this gateway's uid are candidates."""
        deleted = []
        selector = f"llmgateway.dev/gateway={gateway},app.kubernetes.io/managed-by={MANAGED_BY}"
        for kind, k in KINDS.items():
            if not k.prunable:
                continue
            if not k.namespaced:
                deleted += self._prune_cluster_scoped(kind, k, namespace, gateway, keep)
                continue
            api = k.api(self.api_client)
            try:
                items = self._plain(getattr(api, f"list_namespaced_{k.suffix}")(namespace, label_selector=selector))
            except ApiException as e:
                if e.status == 404:
                    continue  # this API version is not served here (e.g. autoscaling/v2 before 1.23): nothing of ours
                raise
            for obj in items.get("items") or []:
                md = obj["metadata"]
                labels = md.get("labels") or {}
                if labels.get("llmgateway.dev/gateway") != gateway or labels.get("app.kubernetes.io/managed-by") \
                        != MANAGED_BY:
                    continue  # selectors may be ignored by test doubles: check again here
                if not any(r.get("uid") == owner_uid for r in md.get("ownerReferences") or []):
                    continue
                if (kind, md["name"]) in keep:
                    continue
                getattr(api, f"delete_namespaced_{k.suffix}")(md["name"], namespace)
                deleted.append(f"{kind}/{md['name']}")
        return deleted

    def _prune_cluster_scoped(self, kind: str, k: Kind, namespace: str, gateway: str,
                              keep: set[tuple[str, str]]) -> list[str]:
        """Cluster-scoped children (the gateway's ClusterRoleBinding) carry the gateway's namespace and name as labels.
        Deleted when this gateway no longer wants them, and when their gateway is gone (no ownerReference can
        do that for them), whichever gateway's pass notices first."""
        api = k.api(self.api_client)
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY},{GATEWAY_NS_LABEL}"
        items = self._plain(getattr(api, f"list_{k.suffix}")(label_selector=selector))
        deleted = []
        for obj in items.get("items") or []:
            md = obj["metadata"]
            labels = md.get("labels") or {}
            owner_ns, owner = labels.get(GATEWAY_NS_LABEL), labels.get("llmgateway.dev/gateway")
            if labels.get("app.kubernetes.io/managed-by") != MANAGED_BY or not owner_ns or not owner:
                continue
            if (owner_ns, owner) == (namespace, gateway):
                gone = (kind, md["name"]) not in keep
            else:
                gone = not self._gateway_exists(owner_ns, owner)
            if gone:
                getattr(api, f"delete_{k.suffix}")(md["name"])
                deleted.append(f"{kind}/{md['name']}")
        return deleted

    def _gateway_exists(self, namespace: str, name: str) -> bool:
        try:
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def secret_names(self, namespace: str, label_selector: str) -> list[str]:
        """Names of the Secrets with these labels (virtual keys of a shared gateway); values are never read here."""
        items = self._plain(client.CoreV1Api(self.api_client).list_namespaced_secret(
            namespace, label_selector=label_selector))
        return sorted(i["metadata"]["name"] for i in items.get("items") or [])

    def deployment_readiness(self, namespace: str, name: str) -> tuple[int, int] | None:
        dep = self.read("Deployment", namespace, name)
        if dep is None:
            return None
        status = dep.get("status") or {}
        desired = status.get("replicas") if status.get("replicas") is not None else (dep.get("spec") or {}).get(
            "replicas", 1)
        return int(status.get("readyReplicas") or 0), int(desired or 0)

    def secret_value(self, namespace: str, name: str, key: str) -> tuple[bool, str | None]:
        """(Secret exists, base64-decoded value of key or None)."""
        secret = self.read("Secret", namespace, name)
        if secret is None:
            return False, None
        raw = (secret.get("data") or {}).get(key)
        if raw is None:
            string_data = (secret.get("stringData") or {}).get(key)
            return True, string_data
        return True, base64.b64decode(raw).decode(errors="replace")

    def statefulset_readiness(self, namespace: str, name: str) -> tuple[int, int] | None:
        sts = self.read("StatefulSet", namespace, name)
        if sts is None:
            return None
        desired = (sts.get("spec") or {}).get("replicas", 1)
        ready = (sts.get("status") or {}).get("readyReplicas") or 0
        return int(ready), int(desired)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _content_type=MERGE_PATCH
        )


# StatefulSet fields the API server refuses to change after creation.
STS_IMMUTABLE = ("selector", "serviceName", "podManagementPolicy", "volumeClaimTemplates")


def _claims(spec: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """What matters of each volume claim template, ignoring what the API server fills in (status, volumeMode)."""
    out = {}
    for c in spec.get("volumeClaimTemplates") or []:
        s = c.get("spec") or {}
        out[c["metadata"]["name"]] = (s.get("resources", {}).get("requests", {}).get("storage"),
                                      s.get("storageClassName"), tuple(s.get("accessModes") or ()))
    return out


def _statefulset_patch(body: Manifest, existing: dict[str, Any]) -> Manifest:
    """The patch without the immutable fields, or ApplyError naming the change that would need a recreate.

    Sending unchanged immutable fields back would be refused whenever the server's defaulted copy differs from
    ours; sending changed ones is always refused. So: compare what matters, and leave them out of the patch."""
    want, have = body["spec"], existing.get("spec") or {}
    changes = []
    if _claims(want) != _claims(have):
        changes.append(f"volumeClaimTemplates {_claims(have)} -> {_claims(want)}")
    for f in ("serviceName", "podManagementPolicy"):
        if f in have and want.get(f) != have.get(f):
            changes.append(f"{f} {have.get(f)!r} -> {want.get(f)!r}")
    if (want.get("selector") or {}).get("matchLabels") != (have.get("selector") or {}).get("matchLabels"):
        changes.append("selector")
    if changes:
        name = body["metadata"]["name"]
        raise ApplyError("ImmutableFieldChanged",
                         f"StatefulSet {name}: cannot change {'; '.join(changes)} in place. Expand the PVCs if "
                         f"needed, then `kubectl delete statefulset {name} --cascade=orphan`; the operator recreates "
                         "it (docs/operations.md, Upgrades)")
    return {**body, "spec": {k: v for k, v in want.items() if k not in STS_IMMUTABLE}}


def _message(e: ApiException) -> str:
    try:
        return json.loads(e.body or "{}").get("message") or str(e.reason)
    except ValueError:
        return str(e.reason)


def _reason(e: ApiException) -> str:
    return {422: "InvalidObject", 403: "Forbidden", 409: "Conflict"}.get(e.status or 0, "ApplyFailed")

"""The only module that talks to the Kubernetes API (kopf's own watching and event posting aside).

Server-side apply with our own field manager (`llmgateway-operator`) for every object a gateway owns: the API server
records which fields we set, so a field the operator no longer renders (a removed nodeSelector, toleration or
topology spread constraint) is removed from the live object, and fields of other managers are left alone.

A write happens only when needed: each object carries `llmgateway.dev/applied-hash` (the hash of what we rendered),
and we apply when that hash differs OR when a field we render has drifted on the live object (someone edited it).
An object in sync costs one GET and no write, so a second reconcile causes no rollouts. What counts as drift (and
which StatefulSet changes cannot be applied in place) is decided by drift.py.

Every call has a timeout (REQUEST_TIMEOUT) and is listed in API_CALLS as (group, resource, verb); the chart's
ClusterRole is tested against that list (server-side apply is the `patch` verb).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from .builders.gateway import GATEWAY_NS_LABEL
from .builders.meta import MANAGED_BY, Manifest, content_hash
from .crd import GROUP, PLURAL, VERSION
from .drift import drifted, immutable_changes

log = logging.getLogger(__name__)

HASH_ANNOTATION = "llmgateway.dev/applied-hash"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
FIELD_MANAGER = "llmgateway-operator"
# Field managers of earlier operator versions (create + merge patch; the client's user agent names the manager).
LEGACY_MANAGERS = frozenset({"OpenAPI-Generator", "llmgw-operator"})
# (connect, read) seconds for every API call: a stuck connection must fail a pass, not hang a worker forever.
REQUEST_TIMEOUT = (5.0, 30.0)


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
    calls.append(("rbac.authorization.k8s.io", "clusterroles", "get"))  # the gateway role: owner of the bindings
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
        # Fields (paths) per kind the API server said it does not know; left out of every later apply.
        self._undeclared: dict[str, set[tuple[str, ...]]] = {}
        self._unowned_roles: set[str] = set()  # ClusterRoles already warned about (cluster_role_owner)

    def _api(self, kind: str) -> tuple[Kind, Any]:
        k = KINDS[kind]
        return k, k.api(self.api_client)

    def _plain(self, obj: Any) -> dict[str, Any]:
        plain: dict[str, Any] = self.api_client.sanitize_for_serialization(obj)
        return plain

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        k, api = self._api(kind)
        try:
            if not k.namespaced:
                return self._plain(getattr(api, f"read_{k.suffix}")(name, _request_timeout=REQUEST_TIMEOUT))
            return self._plain(getattr(api, f"read_namespaced_{k.suffix}")(name, namespace,
                                                                           _request_timeout=REQUEST_TIMEOUT))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def ensure(self, manifest: Manifest, owner_ref: dict[str, Any]) -> str:
        """Apply one object if it is missing, changed or drifted. Returns "created", "patched" or "unchanged"."""
        kind, ns, name = manifest["kind"], manifest["metadata"].get("namespace", ""), manifest["metadata"]["name"]
        k, api = self._api(kind)
        existing = self.read(kind, ns, name)
        for _attempt in range(2):
            left_out = set(self._undeclared.get(kind, set()))  # a snapshot: passes run in parallel threads
            body, digest = _hashed(_without(manifest, left_out), owner_ref)
            try:
                return self._ensure(k, api, body, digest, existing)
            except ApiException as e:
                if e.status == 409 and existing is None and k.create_only:
                    return "unchanged"  # created concurrently (a replayed watch event, another pass)
                undeclared = _undeclared_fields(e) - left_out
                if not undeclared:
                    raise ApplyError(_reason(e), f"{kind} {ns}/{name}: {e.status} {_message(e)}") from None
                # An older API server does not know a field we render (1.20: persistentVolumeClaimRetentionPolicy):
                # any other write would drop it silently, server-side apply refuses. Leave it out from now on.
                log.warning("%s: the API server does not know %s; applying without", kind, ", ".join(sorted(
                    ".".join(p) for p in undeclared)))
                self._undeclared.setdefault(kind, set()).update(undeclared)
                existing = self.read(kind, ns, name)  # the first attempt may have changed it (legacy adoption)
        raise AssertionError("unreachable")  # the second attempt returns or raises

    def _ensure(self, k: Kind, api: Any, body: Manifest, digest: str, existing: dict[str, Any] | None) -> str:
        ns, name = body["metadata"].get("namespace", ""), body["metadata"]["name"]
        where = (ns,) if k.namespaced else ()  # positional namespace argument of the client's namespaced calls
        scope = "namespaced_" if k.namespaced else ""
        if k.create_only:
            # Created once and never written again (a generated password must not change): a plain create.
            if existing is not None:
                return "unchanged"
            getattr(api, f"create_{scope}{k.suffix}")(*where, body, field_manager=FIELD_MANAGER,
                                                      _request_timeout=REQUEST_TIMEOUT)
            return "created"
        if existing is not None and (existing["metadata"].get("annotations") or {}).get(HASH_ANNOTATION) \
                == digest and not drifted(body, existing):
            return "unchanged"
        if body["kind"] == "StatefulSet" and existing is not None:
            _check_statefulset_immutables(body, existing)
        if existing is not None:
            self._adopt_legacy_fields(k, api, existing)
        getattr(api, f"patch_{scope}{k.suffix}")(name, *where, body, field_manager=FIELD_MANAGER, force=True,
                                                 _content_type=APPLY_PATCH, _request_timeout=REQUEST_TIMEOUT)
        return "created" if existing is None else "patched"

    def _adopt_legacy_fields(self, k: Kind, api: Any, existing: dict[str, Any]) -> None:
        """Objects written by an earlier operator (create + merge patch) have their fields owned by an Update
        manager: apply would never remove them. Hand that entry to our apply manager first (what kubectl's
        client-side-to-server-side apply upgrade does), so the next apply owns, and can remove, those fields."""
        md = existing["metadata"]
        entries = md.get("managedFields") or []
        if any(e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply" for e in entries):
            return
        legacy = [i for i, e in enumerate(entries) if e.get("manager") in LEGACY_MANAGERS
                  and e.get("operation") == "Update" and not e.get("subresource")]
        if not legacy:
            return
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion",
                                      "value": md["resourceVersion"]}]
        for i in legacy[:1]:  # one entry becomes ours; an object has one legacy entry in practice
            ops += [{"op": "replace", "path": f"/metadata/managedFields/{i}/manager", "value": FIELD_MANAGER},
                    {"op": "replace", "path": f"/metadata/managedFields/{i}/operation", "value": "Apply"}]
        where = (md["namespace"],) if k.namespaced else ()
        getattr(api, f"patch_{'namespaced_' if k.namespaced else ''}{k.suffix}")(
            md["name"], *where, ops, _content_type=JSON_PATCH, _request_timeout=REQUEST_TIMEOUT)

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
                items = self._plain(getattr(api, f"list_namespaced_{k.suffix}")(
                    namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT))
            except ApiException as e:
                if e.status == 404:  # the server does not serve this kind (e.g. policy/v1 before 1.21): none to prune
                    continue
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
                _delete(getattr(api, f"delete_namespaced_{k.suffix}"), md["name"], namespace)
                deleted.append(f"{kind}/{md['name']}")
        return deleted

    def release_cluster_scoped(self, namespace: str | None = None, gateway: str | None = None) -> list[str]:
        """Delete the cluster-scoped children of a gateway that is going away (its deletion handler: no owner
        reference can do it), and every one whose gateway is already gone. Without a gateway: the orphan sweep the
        operator runs at start (bindings of gateways deleted while no operator ran)."""
        deleted = []
        for kind, k in KINDS.items():
            if k.prunable and not k.namespaced:
                deleted += self._prune_cluster_scoped(kind, k, namespace or "", gateway or "", set(),
                                                      releasing=True)
        return deleted

    def _prune_cluster_scoped(self, kind: str, k: Kind, namespace: str, gateway: str,
                              keep: set[tuple[str, str]], releasing: bool = False) -> list[str]:
        """Cluster-scoped children (the gateway's ClusterRoleBinding) carry the gateway's namespace and name as labels.
        Deleted when this gateway no longer wants them or is being deleted (`releasing`), and when their gateway is
        gone, whichever pass notices first."""
        api = k.api(self.api_client)
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY},{GATEWAY_NS_LABEL}"
        items = self._plain(getattr(api, f"list_{k.suffix}")(label_selector=selector,
                                                             _request_timeout=REQUEST_TIMEOUT))
        deleted = []
        for obj in items.get("items") or []:
            md = obj["metadata"]
            labels = md.get("labels") or {}
            owner_ns, owner = labels.get(GATEWAY_NS_LABEL), labels.get("llmgateway.dev/gateway")
            if labels.get("app.kubernetes.io/managed-by") != MANAGED_BY or not owner_ns or not owner:
                continue
            if (owner_ns, owner) == (namespace, gateway):
                gone = releasing or (kind, md["name"]) not in keep
            else:
                gone = not self._gateway_exists(owner_ns, owner)
            if gone:
                try:
                    _delete(getattr(api, f"delete_{k.suffix}"), md["name"])
                except ApiException as e:
                    if e.status != 404:  # 404: another replica or pass was first
                        raise
                deleted.append(f"{kind}/{md['name']}")
        return deleted

    def _gateway_exists(self, namespace: str, name: str) -> bool:
        try:
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                     _request_timeout=REQUEST_TIMEOUT)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def cluster_role_owner(self, name: str) -> dict[str, Any] | None:
        """An owner reference to the chart's gateway ClusterRole (cluster-scoped, so it may own the cluster-scoped
        bindings no gateway can own): deleting the role, as `helm uninstall` does, deletes them. None when the role
        cannot be read (missing, or RBAC made by hand without `get` on it): the bindings then have no owner."""
        try:
            role = client.RbacAuthorizationV1Api(self.api_client).read_cluster_role(
                name, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as e:
            if e.status in (403, 404):
                if name not in self._unowned_roles:
                    self._unowned_roles.add(name)
                    log.warning("ClusterRole %s cannot be read (HTTP %s): gateway bindings get no owner", name,
                                e.status)
                return None
            raise
        self._unowned_roles.discard(name)
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": name,
                "uid": role.metadata.uid}

    def secret_names(self, namespace: str, label_selector: str) -> list[str]:
        """Names of the Secrets with these labels (virtual keys of a shared gateway); values are never read here."""
        items = self._plain(client.CoreV1Api(self.api_client).list_namespaced_secret(
            namespace, label_selector=label_selector, _request_timeout=REQUEST_TIMEOUT))
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
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}, _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT,
        )


def _delete(method: Any, *args: str) -> None:
    """A delete, its answer not read into a model (an older server, 1.20 here, answers a Service's deletion with a
    Status, which the client's V1Service refuses after the fact). Error statuses still raise ApiException; reading
    frees the connection."""
    method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT).data  # noqa: B018


def _check_statefulset_immutables(body: Manifest, existing: dict[str, Any]) -> None:
    """ApplyError naming a change of a field the API server refuses to change in place (it would refuse the whole
    apply, which is less clear). Unchanged immutable fields are applied as they are: the server sees no change."""
    changes = immutable_changes(body, existing)
    if changes:
        name = body["metadata"]["name"]
        raise ApplyError("ImmutableFieldChanged",
                         f"StatefulSet {name}: cannot change {'; '.join(changes)} in place. Expand the PVCs if "
                         f"needed, then `kubectl delete statefulset {name} --cascade=orphan`; the operator recreates "
                         "it (docs/operations.md, Upgrades)")


_UNDECLARED = re.compile(r"(\.[A-Za-z0-9_.]+): field not declared in schema")


def _undeclared_fields(e: ApiException) -> set[tuple[str, ...]]:
    """Plain paths from server-side apply's "field not declared in schema" refusals (list items: not handled)."""
    if e.status not in (400, 422, 500):
        return set()
    return {tuple(m.group(1).strip(".").split(".")) for m in _UNDECLARED.finditer(_message(e))}


def _without(manifest: Manifest, paths: set[tuple[str, ...]]) -> Manifest:
    if not paths:
        return manifest
    out = copy.deepcopy(manifest)
    for path in paths:
        node: Any = out
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def _message(e: ApiException) -> str:
    try:
        return json.loads(e.body or "{}").get("message") or str(e.reason)
    except ValueError:
        return str(e.reason)


def _reason(e: ApiException) -> str:
    return {422: "InvalidObject", 403: "Forbidden", 409: "Conflict"}.get(e.status or 0, "ApplyFailed")

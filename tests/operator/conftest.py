"""The operator against kmock's Kubernetes emulator: kopf in its own thread and loop, a fresh registry per test.

The stock emulator lacks uid/resourceVersion/generation and conflict handling; `Emulator` adds them, because the
operator relies on them (owner references need the uid, observedGeneration needs the generation).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import kmock
import kopf
import kubernetes_validate.utils
import pytest
from kubernetes import client

from llmgw_operator.crd import GROUP, PLURAL, VERSION
from llmgw_operator.handlers import HandlerSettings, register
from llmgw_operator.reconcile import Settings

# kubernetes-validate re-reads and re-parses its (large) JSON schema files on every call; they never change, so a
# cache makes strict validation of hundreds of manifests take seconds instead of minutes. Validation is unchanged.
kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)

NS = "team-a"
GW_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"


class Emulator(kmock.KubernetesEmulator):
    """Adds what kopf and our operator need: uid, resourceVersion, generation (bumped on spec changes), and names
    from generateName."""

    _rv: int = 0

    async def _handle(self, request: kmock.Request) -> Any:
        if request.action == kmock.action.UPDATE and request.name is not None and \
                request.headers.get("Content-Type", "").startswith("application/apply-patch"):
            self._server_side_apply(request)
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            Emulator._rv += 1
            md = data.setdefault("metadata", {}) if request.action == kmock.action.CREATE else data.get("metadata")
            if request.action == kmock.action.CREATE:
                if not md.get("name") and md.get("generateName"):
                    # As the API server does (kopf names its Events this way); the stock emulator keys them all None.
                    md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
                md.setdefault("uid", str(uuid.uuid4()))
                md.setdefault("generation", 1)
                md.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                md["resourceVersion"] = str(Emulator._rv)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                if key in self.objects and not self.objects[key].deleted:
                    cur = self.objects[key].raw
                    meta = data.setdefault("metadata", {})
                    meta["resourceVersion"] = str(Emulator._rv)
                    if "spec" in data and data["spec"] != cur.get("spec") and request.subresource != "status":
                        meta["generation"] = int(cur.get("metadata", {}).get("generation", 1)) + 1
        return await super()._handle(request)

    def _server_side_apply(self, request: kmock.Request) -> None:
        """Server-side apply, approximated for objects with one writer (the operator): a missing object is created;
        an existing one gets what was applied, and loses what it held but the apply no longer names (in metadata
        only labels, annotations and owner references: the rest is the server's).

        The request is rewritten in place (kmock matches reactions by request identity, so no copy)."""
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            _rewrite(request, action=kmock.action.CREATE, method=kmock.method.POST, name=None)
            return
        cur = self.objects[key].raw
        patch: dict[str, Any] = {k: _replacing(cur.get(k), v) for k, v in request.data.items() if k != "metadata"}
        patch.update({k: None for k in cur if k not in request.data and k not in ("metadata", "status")})
        md = request.data.get("metadata") or {}
        patch["metadata"] = {k: _replacing((cur.get("metadata") or {}).get(k), md.get(k))
                             for k in ("labels", "annotations", "ownerReferences")}
        _rewrite(request, data=patch)


def _rewrite(request: kmock.Request, **fields: Any) -> None:
    for k, v in fields.items():
        object.__setattr__(request, k, v)  # a frozen attrs class: the one way to change it in place


def _replacing(cur: Any, new: Any) -> Any:
    """A merge patch that turns cur into new (keys only cur has become null)."""
    if isinstance(cur, dict) and isinstance(new, dict):
        return {**{k: None for k in cur if k not in new}, **{k: _replacing(cur.get(k), v) for k, v in new.items()}}
    return new


@dataclass
class Cluster:
    k8s: Emulator
    url: str
    api: client.ApiClient
    # host:port the operator dials -> where it really is (a local Redis process standing in for a pod).
    dial: dict[str, str] = field(default_factory=dict)

    def objects(self, plural: str, group_version: str = "v1") -> dict[str, dict[str, Any]]:
        out = {}
        for (res, ns, name), obj in self.k8s.objects.items():
            if res.plural == plural and f"{res.group}/{res.version}".strip("/") == group_version and ns == NS \
                    and not obj.deleted:
                out[name] = obj.raw
        return out

    def gateway(self, name: str) -> dict[str, Any] | None:
        return self.objects(PLURAL, f"{GROUP}/{VERSION}").get(name)

    async def create(self, path: str, body: dict[str, Any]) -> None:
        async with self.k8s.post(path, json=body) as r:
            assert r.status < 300, await r.text()

    async def patch(self, path: str, body: dict[str, Any]) -> None:
        async with self.k8s.patch(path, json=body,
                                          headers={"Content-Type": "application/merge-patch+json"}) as r:
            assert r.status < 300, await r.text()

    async def delete(self, path: str) -> None:
        async with self.k8s.delete(path) as r:
            assert r.status < 300, await r.text()

    async def create_gateway(self, body: dict[str, Any]) -> None:
        await self.create(GW_PATH, body)

    async def create_secret(self, name: str, data: dict[str, str]) -> None:
        enc = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        await self.create(f"/api/v1/namespaces/{NS}/secrets",
                          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
                           "data": enc})

    async def wait(self, what: str, cond: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = cond()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)


def declare_resources(k8s: Emulator) -> None:
    rs = k8s.resources
    rs[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(
        kind="LLMGateway", namespaced=True, singular="llmgateway", subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"})
    for gv, plural, kind in (("v1", "secrets", "Secret"), ("v1", "configmaps", "ConfigMap"),
                             ("v1", "services", "Service"), ("v1", "events", "Event"),
                             ("apps/v1", "statefulsets", "StatefulSet"),
                             ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget"),
                             # the shared gateway's children (builders/gateway.py)
                             ("v1", "serviceaccounts", "ServiceAccount"), ("apps/v1", "deployments", "Deployment"),
                             ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy"),
                             ("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")):
        rs[f"{gv}/{plural}"] = kmock.ResourceInfo(kind=kind, namespaced=True,
                                                  verbs={"get", "list", "watch", "create", "patch", "delete"})
    rs["rbac.authorization.k8s.io/v1/clusterrolebindings"] = kmock.ResourceInfo(
        kind="ClusterRoleBinding", namespaced=False, verbs={"get", "list", "watch", "create", "patch", "delete"})
    # kopf watches CRDs and namespaces to notice resources appearing later: they must exist, even if empty.
    rs["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs={"get", "list", "watch"})
    rs["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs={"get", "list", "watch"})


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with Emulator() as k8s, kmock.Server(k8s):
        declare_resources(k8s)
        url = str(k8s.url).rstrip("/")
        cfg = client.Configuration(host=url)
        api = client.ApiClient(cfg)
        yield Cluster(k8s, url, api)
        api.close()


@dataclass
class Running:
    cluster: Cluster
    thread: threading.Thread
    stop: threading.Event


@pytest.fixture
async def operator(cluster: Cluster) -> AsyncIterator[Cluster]:
    """The real handlers (handlers.register) in a real kopf operator, talking HTTP to the emulator."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=cluster.url, insecure=True)

    register(registry, lambda: cluster.api,
             HandlerSettings(status_interval_s=0.5, webhook=False,
                             reconcile=Settings(redis_timeout_s=0.3, dial=lambda hp: cluster.dial.get(hp, hp))))
    settings = kopf.OperatorSettings()
    settings.posting.level = 20
    settings.watching.server_timeout = 10
    settings.persistence.finalizer = "llmgateway.dev/test-finalizer"
    stop, ready = threading.Event(), threading.Event()

    def run() -> None:
        asyncio.run(kopf.operator(registry=registry, settings=settings, clusterwide=True, standalone=True,
                                  stop_flag=stop, ready_flag=ready))

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    await cluster.wait("kopf ready", ready.is_set, timeout=20)
    yield cluster
    stop.set()
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

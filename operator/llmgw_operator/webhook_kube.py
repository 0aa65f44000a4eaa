"""The webhook's Kubernetes side: gateway reads and Events for the admission server, the server version, and the
report of pods that ask for a gateway but run without its sidecar. Every API call is listed in API_CALLS.

The kubernetes client is synchronous: async callers run these calls in threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from llmgw_operator import injection
from llmgw_operator.crd import GROUP, PLURAL, VERSION

log = logging.getLogger("llmgw_operator.webhook")

# Every API call of the webhook and the uninjected-pod report (tests/chart/test_rbac.py checks the ClusterRole).
API_CALLS = [
    (GROUP, PLURAL, "get"),  # the admission server reads the gateway a pod asks for
    ("", "events", "create"),  # GatewayNotFound / InjectionSkipped / InjectionFailed, UninjectedPods
    ("", "pods", "list"),  # pods of a gateway's namespace, for the uninjected-pod report
]
MAX_LISTED_PODS = 20  # names in status and Events; the count is always complete
# (connect, read) seconds. The gateway lookup must answer well inside the webhook configuration's timeoutSeconds
# (the admission answer is also bounded by WebhookConfig.lookup_timeout_s, but a thread stuck in a read would stay).
LOOKUP_TIMEOUT = (2.0, 3.0)
REQUEST_TIMEOUT = (5.0, 30.0)


class KubeBackend:
    """GatewaySource + EventSink over the kubernetes client (sync, so calls run in threads).

    Gateways are cached for a few seconds (a Deployment scaled to 100 pods costs one GET, not 100); misses are not
    cached, so a gateway created a moment before its pods is found. Events are de-duplicated per owner and reason.
    """

    def __init__(self, api_client: Any, ttl_s: float = 5.0, event_every_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._exc = client.ApiException
        self._ttl = ttl_s
        self._event_every = event_every_s
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Mapping[str, Any]]] = {}
        self._sent: dict[tuple[str, str, str, str], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.instance = os.environ.get("POD_NAME", "llmgw-operator")

    async def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        now = self._clock()
        hit = self._cache.get((namespace, name))
        if hit and now - hit[0] < self._ttl:
            return hit[1]
        try:
            obj = await asyncio.to_thread(self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace,
                                          PLURAL, name, _request_timeout=LOOKUP_TIMEOUT)
        except self._exc as e:
            if e.status == 404:
                self._cache.pop((namespace, name), None)
                return None
            raise
        spec = obj.get("spec") or {}
        if len(self._cache) > 4096:  # bounded: namespaces come and go
            self._cache.clear()
        self._cache[(namespace, name)] = (now, spec)
        return spec

    async def warn(self, namespace: str, pod: Mapping[str, Any], reason: str, message: str) -> None:
        body = event_body(namespace, pod, reason, message, self.instance)
        obj = body["involvedObject"]
        key = (namespace, obj["kind"], obj["name"], reason)
        now = self._clock()
        if now - self._sent.get(key, -1e18) < self._event_every:
            return
        if len(self._sent) > 4096:
            self._sent.clear()
        self._sent[key] = now
        # Fire and forget: the admission answer must not wait on the event.
        task = asyncio.create_task(self._post(namespace, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, namespace: str, body: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self._core.create_namespaced_event, namespace, body,
                                    _request_timeout=REQUEST_TIMEOUT)
        except Exception as e:  # noqa: BLE001 -- an event is best effort, never worth a crash
            log.warning("event not recorded in %s: %s", namespace, e)


def event_body(namespace: str, pod: Mapping[str, Any], reason: str, message: str,
               instance: str) -> dict[str, Any]:
    """A core/v1 Warning Event. The pod has no uid during admission: point at its controller when it has one, so
    `kubectl describe deployment/replicaset` shows it; a bare pod is referenced by name."""
    meta = pod.get("metadata") or {}
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner:
        involved = {"apiVersion": owner.get("apiVersion", ""), "kind": owner.get("kind", ""),
                    "name": owner.get("name", ""), "uid": owner.get("uid", ""), "namespace": namespace}
    else:
        involved = {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name") or meta.get("generateName", ""),
                    "namespace": namespace}
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        # Named like client-go's recorder does (<object>.<hex nanoseconds>): unique, and sorted by time.
        "metadata": {"name": f"{(involved['name'].rstrip('-.') or 'pod')[:200]}.{time.time_ns():x}",
                     "namespace": namespace},
        "involvedObject": involved, "reason": reason, "message": message[:1024], "type": "Warning",
        "source": {"component": "llmgateway-webhook"}, "reportingComponent": "llmgateway.dev/webhook",
        "reportingInstance": instance, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


def native_sidecars_supported(major: str, minor: str) -> bool:
    """restartPolicy: Always on init containers is on by default from 1.29 (beta); GKE/EKS minors look like '29+'."""
    try:
        return (int(major), int("".join(ch for ch in minor if ch.isdigit()) or "0")) >= (1, 29)
    except ValueError:
        return False


def detect_native_support(api_client: Any) -> bool:
    """Ask the API server for its version (/version is readable by every authenticated client)."""
    try:
        info = client.VersionApi(api_client).get_code(_request_timeout=REQUEST_TIMEOUT)
    except Exception as e:  # noqa: BLE001 -- unknown version: plain containers work on every version
        log.warning("cannot read the server version (%s); injecting plain-container sidecars", e)
        return False
    return native_sidecars_supported(info.major, info.minor)


def list_pods(api_client: Any, namespace: str) -> list[dict[str, Any]]:
    """All pods of a namespace as plain API JSON (camelCase, as admission requests carry them).

    resourceVersion=0 lets the API server answer from its watch cache instead of etcd: a cheap list, slightly stale
    at worst, which is all a periodic report needs. The raw response skips the client's model conversion.
    """
    resp = client.CoreV1Api(api_client).list_namespaced_pod(namespace, resource_version="0", _preload_content=False,
                                                            _request_timeout=REQUEST_TIMEOUT)
    return list(json.loads(resp.data).get("items") or [])


def uninjected_report(pods: list[dict[str, Any]], gateway_name: str,
                      spec: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(status.injection, names). A gateway with injection disabled has no uninjected pods by definition."""
    enabled = (spec.get("injection") or {}).get("enabled") is not False
    names = injection.find_uninjected(pods, gateway_name) if enabled else []
    return {"uninjectedCount": len(names), "uninjectedPods": names[:MAX_LISTED_PODS]}, names


def uninjected_message(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED_PODS]) + (f" and {len(names) - MAX_LISTED_PODS} more"
                                                   if len(names) > MAX_LISTED_PODS else "")
    return (f"{len(names)} pod(s) ask for this gateway but run without its sidecar (the injection webhook was "
            f"unavailable when they were created); restart them to inject it: {shown}")

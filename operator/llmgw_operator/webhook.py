"""Mutating admission server for pods: HTTPS (aiohttp), TLS reloaded from a mounted Secret, JSONPatch from injection.py.

Why our own aiohttp server and not kopf's @kopf.on.mutate: kopf derives the patch by diffing a mutated body (we want
explicit ops), pauses its resource watches on a standby peer (its indexes would go stale, so we read gateways from the
API), manages URL-based webhook configurations (we ship our own in the chart), and loads its certificate once. Both
operator replicas serve this; only the peering leader reconciles.

The server never rejects a pod: every problem becomes "allowed, uninjected, with a warning" (and an Event), because a
failing injector must not stop a cluster from starting pods (istio#30139).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from llmgw_operator import injection
from llmgw_operator.crd import GROUP, PLURAL, VERSION

log = logging.getLogger("llmgw_operator.webhook")

MUTATE_PATH = "/mutate-pods"
# Every API call this module makes (the RBAC test compares these with the chart's ClusterRole).
API_CALLS = [
    (GROUP, PLURAL, "get"),
    ("", "events", "create"),
]


class WebhookMetrics:
    """Admission metrics on the webhook port (/metrics; the chart's ServiceMonitor scrapes it). Own registry: tests
    and several servers in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.admissions = Counter("llmgw_webhook_admissions", "Pod admission reviews by outcome "
                                  "(injected, not-requested, unknown-gateway, lookup-failed, ...).", ["result"],
                                  registry=self.registry)
        self.duration = Histogram("llmgw_webhook_admission_duration_seconds", "Time to answer one admission review.",
                                  registry=self.registry, buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 3, 10))


class GatewaySource(Protocol):
    async def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The gateway's spec, None when it does not exist; raises when the answer is unknown (API trouble)."""


class EventSink(Protocol):
    async def warn(self, namespace: str, pod: Mapping[str, Any], reason: str, message: str) -> None:
        """Record a Warning Event about the pod (or its owner: admitted pods have no uid yet)."""


@dataclass(frozen=True)
class WebhookConfig:
    host: str = "0.0.0.0"  # the API server calls the pod IP through the Service
    port: int = 9443
    cert_dir: str = "/tls"
    reload_interval_s: float = 10.0  # Secret volume updates take ~a minute to arrive anyway
    lookup_timeout_s: float = 3.0  # well under the configuration's timeoutSeconds (<= 10)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookConfig:
        e = os.environ if env is None else env
        return cls(host=e.get("LLMGW_WEBHOOK_HOST", cls.host), port=int(e.get("LLMGW_WEBHOOK_PORT", cls.port)),
                   cert_dir=e.get("LLMGW_WEBHOOK_CERT_DIR", cls.cert_dir))


def settings_from_env(native_supported: bool, env: Mapping[str, str] | None = None) -> injection.InjectionSettings:
    e = os.environ if env is None else env
    mode = e.get("LLMGW_NATIVE_SIDECARS", "auto").lower()  # auto | true | false (chart: injection.nativeSidecars)
    native = native_supported if mode == "auto" else mode == "true"
    return injection.InjectionSettings(
        default_image=e.get("LLMGW_SIDECAR_IMAGE", "ghcr.io/llmgateway/sidecar:0.1.0"),
        native_sidecars_supported=native,
        image_pull_policy=e.get("LLMGW_SIDECAR_PULL_POLICY", "IfNotPresent"),
    )


def native_sidecars_supported(major: str, minor: str) -> bool:
    """restartPolicy: Always on init containers is on by default from 1.29 (beta); GKE/EKS minors look like '29+'."""
    try:
        return (int(major), int("".join(ch for ch in minor if ch.isdigit()) or "0")) >= (1, 29)
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------------- the review


def _response(uid: str, warnings: list[str], patch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    if warnings:
        resp["warnings"] = warnings
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}


async def review(body: Mapping[str, Any], source: GatewaySource, sink: EventSink,
                 settings: injection.InjectionSettings,
                 lookup_timeout_s: float = 3.0) -> tuple[dict[str, Any], str]:
    """One AdmissionReview in, (AdmissionReview out, outcome for metrics). Always allowed."""
    req = body.get("request") or {}
    uid = str(req.get("uid", ""))
    pod = req.get("object") or {}
    if req.get("operation") != "CREATE" or (req.get("kind") or {}).get("kind") != "Pod" or req.get("subResource"):
        return _response(uid, []), "not-a-pod-create"
    namespace = req.get("namespace") or (pod.get("metadata") or {}).get("namespace") or ""
    wanted, reason = injection.skip_reason(pod)
    if wanted is None:
        return _response(uid, injection.build_patch(pod, "", None, settings).warnings), reason
    dry_run = bool(req.get("dryRun"))
    try:
        spec = await asyncio.wait_for(source.get(namespace, wanted), lookup_timeout_s)
    except Exception as e:  # noqa: BLE001 -- any API trouble: admit now, the status timer reports the pod later
        msg = f"llmgateway: could not read gateway {wanted!r} ({type(e).__name__}); pod admitted without the sidecar"
        log.warning("%s in %s: %s", msg, namespace, e)
        if not dry_run:
            await sink.warn(namespace, pod, "InjectionFailed", msg)
        return _response(uid, [msg]), "lookup-failed"
    try:
        result = injection.build_patch(pod, wanted, spec, settings)
    except Exception as e:  # a pod shape we did not foresee: never block it
        log.exception("building the patch failed for %s/%s", namespace, injection.pod_label(pod))
        msg = f"llmgateway: injection failed ({type(e).__name__}: {e}); pod admitted without the sidecar"
        if not dry_run:
            await sink.warn(namespace, pod, "InjectionFailed", msg)
        return _response(uid, [msg]), "error"
    if result.reason in {"unknown-gateway", "injection-disabled", "volume-clash", "port-clash"} and not dry_run:
        event_reason = "GatewayNotFound" if result.reason == "unknown-gateway" else "InjectionSkipped"
        await sink.warn(namespace, pod, event_reason, "; ".join(result.warnings))
    if result.injected:
        log.info("injecting %s into %s/%s", wanted, namespace, injection.pod_label(pod))
    return _response(uid, result.warnings, result.patch), result.reason


# ---------------------------------------------------------------------------------------------------- TLS


class ReloadingTLS:
    """An SSLContext whose certificate follows the files of a mounted kubernetes.io/tls Secret.

    load_cert_chain() on the live context affects every handshake after it, so no socket is re-bound. A half-written
    or mismatched pair (mid-rotation) keeps the previous certificate and is retried on the next check. (Files are read
    twice, once per load: a swap in between is caught by the digest on the next check.)
    """

    def __init__(self, cert_dir: str | Path) -> None:
        self.cert = Path(cert_dir) / "tls.crt"
        self.key = Path(cert_dir) / "tls.key"
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._digest = ""
        if not self.check():
            raise RuntimeError(f"no usable certificate in {cert_dir} (tls.crt, tls.key)")

    def _read_digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.cert.read_bytes())
        h.update(self.key.read_bytes())
        return h.hexdigest()

    def check(self) -> bool:
        """Load the pair if it changed. True when the context holds a certificate afterwards."""
        try:
            digest = self._read_digest()
        except OSError as e:
            log.warning("cannot read webhook certificate: %s", e)
            return bool(self._digest)
        if digest == self._digest:
            return True
        try:
            # Try the pair on a scratch context first: a failed load_cert_chain() on the live context leaves the new
            # certificate next to the old key there, and every handshake after it fails.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)
            self.context.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as e:
            log.warning("webhook certificate not (re)loaded, keeping the previous one: %s", e)
            return bool(self._digest)
        if self._digest:
            log.info("webhook certificate reloaded")
        self._digest = digest
        return True

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.check()


# ---------------------------------------------------------------------------------------------------- server


class WebhookServer:
    def __init__(self, config: WebhookConfig, source: GatewaySource, sink: EventSink,
                 settings: injection.InjectionSettings) -> None:
        self.config = config
        self.source = source
        self.sink = sink
        self.settings = settings
        self.tls = ReloadingTLS(config.cert_dir)
        self.metrics = WebhookMetrics()
        self._runner: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None
        self.port = config.port  # the bound port (tests bind 0)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post(MUTATE_PATH, self._mutate)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _mutate(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
            return web.json_response({"error": "not an AdmissionReview"}, status=400)
        with self.metrics.duration.time():
            out, outcome = await review(body, self.source, self.sink, self.settings, self.config.lookup_timeout_s)
        self.metrics.admissions.labels(outcome).inc()
        return web.json_response(out)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=self.tls.context)
        await site.start()
        server = site._server
        if server is not None and getattr(server, "sockets", None):
            self.port = server.sockets[0].getsockname()[1]
        self._watch = asyncio.create_task(self.tls.watch(self.config.reload_interval_s), name="llmgw-tls-reload")
        log.info("webhook listening on %s:%s", self.config.host, self.port)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._runner is not None:
            await self._runner.cleanup()


# ---------------------------------------------------------------------------------------------------- Kubernetes


class KubeBackend:
    """GatewaySource + EventSink over the kubernetes client (sync, so calls run in threads).

    Gateways are cached for a few seconds (a Deployment scaled to 100 pods costs one GET, not 100); misses are not
    cached, so a gateway created a moment before its pods is found. Events are de-duplicated per owner and reason.
    """

    def __init__(self, api_client: Any, ttl_s: float = 5.0, event_every_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from kubernetes import client  # imported here: the module stays importable for pure tests

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
                                          PLURAL, name)
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
            await asyncio.to_thread(self._core.create_namespaced_event, namespace, body)
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


def detect_native_support(api_client: Any) -> bool:
    """Ask the API server for its version (/version is readable by every authenticated client)."""
    from kubernetes import client

    try:
        info = client.VersionApi(api_client).get_code()
    except Exception as e:  # noqa: BLE001 -- unknown version: plain containers work on every version
        log.warning("cannot read the server version (%s); injecting plain-container sidecars", e)
        return False
    return native_sidecars_supported(info.major, info.minor)


def register(registry: Any, api_client_factory: Callable[[], Any] | None = None,
             config: WebhookConfig | None = None) -> None:
    """Start the admission server when the operator starts and stop it on exit (kopf startup/cleanup handlers).

    Startup handlers run in every replica, peering leader or not, so both replicas serve admission requests.
    """
    import kopf

    def default_client() -> Any:
        from kubernetes import client
        from kubernetes import config as kconfig

        try:
            kconfig.load_incluster_config()
        except kconfig.ConfigException:
            kconfig.load_kube_config()
        return client.ApiClient()

    make_client = api_client_factory or default_client

    @kopf.on.startup(registry=registry, id="llmgw-webhook-start")
    async def start_webhook(memo: Any, **_: Any) -> None:
        api = await asyncio.to_thread(make_client)
        native = await asyncio.to_thread(detect_native_support, api)
        backend = KubeBackend(api)
        server = WebhookServer(config or WebhookConfig.from_env(), backend, backend, settings_from_env(native))
        await server.start()
        memo["llmgw_webhook"] = server

    @kopf.on.cleanup(registry=registry, id="llmgw-webhook-stop")
    async def stop_webhook(memo: Any, **_: Any) -> None:
        server = memo.get("llmgw_webhook")
        if server is not None:
            await server.stop()


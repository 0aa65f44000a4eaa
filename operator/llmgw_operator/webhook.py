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
import hashlib
import json
import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from llmgw_operator import gateway_client, injection
from llmgw_operator.builders.spec import default_pull_policy
from llmgw_operator.crd import GROUP, PLURAL, VERSION
from llmgw_operator.metrics import OPERATOR_METRICS
from llmgw_operator.webhook_kube import (
    API_CALLS,
    KubeBackend,
    detect_native_support,
    list_pods,
    uninjected_message,
    uninjected_report,
)

__all__ = ["API_CALLS", "WebhookConfig", "WebhookServer", "register", "review"]

log = logging.getLogger("llmgw_operator.webhook")

MUTATE_PATH = "/mutate-pods"
MAX_WARNING = 256


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
    """native_supported: what the API server can run. LLMGW_NATIVE_SIDECARS (chart: webhook.nativeSidecars) is
    auto | true | false; "true" on a server without native sidecars still injects plain containers (with a warning
    here): an older server would refuse every injected pod, and the webhook never blocks a pod."""
    e = os.environ if env is None else env
    mode = e.get("LLMGW_NATIVE_SIDECARS", "auto").lower()
    if mode == "true" and not native_supported:
        log.warning("LLMGW_NATIVE_SIDECARS=true, but this API server does not run native sidecars (Kubernetes "
                    ">= 1.29): injecting plain containers")
    native = native_supported and mode != "false"
    return injection.InjectionSettings(
        default_image=e.get("LLMGW_SIDECAR_IMAGE", "ghcr.io/llmgateway/sidecar:0.1.0"),
        native_sidecars_supported=native,
        image_pull_policy=default_pull_policy(e),
    )


# ---------------------------------------------------------------------------------------------------- the review


def _short(warning: str) -> str:
    line = " ".join(warning.split())
    return line if len(line) <= MAX_WARNING else line[:MAX_WARNING - 1] + "…"


def _response(uid: str, warnings: list[str], patch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    if warnings:
        # The API server may truncate warnings past 256 characters (and clients print them on one line): the
        # Event carries the full text.
        resp["warnings"] = [_short(w) for w in warnings]
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
    shared = gateway_client.requested_shared_gateway(pod, namespace)
    if shared is not None and injection.requested_gateway(pod) is None:
        return await _point_at_shared_gateway(uid, pod, namespace, shared, source, sink, lookup_timeout_s,
                                              bool(req.get("dryRun")))
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


async def _point_at_shared_gateway(uid: str, pod: Mapping[str, Any], namespace: str, target: tuple[str, str],
                                   source: GatewaySource, sink: EventSink, lookup_timeout_s: float,
                                   dry_run: bool) -> tuple[dict[str, Any], str]:
    """llmgateway.dev/use-gateway: no sidecar; env + a projected token that point the app at a shared gateway."""
    gw_ns, gw_name = target
    try:
        spec = await asyncio.wait_for(source.get(gw_ns, gw_name), lookup_timeout_s)
    except Exception as e:  # noqa: BLE001 -- admit unchanged, never block a pod
        msg = f"llmgateway: could not read gateway {gw_ns}/{gw_name} ({type(e).__name__}); pod admitted unchanged"
        if not dry_run:
            await sink.warn(namespace, pod, "InjectionFailed", msg)
        return _response(uid, [msg]), "lookup-failed"
    try:
        result = gateway_client.build_gateway_client_patch(pod, gw_ns, gw_name, spec)
    except Exception as e:  # noqa: BLE001 -- a gateway or pod shape we did not foresee: admit the pod unchanged
        # Type only, no message: it may quote a spec or pod value.
        gateway_client.log_once((gw_ns, gw_name, "patch", type(e).__name__), "pointing pods at gateway %s/%s "
                                "failed (%s); pods admitted unchanged", gw_ns, gw_name, type(e).__name__)
        msg = (f"llmgateway: pointing the pod at gateway {gw_ns}/{gw_name} failed ({type(e).__name__}); "
               "pod admitted unchanged")
        if not dry_run:
            await sink.warn(namespace, pod, "InjectionFailed", msg)
        return _response(uid, [msg]), "error"
    if result.reason == "no-shared-gateway" and not dry_run:
        await sink.warn(namespace, pod, "GatewayNotFound", "; ".join(result.warnings))
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
            try:
                out, outcome = await review(body, self.source, self.sink, self.settings,
                                            self.config.lookup_timeout_s)
            except Exception as e:  # noqa: BLE001 -- last resort: a 500 would leave the API server to guess
                gateway_client.log_once(("review", type(e).__name__), "admission review failed (%s); pod admitted "
                                        "unchanged", type(e).__name__)
                out, outcome = _response(str(body["request"].get("uid", "")), []), "error"
        self.metrics.admissions.labels(outcome).inc()
        return web.json_response(out)

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry) + generate_latest(OPERATOR_METRICS.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=self.tls.context)
        await site.start()
        sockets = getattr(site._server, "sockets", None)  # port 0: learn the port the kernel chose
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._watch = asyncio.create_task(self.tls.watch(self.config.reload_interval_s), name="llmgw-tls-reload")
        log.info("webhook listening on %s:%s", self.config.host, self.port)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._runner is not None:
            await self._runner.cleanup()


def register(registry: Any, api_client_factory: Callable[[], Any] | None = None,
             config: WebhookConfig | None = None, uninjected_interval_s: float = 60.0) -> None:
    """Start the admission server when the operator starts and stop it on exit (kopf startup/cleanup handlers), and
    report pods that ask for a gateway but run without its sidecar (a kopf timer on each gateway).

    Startup handlers run in every replica, peering leader or not, so both replicas serve admission requests. Timers
    run only on the peering leader, so the report is written once.
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
        memo["llmgw_webhook_api"] = api

    @kopf.on.cleanup(registry=registry, id="llmgw-webhook-stop")
    async def stop_webhook(memo: Any, **_: Any) -> None:
        server = memo.get("llmgw_webhook")
        if server is not None:
            await server.stop()

    last_reported: dict[tuple[str, str], tuple[str, ...]] = {}

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="llmgw-uninjected-pods", interval=uninjected_interval_s,
                initial_delay=min(10.0, uninjected_interval_s), sharp=False)
    def report_uninjected(name: str, namespace: str | None, spec: Any, body: Any, patch: Any, memo: Any,
                          **_: Any) -> None:
        api = memo.get("llmgw_webhook_api")
        # No server yet: nothing to compare against (namespace is never None for this namespaced resource).
        if api is None or namespace is None:
            return
        status, names = uninjected_report(list_pods(api, namespace), name, spec)
        OPERATOR_METRICS.uninjected_pods.labels(namespace, name).set(len(names))
        if (body.get("status") or {}).get("injection") != status:
            patch.status["injection"] = status
        key = (namespace, name)
        # One Event per change of the set, not one per interval: the list is also in status.injection.
        if names and tuple(names) != last_reported.get(key):
            kopf.event(body, type="Warning", reason="UninjectedPods", message=uninjected_message(names))
        last_reported[key] = tuple(names)

"""kopf registrations only: every handler hands the object to `reconcile.Reconciler` and writes what it returns.

No handlers on pods (a cluster has far more pods than gateways; watching them would cost memory and API load).
Sync handlers: kopf runs them in its thread pool, and the kubernetes and redis-py clients they use are blocking.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client

from . import webhook
from .apply import Applier
from .crd import GROUP, PLURAL, VERSION
from .metrics import OPERATOR_METRICS
from .reconcile import Reconciler, Result, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandlerSettings:
    status_interval_s: float = 30.0  # timer: readiness, cluster heal, reachability, spend
    reconcile: Settings = field(default_factory=Settings)
    webhook: bool = True
    uninjected_interval_s: float = 60.0  # timer: pods that ask for a gateway but run without its sidecar


def register(registry: kopf.OperatorRegistry, api_client_factory: Callable[[], client.ApiClient],
             settings: HandlerSettings | None = None) -> None:
    settings = settings or HandlerSettings()
    reconciler = Reconciler(Applier(api_client_factory()), settings.reconcile)

    def write(body: kopf.Body, result: Result, trigger: str = "change") -> None:
        OPERATOR_METRICS.reconciled(body["metadata"]["namespace"], body["metadata"]["name"], trigger, result.status)
        changed = {k: v for k, v in result.applied.items() if v != "unchanged"}
        if changed:
            log.info("%s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"], changed)
        reconciler.applier.patch_status(body["metadata"]["namespace"], body["metadata"]["name"], result.status)
        for kind, reason, message in result.events:
            kopf.event(body, type=kind, reason=reason, message=message)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="reconcile")
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="reconcile")
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, field="spec", id="reconcile")
    def reconcile_gateway(body: kopf.Body, **_: Any) -> None:
        # Spend is left to the timer: create/update must stay quick even when Redis is still starting.
        write(body, reconciler.reconcile(_plain(body), read_spend=False))

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="refresh", interval=settings.status_interval_s,
                initial_delay=min(5.0, settings.status_interval_s), sharp=False)
    def refresh_gateway(body: kopf.Body, **_: Any) -> None:
        write(body, reconciler.reconcile(_plain(body), read_spend=True), trigger="timer")

    # Cluster-scoped children (the shared gateway's ClusterRoleBinding) cannot carry an owner reference to a namespaced
    # gateway, so garbage collection never deletes them: the gateway's deletion does (kopf's finalizer, which the
    # timers put on every gateway anyway, keeps it until this ran), and a sweep at start catches gateways deleted
    # while no operator ran. Bounded retries: an API outage must not keep a gateway Terminating forever.
    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="release-cluster-scoped", retries=5, backoff=5)
    def release_gateway(body: kopf.Body, **_: Any) -> None:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        deleted = reconciler.applier.release_cluster_scoped(ns, name)
        if deleted:
            log.info("%s/%s deleted: %s", ns, name, ", ".join(deleted))

    @kopf.on.startup(registry=registry, id="sweep-cluster-scoped")
    def sweep_orphans(**_: Any) -> None:
        try:
            deleted = reconciler.applier.release_cluster_scoped()
        except Exception as e:  # noqa: BLE001 -- a sweep that fails must not stop the operator; the next start retries
            log.warning("sweep of cluster-scoped objects of deleted gateways failed: %s", e)
            return
        if deleted:
            log.info("deleted cluster-scoped objects of gateways that no longer exist: %s", ", ".join(deleted))

    if settings.webhook:
        webhook.register(registry, uninjected_interval_s=settings.uninjected_interval_s)


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": dict(body.metadata),
            "spec": dict(body.spec), "status": dict(body.status)}

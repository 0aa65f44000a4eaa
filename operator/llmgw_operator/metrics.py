"""The operator's own Prometheus metrics (reconcile passes, gateway readiness, uninjected pods), served next to the
admission metrics on the webhook port's /metrics. One registry per process: every replica serves it, and only the
peering leader reconciles, so the standby exports no reconcile samples (its families are still declared)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.reconciles = Counter(
            "llmgw_operator_reconciles", "Reconcile passes by trigger (change, timer) and verdict (ready, not_ready).",
            ["trigger", "result"], registry=r,
        )
        self.last_reconcile = Gauge(
            "llmgw_operator_last_reconcile_timestamp_seconds", "Unix time of the latest finished reconcile pass "
            "(any gateway); stops moving when the operator stops reconciling.", registry=r,
        )
        self.gateway_ready = Gauge(
            "llmgw_operator_gateway_ready", "1 while the gateway's Ready condition is True.",
            ["gateway_namespace", "gateway"], registry=r,
        )
        self.uninjected_pods = Gauge(
            "llmgw_operator_uninjected_pods", "Pods that ask for the gateway but run without its sidecar.",
            ["gateway_namespace", "gateway"], registry=r,
        )

    def reconciled(self, namespace: str, name: str, trigger: str, status: dict[str, Any]) -> None:
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        self.reconciles.labels(trigger, "ready" if ready else "not_ready").inc()
        self.gateway_ready.labels(namespace, name).set(1 if ready else 0)
        self.last_reconcile.set(time.time())


OPERATOR_METRICS = OperatorMetrics()

"""`llmgw-operator [run]`: the LLMGateway operator (kopf) with production settings.

Configuration comes from flags or the environment the Helm chart sets:
  LLMGW_WATCH_NAMESPACES   comma list of namespace names; empty = all namespaces
  LLMGW_PEERING_NAME       kopf peering object (HA: only one replica reconciles); empty = standalone. A
                           ClusterKopfPeering, or with watched namespaces a KopfPeering in each (the chart creates them)
  LLMGW_LIVENESS_PORT      port of kopf's liveness endpoint /healthz (default 8081; 0 disables)
  LLMGW_STATUS_INTERVAL_S  status/heal/spend timer interval (default 30)
  LLMGW_UNINJECTED_INTERVAL_S  interval of the report of pods running without their sidecar (default 60)
  LLMGW_CLUSTER_DOMAIN     cluster DNS domain for the stable Redis names (default cluster.local)
  LLMGW_WEBHOOK_ENABLED    "false" to run without the sidecar-injection webhook
  LLMGW_SIDECAR_IMAGE      default image of the injected sidecar and the shared gateway (spec.sidecar.image wins)
  LLMGW_SIDECAR_PULL_POLICY  default pull policy of both (chart: sidecar.image.pullPolicy; an explicit
                           spec.sidecar.imagePullPolicy wins; the CRD does not default it)
  LLMGW_GATEWAY_CLUSTER_ROLE  ClusterRole bound to each shared gateway's ServiceAccount (TokenReview)
  LLMGW_LOG_LEVEL          DEBUG | INFO | WARNING
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import kopf

from .builders.spec import default_pull_policy
from .crd import CRDNotFound, load_crd
from .handlers import HandlerSettings, register
from .reconcile import Settings

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger("llmgw_operator")


def api_client() -> ApiClient:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def operator_settings(peering: str, namespaces: Sequence[str] = ()) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    # Watches end server-side before the client gives up, so a silently dropped connection is noticed and resumed.
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    s.watching.connect_timeout = 10
    s.networking.request_timeout = 60
    s.posting.level = logging.INFO  # k8s Events for our reasons and kopf's handler failures
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="llmgateway.dev")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="llmgateway.dev",
                                                                      key="last-handled-configuration")
    s.execution.max_workers = 8  # sync handlers; cluster heals block one worker for up to the heal timeout
    s.peering.mandatory = bool(peering)  # with a peering name, refuse to run without the peering CRD
    s.peering.clusterwide = not namespaces  # watched namespaces: kopf keeps a KopfPeering in each of them
    if peering:
        # kopf peering is not an election: replicas of EQUAL priority pause each other ("Pausing all operators,
        # including self"), and the chart runs two identical replicas. A random priority per process makes exactly
        # one of them the active reconciler; when it dies, its keep-alive expires and the other resumes. Set here,
        # at start-up, whatever else is enabled (the webhook, namespaces).
        s.peering.priority = secrets.randbelow(2**31 - 2) + 1
    s.queueing.error_delays = (1, 5, 15, 30)
    # A deleted gateway keeps kopf's finalizer until its refresh timer has exited. A sync timer mid-run cannot be
    # interrupted, and kopf checks on it again only every cancellation_polling seconds (default 60): a deletion
    # that caught a refresh waited a minute. Each check re-runs the (cheap) release handler, after the refresh.
    s.background.cancellation_polling = 1.0
    return s


def missing_peerings(api: ApiClient, peering: str, namespaces: Sequence[str]) -> list[str]:
    """Namespaces among `namespaces` without the KopfPeering object `peering` (kopf would silently pause there)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom = client.CustomObjectsApi(api)
    missing = []
    for ns in namespaces:
        try:
            custom.get_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", peering,
                                                _request_timeout=(5, 30))
        except ApiException as e:
            if e.status != 404:
                raise
            missing.append(ns)
    return missing


def settings_from_env(cluster_domain: str, env: Mapping[str, str] | None = None) -> Settings:
    """The reconciler's operator-wide defaults from the environment the chart sets (ValueError: a bad value)."""
    e = os.environ if env is None else env
    return Settings(cluster_domain=cluster_domain,
                    gateway_image=e.get("LLMGW_SIDECAR_IMAGE") or Settings.gateway_image,
                    gateway_pull_policy=default_pull_policy(e),
                    gateway_cluster_role=e.get("LLMGW_GATEWAY_CLUSTER_ROLE") or Settings.gateway_cluster_role)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmgw-operator", description="LLMGateway operator (kopf).")
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the operator (the default)")
    env = os.environ.get
    for parser in (p, run):
        parser.add_argument("--namespaces", default=env("LLMGW_WATCH_NAMESPACES", ""),
                            help="comma list of namespaces to watch; empty = all")
        parser.add_argument("--peering", default=env("LLMGW_PEERING_NAME", ""),
                            help="kopf peering name for HA (empty = standalone)")
        parser.add_argument("--liveness-port", type=int, default=int(env("LLMGW_LIVENESS_PORT", "8081")))
        parser.add_argument("--status-interval", type=float, default=float(env("LLMGW_STATUS_INTERVAL_S", "30")))
        parser.add_argument("--uninjected-interval", type=float,
                            default=float(env("LLMGW_UNINJECTED_INTERVAL_S", "60")))
        parser.add_argument("--cluster-domain", default=env("LLMGW_CLUSTER_DOMAIN", "cluster.local"))
        parser.add_argument("--no-webhook", action="store_true",
                            default=env("LLMGW_WEBHOOK_ENABLED", "true").lower() in ("false", "0", "no"))
        parser.add_argument("--log-level", default=env("LLMGW_LOG_LEVEL", "INFO"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        load_crd()  # the operator's defaults come from the CRD: fail now, with the paths tried, not per object
    except CRDNotFound as e:
        print(f"llmgw-operator: {e}", file=sys.stderr)
        return 2
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kw: object) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kw)  # type: ignore[arg-type]

    try:
        reconcile_settings = settings_from_env(args.cluster_domain)
    except ValueError as e:
        print(f"llmgw-operator: {e}", file=sys.stderr)
        return 2
    settings = HandlerSettings(status_interval_s=args.status_interval, reconcile=reconcile_settings,
                               webhook=not args.no_webhook, uninjected_interval_s=args.uninjected_interval)
    from kubernetes.config import ConfigException

    try:
        register(registry, api_client, settings)
    except ConfigException as e:
        print(f"llmgw-operator: no Kubernetes API configuration (in-cluster service account or kubeconfig): {e}",
              file=sys.stderr)
        return 2
    namespaces = [n.strip() for n in args.namespaces.split(",") if n.strip()]
    if args.peering and namespaces:
        # kopf pauses every watch of a namespace without its KopfPeering object and says so only at DEBUG level:
        # refuse to start instead, naming what is missing.
        missing = missing_peerings(api_client(), args.peering, namespaces)
        if missing:
            print(f"llmgw-operator: peering {args.peering!r} with watched namespaces needs a KopfPeering object "
                  f"named {args.peering!r} in each of them (the chart creates them; CRD kopfpeerings.kopf.dev); "
                  f"missing in: {', '.join(missing)}", file=sys.stderr)
            return 2
    settings_ = operator_settings(args.peering, namespaces)
    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    log.info("starting: namespaces=%s peering=%s (priority %s) liveness=%s webhook=%s", namespaces or "all",
             args.peering or "standalone", settings_.peering.priority, liveness, settings.webhook)
    kopf.run(
        registry=registry,
        settings=settings_,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=not args.peering,
        peering_name=args.peering or None,
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

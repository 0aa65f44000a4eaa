"""One reconcile pass of one LLMGateway: render (pure builders), check referenced Secrets, apply, prune, observe Redis,
read spend, compute the status. API access goes through `apply.Applier`; Redis access through `redis_access`.

A spec that passes the schema but cannot work (missing Secret, invalid rendered config, immutable field changed)
never raises out of here: it becomes Ready=False with a precise reason, plus an Event when the reason changes, and the
timer retries later. Nothing crash-loops.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from kubernetes.client.rest import ApiException

from . import cluster_bootstrap, redis_access, spend_reader
from .apply import Applier, ApplyError, owner_reference
from .builders import BUILDERS, Gateway, SpecError, build_all, gateway
from .builders.sidecar_config import KEY_PREFIX, redis_endpoints, referenced_secrets, sidecar_configmap_name
from .builders.spec import DEFAULT_CLUSTER_DOMAIN, DEFAULT_PULL_POLICY
from .builders.workload import auth_secret
from .status import Check, Observation, build_status, ready_condition

log = logging.getLogger(__name__)


def _same(hostport: str) -> str:
    return hostport


@dataclass(frozen=True)
class Settings:
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    redis_timeout_s: float = 1.0
    cluster_timeout_s: float = 20.0
    # Maps a "host:port" the operator is about to dial (never what it renders for the sidecars). Identity in a
    # cluster; a port-forward table when the operator runs on a laptop, and the local Redis processes in tests.
    dial: Callable[[str], str] = _same
    # The shared gateway (spec.gateway): default image and pull policy (the chart's sidecar.image values; a gateway's
    # spec.sidecar.image/imagePullPolicy wins), and the chart's ClusterRole its ServiceAccount is bound to.
    gateway_image: str = gateway.DEFAULT_IMAGE
    gateway_pull_policy: str = DEFAULT_PULL_POLICY
    gateway_cluster_role: str = gateway.DEFAULT_CLUSTER_ROLE


@dataclass
class Result:
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    applied: dict[str, str] = field(default_factory=dict)  # "Kind/name" -> created|patched|unchanged


def _dial_url(url: str, dial: Callable[[str], str]) -> str:
    parts = urlsplit(url)
    creds, at, hostport = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{creds}{at}{dial(hostport)}"))


def _cache_status(previous: dict[str, Any] | None, generation: int) -> dict[str, Any]:
    """status.cache for the rendered generation; the sidecar counts carry over only while the generation is the same
    (they are re-read on the timer). The status is a merge patch: counts of another generation are removed with
    explicit nulls, or the old "all applied" would stand next to the new generation."""
    if previous and previous.get("generation") == generation:
        return {**previous, "generation": generation}
    return {"generation": generation, "sidecarsReporting": None, "sidecarsApplied": None}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc3339(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(self, applier: Applier, settings: Settings | None = None,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.applier = applier
        self.settings = settings or Settings()
        self.clock = clock
        self._cluster_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- entry point ----------------------------------------------------------------------------------------------
    def reconcile(self, body: dict[str, Any], *, read_spend: bool = True) -> Result:
        md = body["metadata"]
        name, ns = md["name"], md["namespace"]
        generation = int(md.get("generation") or 1)
        previous = body.get("status") or {}
        now = self.clock()
        applied: dict[str, str] = {}
        try:
            gw = Gateway.from_spec(name, ns, body.get("spec") or {}, cluster_domain=self.settings.cluster_domain)
        except SpecError as e:
            obs = Observation(generation, Check(False, e.reason, e.message),
                              Check(None, "NotReconciled", "the spec cannot be rendered"))
            return self._result(obs, previous, now, applied)

        config = Check(True, "Rendered", f"sidecar configuration in ConfigMap {sidecar_configmap_name(name)}")
        redis_check: Check | None = None
        manifests: list[dict[str, Any]] = []
        try:
            manifests = build_all(gw, secrets.token_urlsafe(32))
            manifests += self._gateway_manifests(gw)
        except SpecError as e:
            config = Check(False, e.reason, e.message)
        if config.ok and (missing := self._missing_secrets(gw)):
            config = Check(False, missing[0], missing[1])
        if not manifests:
            # The sidecar config cannot be rendered: still provision Redis (it does not depend on it).
            manifests = self._redis_only(gw)

        owner = owner_reference(body)
        failed: ApplyError | None = None
        for m in manifests:
            try:
                applied[f"{m['kind']}/{m['metadata']['name']}"] = self.applier.ensure(m, owner)
            except ApplyError as e:
                failed = failed or e  # keep applying the others: one refused object must not freeze the rest
        keep = {(m["kind"], m["metadata"]["name"]) for m in manifests}
        # Prune only against a complete desired set: a spec whose sidecar config cannot be rendered must not
        # cost the running pods their last good ConfigMap.
        if failed is None and ("ConfigMap", sidecar_configmap_name(name)) in keep:
            for gone in self.applier.prune(ns, name, md["uid"], keep):
                applied[gone] = "deleted"
        if failed is not None:
            redis_check = Check(False, failed.reason, failed.message)

        cm = next((m for m in manifests if m["metadata"]["name"] == sidecar_configmap_name(name)
                   and m["kind"] == "ConfigMap"), None)
        obs = Observation(
            generation, config, redis_check or Check(None, "Pending", ""),
            endpoints=redis_endpoints(gw),
            config_map=cm["metadata"]["name"] if cm else None,
            config_hash=cm["metadata"]["annotations"]["llmgateway.dev/config-hash"] if cm else None,
            spend=previous.get("spend"),
            cache=_cache_status(previous.get("cache"), int(gw.spec["cache"].get("generation", 0))) if cm
            else previous.get("cache"),
        )
        if redis_check is None:
            self._observe_redis(gw, obs, read_spend, now)
        if gateway.enabled(gw):
            ready, desired = self.applier.deployment_readiness(ns, gateway.name(gw)) or (0, 0)
            obs.gateway = {"endpoint": gateway.endpoint(gw), "readyReplicas": ready, "desiredReplicas": desired,
                           "replicas": f"{ready}/{desired}"}
        return self._result(obs, previous, now, applied)

    def _gateway_manifests(self, gw: Gateway) -> list[dict[str, Any]]:
        if not gateway.enabled(gw):
            return []
        keys: list[str] = []
        if gw.spec["gateway"]["auth"]["virtualKeys"]:
            try:
                keys = self.applier.secret_names(gw.namespace, f"{gateway.VIRTUAL_KEY_LABEL}={gw.name}")
            except ApiException as e:
                raise SpecError("VirtualKeysUnreadable", f"cannot list virtual-key Secrets: {e.status} {e.reason}") \
                    from None
        return gateway.build(gw, image=self.settings.gateway_image, cluster_role=self.settings.gateway_cluster_role,
                             key_secrets=keys, pull_policy=self.settings.gateway_pull_policy,
                             role_owner=self.applier.cluster_role_owner(self.settings.gateway_cluster_role))

    # -- pieces ---------------------------------------------------------------------------------------------------
    def _redis_only(self, gw: Gateway) -> list[dict[str, Any]]:
        secret = auth_secret(gw, secrets.token_urlsafe(32)) if gw.mode != "external" else None
        return [*([secret] if secret else []), *BUILDERS[gw.mode](gw)]

    def _missing_secrets(self, gw: Gateway) -> tuple[str, str] | None:
        pairs = referenced_secrets(gw)
        if gw.mode != "external" and gw.auth and not gw.auth_secret_generated:
            pairs.insert(0, (gw.auth_secret_name, gw.auth_secret_key))
        return self._first_missing(gw, pairs)

    def _external_secrets_missing(self, gw: Gateway) -> tuple[str, str] | None:
        """The Secrets the operator itself needs to reach an external Redis (URL, password, CA)."""
        ext = gw.redis["external"]
        refs = [ext[k] for k in ("urlSecretRef", "passwordSecretRef", "caSecretRef") if ext.get(k)]
        return self._first_missing(gw, [(r["name"], r["key"]) for r in refs])

    def _first_missing(self, gw: Gateway, pairs: list[tuple[str, str]]) -> tuple[str, str] | None:
        for secret_name, key in pairs:
            exists, value = self.applier.secret_value(gw.namespace, secret_name, key)
            if not exists:
                return "SecretNotFound", f"Secret {gw.namespace}/{secret_name} does not exist (needed for key {key!r})"
            if value is None:
                return "SecretKeyNotFound", f"Secret {gw.namespace}/{secret_name} has no key {key!r}"
        return None

    def _password(self, gw: Gateway) -> str | None:
        if gw.mode == "external":
            ref = gw.redis["external"].get("passwordSecretRef")
            return self.applier.secret_value(gw.namespace, ref["name"], ref["key"])[1] if ref else None
        if not gw.auth:
            return None
        return self.applier.secret_value(gw.namespace, gw.auth_secret_name, gw.auth_secret_key)[1]

    def _target(self, gw: Gateway) -> redis_access.Target:
        ep = redis_endpoints(gw)
        password = self._password(gw)
        ca = None
        tls = gw.tls
        url = ep.get("url")
        if gw.mode == "external":
            ext = gw.redis["external"]
            if ext.get("urlSecretRef"):
                url = self.applier.secret_value(gw.namespace, ext["urlSecretRef"]["name"],
                                                ext["urlSecretRef"]["key"])[1]
            tls = bool(ext["tls"]) or str(url or "").startswith("rediss://") or "caSecretRef" in ext
            if ext.get("caSecretRef"):
                ca = self.applier.secret_value(gw.namespace, ext["caSecretRef"]["name"], ext["caSecretRef"]["key"])[1]
        elif gw.tls:
            ca = self.applier.secret_value(gw.namespace, gw.redis["tls"]["secretName"], "ca.crt")[1]
        if url and url.startswith("rediss://"):
            tls = False  # the scheme already says TLS; redis-py takes it from the URL
        dial = self.settings.dial
        return redis_access.Target(
            mode=ep["mode"], url=_dial_url(url, dial) if url else url,
            sentinels=tuple(dial(s) for s in ep.get("sentinels", ())), master_name=ep.get("masterName", ""),
            nodes=tuple(dial(n) for n in ep.get("nodes", ())), password=password, tls=tls, ca_pem=ca,
            username=(gw.redis.get("external") or {}).get("username") if gw.mode == "external" else None,
            timeout_s=self.settings.redis_timeout_s,
        )

    def _observe_redis(self, gw: Gateway, obs: Observation, read_spend: bool, now: dt.datetime) -> None:
        if gw.mode == "external":
            if missing := self._external_secrets_missing(gw):
                obs.redis = Check(False, missing[0], f"external Redis: {missing[1]}")
            else:
                target = self._target(gw)
                ok, msg = self._ping(target)
                if not ok and gw.redis["external"].get("iam") and "auth" in msg.lower():
                    # IAM tokens belong to the sidecars' identity, not the operator's: an answer asking for AUTH
                    # is as much as the operator can see.
                    ok, msg = True, "answers; IAM authentication is done by the sidecars"
                obs.redis = Check(True, "Reachable", f"external {target.mode} Redis answers PING") if ok \
                    else Check(False, "Unreachable", f"external Redis: {msg}")
        else:
            sets = [gw.redis_name] + ([gw.sentinel_name] if gw.mode == "sentinel" else [])
            ready = desired = 0
            for sts in sets:
                r = self.applier.statefulset_readiness(gw.namespace, sts)
                got, want = r if r is not None else (0, 0)
                ready, desired = ready + got, desired + want
            obs.members = (ready, desired)
            if desired == 0 or ready < desired:
                obs.redis = Check(False, "PodsNotReady", f"{ready}/{desired} Redis pods ready")
            elif gw.mode == "cluster":
                report = self._cluster_pass(gw)
                obs.cluster_state = report.state
                obs.redis = Check(report.healthy, "ClusterHealthy" if report.healthy else "ClusterNotHealthy",
                                  report.state)
            else:
                # Ready pods are not the whole truth: check that a client gets through (sentinel: that the
                # sentinels name a master and it answers), with the password the sidecars will use.
                ok, msg = self._ping(self._target(gw))
                obs.redis = Check(True, "Ready", f"{ready}/{desired} Redis pods ready; {gw.mode} answers PING") \
                    if ok else Check(False, "Unreachable", f"{ready}/{desired} Redis pods ready, but {msg}")
        if obs.redis.ok and read_spend:
            obs.spend = self._spend(gw, now) or obs.spend
            if obs.cache is not None:
                obs.cache.update(self._generations(gw, obs.cache["generation"], now))

    def _ping(self, target: redis_access.Target) -> tuple[bool, str]:
        try:
            c = redis_access.client(target)
            try:
                c.ping()
            finally:
                c.close()
            return True, "ok"
        except (redis.RedisError, OSError, ValueError) as e:
            return False, f"{type(e).__name__}: {e}"

    def _cluster_pass(self, gw: Gateway) -> cluster_bootstrap.Report:
        # One pass per cluster at a time: the timer and a spec update must not both MEET and ADDSLOTS at once.
        with self._locks_guard:
            lock = self._cluster_locks.setdefault(f"{gw.namespace}/{gw.name}", threading.Lock())
        if not lock.acquire(timeout=self.settings.cluster_timeout_s):
            return cluster_bootstrap.Report(False, "pending: another pass is working on the cluster")
        try:
            target = self._target(gw)
            return cluster_bootstrap.reconcile_cluster(
                list(target.nodes), gw.redis["replicasPerShard"],
                lambda host, port: redis_access.node_client(target, host, port),
                password=target.password, timeout_s=self.settings.cluster_timeout_s,
            )
        finally:
            lock.release()

    def _spend(self, gw: Gateway, now: dt.datetime) -> dict[str, Any] | None:
        try:
            c = redis_access.client(self._target(gw))
            try:
                figures = spend_reader.read_spend(c, gw.namespace, gw.name, now.date(), prefix=KEY_PREFIX)
                figures["topScopes"] = spend_reader.read_top_scopes(c, gw.namespace, gw.name, now.date(),
                                                                    prefix=KEY_PREFIX)
            finally:
                c.close()
        except (redis.RedisError, OSError, ValueError) as e:
            log.info("spend of %s/%s not read: %s", gw.namespace, gw.name, e)
            return None
        figures["updatedAt"] = _rfc3339(now)
        return figures

    def _generations(self, gw: Gateway, generation: int, now: dt.datetime) -> dict[str, int]:
        """How many sidecars report serving the rendered cache generation (empty when Redis cannot be read)."""
        try:
            c = redis_access.client(self._target(gw))
            try:
                return spend_reader.read_generations(c, gw.namespace, gw.name, generation, now.timestamp(),
                                                     prefix=KEY_PREFIX)
            finally:
                c.close()
        except (redis.RedisError, OSError, ValueError) as e:
            log.info("cache generation reports of %s/%s not read: %s", gw.namespace, gw.name, e)
            return {}

    def _result(self, obs: Observation, previous: dict[str, Any], now: dt.datetime,
                applied: dict[str, str]) -> Result:
        status = build_status(obs, previous, _rfc3339(now))
        events = []
        old, new = ready_condition(previous), ready_condition(status)
        assert new is not None
        if old is None or (old.get("status"), old.get("reason")) != (new["status"], new["reason"]):
            # One event per change of the Ready verdict: precise, and no event storm from the timer.
            kind = "Normal" if new["status"] == "True" else "Warning"
            events.append((kind, new["reason"], new["message"]))
        return Result(status, events, applied)

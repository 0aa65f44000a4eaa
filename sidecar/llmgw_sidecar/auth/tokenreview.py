"""Kubernetes ServiceAccount tokens as caller identity: checked with the TokenReview API, remembered in a bounded LRU
for the token's lifetime (at most `max_cache_s`), and the caller's namespace checked against the allowed ones.

Only hashes of tokens are kept. Concurrent requests with the same unknown token share one TokenReview call.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ..config import NamespaceSelector, TokenReviewConfig
from ..context import Caller
from ..errors import ApiError
from ..metrics import Metrics

log = logging.getLogger("llmgw.auth")

SA_PREFIX = "system:serviceaccount:"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
NAMESPACE_CACHE_S = 30.0


class ReviewUnavailable(Exception):
    """The API server could not be asked (network, timeout, 5xx, our own RBAC): the request gets 503, nothing cached."""


@dataclass(frozen=True, slots=True)
class Reviewed:
    caller: Caller | None  # None: refused
    reason: str  # why refused (for the 401/403 message); never contains the token
    status: int  # 401 or 403 when refused
    until: float  # monotonic time until which this verdict is reused


def token_expiry(token: str) -> float | None:
    """The `exp` claim (Unix seconds) of a JWT, read without checking the signature: only called after the API server
    accepted the token, to bound how long we trust it."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (IndexError, ValueError, TypeError, orjson.JSONDecodeError):
        return None


def trusted_until(now: float, wall_now: float, max_cache_s: float, token: str) -> float:
    """Monotonic time until which an accepted token is reused without asking again: max_cache_s, never past the
    token's own expiry."""
    until = now + max_cache_s
    exp = token_expiry(token)
    return until if exp is None else min(until, now + (exp - wall_now))


def selector_matches(sel: NamespaceSelector, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in sel.match_labels.items()):
        return False
    for e in sel.match_expressions:
        present = e.key in labels
        if e.operator == "In" and (not present or labels[e.key] not in e.values):
            return False
        if e.operator == "NotIn" and present and labels[e.key] in e.values:
            return False
        if e.operator == "Exists" and not present:
            return False
        if e.operator == "DoesNotExist" and present:
            return False
    return True


def default_api_server(environ: dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class KubeClient:
    """The two calls the gateway makes with its own ServiceAccount: create TokenReview, get Namespace."""

    def __init__(self, cfg: TokenReviewConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.base = (cfg.api_server or default_api_server() or "").rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.cfg.ca_file and os.path.exists(self.cfg.ca_file):
            return ssl.create_default_context(cafile=self.cfg.ca_file)
        return True  # system trust store

    def _own_token(self) -> str:
        # Re-read every call: the kubelet rotates the projected token file; calls are rare thanks to the caches.
        try:
            with open(self.cfg.token_file) as f:
                return f.read().strip()
        except OSError as e:
            raise ReviewUnavailable(f"cannot read the gateway's own token {self.cfg.token_file}: {e.strerror}") \
                from None

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if not self.base:
            raise ReviewUnavailable("no Kubernetes API server configured (auth.token_review.api_server)")
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=32))
        headers = {"Authorization": f"Bearer {self._own_token()}", "Accept": "application/json",
                   "Content-Type": "application/json"}
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.cfg.timeout_ms / 1000):
                async with self._session.request(method, self.base + path, headers=headers,
                                                 data=orjson.dumps(body) if body is not None else None) as resp:
                    raw = await resp.read()
                    status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise ReviewUnavailable(f"Kubernetes API {method} {path}: {type(e).__name__}") from None
        finally:
            self.metrics.auth_review_latency.observe(time.perf_counter() - t0)
        if status == 404 and method == "GET":
            return {}
        if status >= 300:
            # 401/403 here are about the gateway's own credentials or RBAC, not the caller's: an outage, not a 401.
            raise ReviewUnavailable(f"Kubernetes API {method} {path}: HTTP {status}")
        try:
            out = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ReviewUnavailable(f"Kubernetes API {method} {path}: answer is not JSON") from None
        return out if isinstance(out, dict) else {}

    async def token_review(self, token: str, audience: str) -> dict[str, Any]:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [audience]}}
        return (await self._call("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body)).get("status") or {}

    async def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        obj = await self._call("GET", f"/api/v1/namespaces/{namespace}")
        if not obj:
            return None
        return dict((obj.get("metadata") or {}).get("labels") or {})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class TokenReviewer:
    def __init__(self, cfg: TokenReviewConfig, gateway_namespace: str, metrics: Metrics,
                 kube: KubeClient | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.gateway_namespace = gateway_namespace
        self.metrics = metrics
        self.kube = kube or KubeClient(cfg, metrics)
        self.clock = clock
        self.wall = wall
        self._cache: OrderedDict[str, Reviewed] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Reviewed]] = {}
        self._namespaces: dict[str, tuple[float, dict[str, str] | None]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    async def caller(self, token: str) -> Caller:
        """The ServiceAccount behind the token, or ApiError 401 (not a valid token for our audience) / 403 (valid, but
        its namespace may not call) / 503 (the API server cannot be asked)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        hit = self._cache.get(digest)
        if hit is not None and hit.until > self.clock():
            self._cache.move_to_end(digest)
            self.metrics.auth_decisions.labels("token_review", "cached").inc()
            return self._verdict(hit)
        fut = self._inflight.get(digest)
        if fut is None:
            fut = self._inflight[digest] = asyncio.ensure_future(self._review_once(digest, token))
        return self._verdict(await asyncio.shield(fut))

    async def _review_once(self, digest: str, token: str) -> Reviewed:
        """The one review of a token that concurrent first requests share. Its verdict is cached in the same step
        that retires it from the in-flight table: were the waiters to cache it when they resume, a request arriving
        in between would find neither and ask the API server again."""
        try:
            verdict = await self._review(token)
        finally:
            del self._inflight[digest]
        if verdict.until > self.clock():
            self._remember(digest, verdict)
        return verdict

    def _remember(self, digest: str, verdict: Reviewed) -> None:
        self._cache[digest] = verdict
        self._cache.move_to_end(digest)
        while len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)

    def _verdict(self, v: Reviewed) -> Caller:
        if v.caller is None:
            code = "invalid_api_key" if v.status == 401 else "namespace_not_allowed"
            raise ApiError(v.status, v.reason, code=code)
        return v.caller

    async def _review(self, token: str) -> Reviewed:
        now = self.clock()
        refused = now + self.cfg.negative_cache_s
        try:
            status = await self.kube.token_review(token, self.cfg.audience)
        except ReviewUnavailable as e:
            self.metrics.auth_decisions.labels("token_review", "error").inc()
            log.warning("TokenReview failed: %s", e)
            raise ApiError(503, "cannot verify the ServiceAccount token right now (Kubernetes API unavailable)",
                           code="auth_unavailable", headers={"Retry-After": "1"}) from None
        user = status.get("user") or {}
        username = str(user.get("username") or "")
        if not status.get("authenticated"):
            self.metrics.auth_decisions.labels("token_review", "denied").inc()
            return Reviewed(None, "invalid, expired or revoked ServiceAccount token (or not issued for audience "
                            f"'{self.cfg.audience}')", 401, refused)
        if self.cfg.audience not in (status.get("audiences") or []):
            # An authenticator that ignores audiences answers with none: such a token is not ours to accept.
            self.metrics.auth_decisions.labels("token_review", "denied").inc()
            return Reviewed(None, f"token is not issued for audience '{self.cfg.audience}'", 401, refused)
        if not username.startswith(SA_PREFIX) or username.count(":") != 3:
            self.metrics.auth_decisions.labels("token_review", "denied").inc()
            return Reviewed(None, "only Kubernetes ServiceAccount tokens are accepted", 401, refused)
        namespace, sa = username[len(SA_PREFIX):].split(":", 1)
        try:
            allowed = await self._namespace_allowed(namespace)
        except ReviewUnavailable as e:
            self.metrics.auth_decisions.labels("token_review", "error").inc()
            log.warning("namespace check failed: %s", e)
            raise ApiError(503, "cannot check the caller's namespace right now (Kubernetes API unavailable)",
                           code="auth_unavailable", headers={"Retry-After": "1"}) from None
        if not allowed:
            self.metrics.auth_decisions.labels("token_review", "forbidden").inc()
            return Reviewed(None, f"namespace '{namespace}' may not use this gateway", 403, refused)
        pods = (user.get("extra") or {}).get(POD_NAME_EXTRA) or ["-"]
        caller = Caller(namespace=namespace, pod=str(pods[0]), service_account=sa,
                        api_key_hash=hashlib.sha256(f"sa:{namespace}/{sa}".encode()).hexdigest()[:16])
        until = trusted_until(now, self.wall(), self.cfg.max_cache_s, token)
        self.metrics.auth_decisions.labels("token_review", "ok").inc()
        return Reviewed(caller, "", 200, until)

    async def _namespace_allowed(self, namespace: str) -> bool:
        sel = self.cfg.allowed_namespaces
        if sel is None:
            return namespace == self.gateway_namespace
        if not sel.match_labels and not sel.match_expressions:
            return True
        now = self.clock()
        cached = self._namespaces.get(namespace)
        if cached is None or cached[0] <= now:
            if len(self._namespaces) > 10_000:  # bounded: the set of namespaces is small, but never trust that
                self._namespaces.clear()
            cached = (now + NAMESPACE_CACHE_S, await self.kube.namespace_labels(namespace))
            self._namespaces[namespace] = cached
        labels = cached[1]
        return labels is not None and selector_matches(sel, labels)

    async def close(self) -> None:
        await self.kube.close()


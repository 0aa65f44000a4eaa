"""Caller identity of a shared gateway (`auth.mode: gateway`), in this order: a virtual key, a Kubernetes
ServiceAccount token (TokenReview), anonymous only when allowed. In pod mode (the sidecar) none of this runs: the caller
is the pod, from the downward API."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..context import Caller
from ..errors import ApiError
from ..metrics import Metrics
from .tokenreview import TokenReviewer
from .virtual_keys import VirtualKeys

ANONYMOUS = Caller(namespace="system:anonymous", pod="-", service_account="anonymous")


def bearer(request: web.Request) -> str | None:
    raw = request.headers.get("Authorization")
    if not raw:
        return None
    scheme, _, token = raw.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Authorization header must be 'Bearer <token>'", code="invalid_api_key")
    return token.strip()


class Identity:
    def __init__(self, config: Config, metrics: Metrics, reviewer: TokenReviewer | None = None) -> None:
        auth = config.auth
        self.metrics = metrics
        self.allow_anonymous = auth.allow_anonymous
        self.keys = VirtualKeys(auth.virtual_keys.dir)
        self.reviewer = reviewer
        if self.reviewer is None and auth.token_review.enabled:
            self.reviewer = TokenReviewer(auth.token_review, config.gateway.namespace, metrics)

    async def caller(self, request: web.Request) -> Caller:
        """Who sent this request, or ApiError 401/403/503 (OpenAI error format)."""
        token = bearer(request)
        if token is None:
            if self.allow_anonymous:
                self.metrics.auth_decisions.labels("anonymous", "ok").inc()
                return ANONYMOUS
            self.metrics.auth_decisions.labels("none", "denied").inc()
            raise ApiError(401, "this gateway needs a bearer token: a Kubernetes ServiceAccount token (audience "
                           "llmgateway.dev) or a virtual key", code="missing_api_key")
        caller = self.keys.lookup(token)
        if caller is not None:
            self.metrics.auth_decisions.labels("virtual_key", "ok").inc()
            return caller
        # ServiceAccount tokens are JWTs ("eyJ..." = '{"'); anything else cannot be one: refuse without an API call.
        if self.reviewer is not None and token.startswith("eyJ") and token.count(".") == 2:
            return await self.reviewer.caller(token)
        self.metrics.auth_decisions.labels("virtual_key", "denied").inc()
        raise ApiError(401, "invalid API key: neither a virtual key of this gateway nor a ServiceAccount token",
                       code="invalid_api_key")

    async def close(self) -> None:
        if self.reviewer is not None:
            await self.reviewer.close()


def build_identity(config: Config, metrics: Metrics) -> Identity | None:
    return Identity(config, metrics) if config.auth.mode == "gateway" else None


__all__ = ["ANONYMOUS", "Identity", "TokenReviewer", "VirtualKeys", "build_identity"]

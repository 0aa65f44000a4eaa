"""The optional stages of the request path. The app calls them at fixed points when they are configured:

    parse -> governor.admit (scope limits, budgets) -> exact lookup -> semantic.lookup
          -> governor.admit_model (model limits, misses only) -> upstream -> exact/semantic store (background)
          -> governor.settle + spend.record (always, hits and errors included)

Each stage is built from the Config by its own module and handed to the app; the app knows only these protocols.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from .context import CachedAnswer, RequestContext


class SemanticLayer(Protocol):
    async def lookup(self, ctx: RequestContext) -> CachedAnswer | None:
        """A cached answer to a paraphrase of this request, or None. Never raises: trouble is a miss."""

    def store(self, ctx: RequestContext, answer: CachedAnswer) -> None:
        """Schedule storing a complete successful answer in the background. Never raises."""

    async def close(self) -> None: ...


class Governor(Protocol):
    """Rate limits and budgets."""

    async def admit(self, ctx: RequestContext, *, with_model: bool = True) -> None:
        """Reserve capacity of the scope limits and budgets (and of the model limits when `with_model`: a request no
        cache can answer) or raise ApiError(429, code=rate_limit_exceeded|budget_exceeded) with Retry-After, or 503
        (rate_limiter_timeout / rate_limiter_unavailable). Puts x-ratelimit-* / x-llmgw-budget-remaining headers into
        ctx.headers."""

    async def admit_model(self, ctx: RequestContext) -> None:
        """On the way upstream (after a cache miss): reserve capacity of the model limits, or raise as `admit` (the
        scope reservation is then given back). A no-op when `admit` decided them already."""

    async def settle(self, ctx: RequestContext) -> None:
        """After the answer (success, error or hit): charge the real usage against the reservation. Never raises."""

    async def close(self) -> None: ...


class SpendRecorder(Protocol):
    def record(self, ctx: RequestContext) -> None:
        """Buffer one spend record for this request (non-blocking). Never raises."""

    async def handle(self, request: web.Request) -> web.Response:
        """GET /spend: this process's view of the gateway's totals (ApiError 404 when spend is off)."""

    async def close(self) -> None:
        """Flush what is buffered (bounded time) before the process exits."""

"""The optional stages of the request path. The app calls them at fixed points when they are configured:

    parse -> governor.admit -> exact lookup -> semantic.lookup -> upstream -> exact/semantic store (background)
          -> governor.settle + spend.record (always, hits and errors included)

Each stage is built from the Config by its own module and handed to the app; the app knows only these protocols.
"""

from __future__ import annotations

from typing import Protocol

from .context import CachedAnswer, RequestContext


class SemanticLayer(Protocol):
    async def lookup(self, ctx: RequestContext) -> CachedAnswer | None:
        """A cached answer to a paraphrase of this request, or None. Never raises: trouble is a miss."""

    def store(self, ctx: RequestContext, answer: CachedAnswer) -> None:
        """Schedule storing a complete successful answer in the background. Never raises."""

    async def close(self) -> None: ...


class Governor(Protocol):
    """Rate limits and budgets."""

    async def admit(self, ctx: RequestContext) -> None:
        """Reserve capacity or raise ApiError(429, code=rate_limit_exceeded|budget_exceeded) with Retry-After.
        Puts x-ratelimit-* / x-llmgw-budget-remaining headers into ctx.headers."""

    async def settle(self, ctx: RequestContext) -> None:
        """After the answer (success, error or hit): charge the real usage against the reservation. Never raises."""

    async def close(self) -> None: ...


class SpendRecorder(Protocol):
    def record(self, ctx: RequestContext) -> None:
        """Buffer one spend record for this request (non-blocking). Never raises."""

    async def close(self) -> None:
        """Flush what is buffered (bounded time) before the process exits."""

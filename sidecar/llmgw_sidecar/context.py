"""What one request carries through the pipeline, and what a cache hands back.

The app builds a RequestContext after parsing; every stage (limits, caches, upstream, accounting) reads and fills it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import ModelConfig

if TYPE_CHECKING:  # caller_scope imports Caller from here
    from .caller_scope import CachePartition


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """Limits and a budget of one virtual key (gateway mode), on top of the configured scope limits and budgets."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: str = "day"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: pod identity from downward-API env, plus a hash of the bearer token if the app sent one.
    In gateway mode (auth/) the identity comes from a ServiceAccount token or a virtual key instead."""

    namespace: str
    pod: str
    service_account: str
    api_key_hash: str | None = None
    policy: KeyPolicy | None = None  # a virtual key's own limits and budget


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    """Per-request cache controls from `Cache-Control` headers and the LiteLLM-style body field `cache`."""

    no_cache: bool = False  # do not read
    no_store: bool = False  # do not write
    ttl_s: int | None = None  # lifetime of what is written
    namespace: str | None = None  # extra partition inside the caller scope
    max_age_s: int | None = None  # oldest cached answer the caller accepts (s-maxage, request max-age)
    use_cache: bool | None = None  # LiteLLM use-cache: opt in (cache.mode default_off) or out


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    estimated: bool = False  # True when the upstream reported no usage and we counted ourselves

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class CachedAnswer:
    """A stored answer. `body` is the non-streamed JSON as the upstream sent it (or assembled from a stream);
    `sse` is the streamed form without the usage-only chunk and without `data: [DONE]`; `sse_usage` is that chunk."""

    body: bytes
    created: float
    sse: bytes | None = None
    sse_usage: bytes | None = None
    usage: Usage | None = None
    distance: float | None = None  # set on semantic hits
    score: float | None = None  # the pair model's probability, when it decided


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str  # "chat", "completions" or "embeddings"
    model: ModelConfig
    body: dict[str, Any]  # the parsed request (do not mutate: the upstream gets `upstream_body()`)
    caller: Caller
    scope: CachePartition  # the cache partition (caller_scope.py), e.g. "gw:default/local|ns:team-a"
    directives: CacheDirectives = field(default_factory=CacheDirectives)
    stream: bool = False
    client_wants_usage: bool = False  # stream_options.include_usage set by the client
    started: float = field(default_factory=time.perf_counter)
    wall_started: float = field(default_factory=time.time)
    cache_key: str | None = None  # exact-cache key, once computed
    cache_result: str = "none"  # hit-exact | hit-semantic | miss | bypass; none: refused before the cache
    usage: Usage | None = None  # filled from the answer (or the cached answer on hits)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (rate limits, budgets, ...)
    state: dict[str, Any] = field(default_factory=dict)  # per-stage scratch (e.g. a rate-limit reservation)

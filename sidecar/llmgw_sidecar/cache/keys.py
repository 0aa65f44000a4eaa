"""Cache keys: the fingerprint of a request (the partition a caller may share answers in comes from caller_scope.py).

The fingerprint covers the upstream identity (who produced the answer) and every field that can change the output;
fields that only track, bill or transport (user, metadata, stream, cache controls...) are left out so that they never
split or leak the cache. Exact and semantic keys both derive from `canonical()` with `upstream_identity()`.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

import orjson

from ..caller_scope import CachePartition
from ..config import ModelConfig, Provider

# Never part of the fingerprint: they do not change what the model answers.
NON_OUTPUT_FIELDS = frozenset({
    "user", "metadata", "cache", "stream", "stream_options", "store", "service_tier", "safety_identifier",
    "prompt_cache_key", "prompt_cache_retention", "request_id", "extra_headers", "timeout",
})


_IDENTITIES: dict[int, tuple[ModelConfig, str]] = {}


def upstream_identity(model: ModelConfig) -> str:
    """Who answers for this model: provider, base URL (scheme and host lower-cased, no trailing slash), upstream
    model or Azure deployment, api-version; for the mock, its settings (they change its answers). Changing any of
    them changes every cache key of the model, so one upstream's answers are never served for another's.
    Only ever hashed into keys (a base URL may carry credentials)."""
    hit = _IDENTITIES.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    if model.provider == Provider.mock:
        ident = f"mock|{model.upstream_model}|{model.mock.model_dump_json()}"
    else:
        base = (model.base_url or "").rstrip("/")
        scheme, sep, rest = base.partition("://")
        host, slash, path = rest.partition("/")
        base = f"{scheme.lower()}{sep}{host.lower()}{slash}{path}"
        ident = f"{model.provider.value}|{base}|{model.upstream_model}|{model.api_version or ''}"
    if len(_IDENTITIES) > 1000:  # one entry per model of the live runtimes; reloads add new objects
        _IDENTITIES.clear()
    _IDENTITIES[id(model)] = (model, ident)
    return ident


def canonical(endpoint: str, upstream: str, body: dict[str, Any], drop: frozenset[str] = frozenset()) -> bytes:
    """Deterministic bytes for the output-relevant part of a request (sorted keys, compact). `upstream` is
    `upstream_identity(model)`."""
    fields = {k: v for k, v in body.items() if k not in NON_OUTPUT_FIELDS and k not in drop and v is not None}
    fields["model"] = upstream
    return orjson.dumps({"e": endpoint, "r": fields}, option=orjson.OPT_SORT_KEYS)


def fingerprint(endpoint: str, upstream: str, body: dict[str, Any], drop: frozenset[str] = frozenset()) -> str:
    return hashlib.sha256(canonical(endpoint, upstream, body, drop)).hexdigest()


def key_part(value: str) -> str:
    """A user-controlled key component (model name, cache namespace) with the separators and glob characters
    percent-encoded, so a key always parses back and a SCAN pattern built from it matches only what it says."""
    return quote(value, safe="-._~@/=+,")


def exact_key(prefix: str, scope: CachePartition, namespace: str | None, digest: str, *, generation: int | None = None,
              model: str | None = None) -> str:
    """`{prefix}:exact:{scope}|g:{generation}[|cns:{namespace}][|m:{model}]:{fingerprint}`. The generation and the
    model are in the key so that invalidation by generation or model is a SCAN pattern (cache.admin parses it)."""
    gen = f"|g:{generation}" if generation is not None else ""
    ns = f"|cns:{key_part(namespace)}" if namespace else ""
    m = f"|m:{key_part(model)}" if model else ""
    return f"{prefix}:exact:{scope}{gen}{ns}{m}:{digest}"


def api_key_hash(authorization: str | None) -> str | None:
    """A short stable hash of the app's bearer token (never the token itself) for api_key scopes."""
    if not authorization:
        return None
    token = authorization.removeprefix("Bearer ").strip()
    if not token:
        return None
    # surrogateescape: a header with bytes that are not UTF-8 still hashes (aiohttp decodes them that way)
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:16]

"""Per-request cache controls: LiteLLM's body field `cache` with LiteLLM's meaning, `Cache-Control` with RFC 9111's.

| control | meaning |
|---|---|
| `cache.ttl` | lifetime of the answer written now (seconds; 0 = do not store) |
| `cache.s-maxage` | maximum acceptable AGE of a cached answer (LiteLLM); an older one is a miss and is refreshed |
| `cache.no-cache` | do not read the cache (the fresh answer is still written) |
| `cache.no-store` | do not write the answer |
| `cache.namespace` | a separate partition of the cache |
| `cache.use-cache` | opt in when `cache.mode` is default_off (LiteLLM); false opts out |
| `Cache-Control: max-age=N` | maximum acceptable age (RFC 9111 request directive); max-age=0 = do not read |
| `Cache-Control: no-cache` / `no-store` | as RFC 9111: do not read / do not write |
| `Cache-Control: s-maxage=N` | the write-TTL directive we keep: store for N seconds (RFC 9111's shared-cache lifetime) |
The body wins where both speak.
"""

from __future__ import annotations

from typing import Any

from .config import CacheConfig
from .context import CacheDirectives
from .errors import ApiError

BODY_CONTROLS = "ttl, s-maxage, no-cache, no-store, namespace, use-cache"


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, code="invalid_request", param=param)


# Bounds (docs/operations.md, "Limits"): a write TTL above MAX_TTL_S is a 400 naming the field (Redis refuses
# absurd expiries, and such a request must not reach it); an age bound is only compared, so a larger one is clamped.
MAX_TTL_S = 365 * 24 * 3600
DELTA_SECONDS_CAP = 2**31  # RFC 9111 section 1.2.2: larger delta-seconds are read as this


def _seconds(value: Any, name: str, param: str, *, clamp: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:  # NaN fails >= too
        raise _bad(f"'{name}' must be a non-negative number of seconds", param)
    if value > MAX_TTL_S:
        if not clamp:
            raise _bad(f"'{name}' must be at most {MAX_TTL_S} seconds (one year)", param)
        return MAX_TTL_S
    return int(value)


def _header(cache_control: str, d: dict[str, Any]) -> None:
    for part in cache_control.lower().split(","):
        name, _, value = part.strip().partition("=")
        value = value.strip().strip('"')
        if name in ("max-age", "s-maxage"):
            if not (value.isascii() and value.isdigit()):  # str.isdigit() also accepts e.g. superscripts
                raise _bad(f"Cache-Control {name} must be a whole number of seconds", "Cache-Control")
            # Large delta-seconds are clamped (RFC 9111 reads anything above 2**31 as 2**31), here to MAX_TTL_S:
            # an age bound beyond the longest possible lifetime changes nothing.
            n = int(value) if len(value) <= 10 else DELTA_SECONDS_CAP
            d["max_age_s" if name == "max-age" else "ttl_s"] = min(n, DELTA_SECONDS_CAP, MAX_TTL_S)
        elif name in ("no-cache", "no-store"):
            d[name.replace("-", "_")] = True
        # Other directives (max-stale, min-fresh, only-if-cached, no-transform) do not change what we do.


def _body(body_cache: Any, d: dict[str, Any]) -> None:
    if not isinstance(body_cache, dict):
        raise _bad("'cache' must be an object", "cache")
    for key, value in body_cache.items():
        norm = key.replace("_", "-")
        if norm in ("no-cache", "no-store", "use-cache"):
            if not isinstance(value, bool):
                raise _bad(f"'cache.{key}' must be a boolean", f"cache.{key}")
            d[norm.replace("-", "_")] = value
        elif norm == "ttl":
            d["ttl_s"] = _seconds(value, f"cache.{key}", f"cache.{key}")
        elif norm == "s-maxage":
            d["max_age_s"] = _seconds(value, f"cache.{key}", f"cache.{key}", clamp=True)
        elif norm == "namespace":
            if not isinstance(value, str) or not value or len(value) > 128:
                raise _bad("'cache.namespace' must be a string of 1-128 characters", "cache.namespace")
            d["namespace"] = value
        else:
            raise _bad(f"'cache.{key}' is not a known cache control ({BODY_CONTROLS})", "cache")


def cache_directives(cache_control: str | None, body_cache: Any, cache_cfg: CacheConfig | None = None,
                     endpoint: str | None = None) -> CacheDirectives:
    """The request's controls, combined with the config's `cache.endpoints` and `cache.mode` when given."""
    d: dict[str, Any] = {"no_cache": False, "no_store": False, "ttl_s": None, "namespace": None, "max_age_s": None,
                         "use_cache": None}
    if cache_control:
        _header(cache_control, d)
    if body_cache is not None:
        _body(body_cache, d)
    if d["ttl_s"] == 0:
        d["no_store"] = True  # nothing to keep for zero seconds
    if d["max_age_s"] == 0:
        d["no_cache"] = True  # no stored answer is young enough
    if cache_cfg is not None:
        off_here = endpoint is not None and endpoint not in cache_cfg.endpoints
        opted_out = d["use_cache"] is False or (cache_cfg.mode == "default_off" and not d["use_cache"])
        if off_here or opted_out:
            d["no_cache"] = d["no_store"] = True
    return CacheDirectives(**d)


def too_old(created: float, now: float, directives: CacheDirectives) -> bool:
    """s-maxage / max-age: an answer older than the caller accepts is treated as a miss."""
    return directives.max_age_s is not None and now - created > directives.max_age_s

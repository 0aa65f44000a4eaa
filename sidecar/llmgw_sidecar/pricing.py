"""Cost of one request from its usage, in integer nano-USD (1e-9 USD) so that sums are exact: no float drift."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .config import ModelConfig, Pricing
from .context import Usage
from .prices import PRICES

NANO = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """Nano-USD per token (USD per 1M tokens x 1000)."""

    input: float
    cached_input: float
    output: float

    @classmethod
    def per_1m(cls, input_: float, cached: float | None, output: float) -> Price:
        return cls(input_ * 1000, (input_ if cached is None else cached) * 1000, output * 1000)


def builtin_price(model_id: str) -> Price | None:
    """The built-in price of a model id; dated snapshots match their base id by the longest prefix."""
    mid = model_id.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" and "gpt-4o" price the same
    if mid in PRICES:
        return Price.per_1m(*PRICES[mid])
    best = ""
    for k in PRICES:
        if mid.startswith(k + "-") and len(k) > len(best):
            best = k
    return Price.per_1m(*PRICES[best]) if best else None


def price_for(model: ModelConfig) -> Price | None:
    """Config override first, then the built-in table by upstream id, then by public name. None = unknown."""
    p: Pricing | None = model.pricing
    if p is not None:
        return Price.per_1m(p.input_per_1m, p.cached_input_per_1m, p.output_per_1m)
    return builtin_price(model.upstream_model) or builtin_price(model.name)


def cost_nusd(price: Price, usage: Usage) -> int:
    """Cached prompt tokens are part of prompt_tokens (OpenAI semantics) and billed at the cached rate."""
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    fresh = usage.prompt_tokens - cached
    return round(fresh * price.input + cached * price.cached_input + usage.completion_tokens * price.output)


def nusd_to_usd(n: int) -> float:
    return n / NANO


def _text_len(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(_text_len(p.get("text", "")) if isinstance(p, dict) else _text_len(p) for p in content)
    return 0


def _prompt_part_chars(x: Any) -> int:
    """One element of an OpenAI prompt/input array: a string, a token id, or an array of token ids (4 chars each)."""
    if isinstance(x, str):
        return len(x)
    if isinstance(x, int):
        return 4
    if isinstance(x, list):
        return 4 * len(x)
    return 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """~4 characters per token plus a small per-message overhead: cheap, and corrected at settle time."""
    chars, msgs = 0, 0
    for m in body.get("messages") or []:
        if isinstance(m, dict):
            chars += _text_len(m.get("content"))
            msgs += 1
    for k in ("prompt", "input"):
        v = body.get(k)
        if isinstance(v, str):
            chars += len(v)
        elif isinstance(v, list):
            chars += sum(_prompt_part_chars(x) for x in v)
    return math.ceil(chars / 4) + 4 * msgs + 1


def estimate_completion_tokens(body: dict[str, Any], endpoint: str, default_max: int) -> int:
    if endpoint == "embeddings":
        return 0
    for k in ("max_completion_tokens", "max_tokens"):
        v = body.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return default_max

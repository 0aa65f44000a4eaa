"""Built-in list prices in USD per 1M tokens: (input, cached input, output).

Source: the providers' public price pages (OpenAI API pricing, Anthropic API pricing) as of PRICES_DATE. Azure OpenAI
bills the same list prices for global deployments. Prices change: override any model with `models[].pricing`.
Keys are upstream model ids; dated snapshots ("gpt-4o-2024-08-06") match their base id by longest prefix.
"""

from __future__ import annotations

PRICES_DATE = "2025-08-15"

# model id prefix -> (input, cached input or None = same as input, output)
PRICES: dict[str, tuple[float, float | None, float]] = {
    # OpenAI / Azure OpenAI chat models
    "gpt-5": (1.25, 0.125, 10.00),
    "gpt-5-mini": (0.25, 0.025, 2.00),
    "gpt-5-nano": (0.05, 0.005, 0.40),
    "gpt-4.1": (2.00, 0.50, 8.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4-turbo": (10.00, None, 30.00),
    "gpt-4": (30.00, None, 60.00),
    "gpt-3.5-turbo": (0.50, None, 1.50),
    "o1": (15.00, 7.50, 60.00),
    "o1-mini": (1.10, 0.55, 4.40),
    "o3": (2.00, 0.50, 8.00),
    "o3-mini": (1.10, 0.55, 4.40),
    "o4-mini": (1.10, 0.275, 4.40),
    # OpenAI embeddings (no output tokens)
    "text-embedding-3-small": (0.02, None, 0.0),
    "text-embedding-3-large": (0.13, None, 0.0),
    "text-embedding-ada-002": (0.10, None, 0.0),
    # Anthropic through an OpenAI-compatible endpoint (cached input = cache read price)
    "claude-opus-4": (15.00, 1.50, 75.00),
    "claude-sonnet-4": (3.00, 0.30, 15.00),
    "claude-3-7-sonnet": (3.00, 0.30, 15.00),
    "claude-3-5-sonnet": (3.00, 0.30, 15.00),
    "claude-3-5-haiku": (0.80, 0.08, 4.00),
    "claude-3-haiku": (0.25, 0.03, 1.25),
}

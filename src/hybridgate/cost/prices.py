"""Built-in list prices of common cloud models (USD per million tokens).

Public list prices as published by the providers, as of :data:`PRICES_AS_OF`. Prices change:
override or extend them under ``pricing.models`` in the configuration (exact upstream model
names win over these; a dated model name such as ``gpt-4o-mini-2024-07-18`` falls back to its
family by longest prefix). Unknown cloud models are priced at zero and flagged in explanations,
so that a missing price is visible rather than silently cheap.
"""

from __future__ import annotations

from collections.abc import Mapping

from hybridgate.config.pricing import TokenPrice

PRICES_AS_OF = "2026-11-01"


def _p(input_: float, output: float, cached: float | None = None) -> TokenPrice:
    return TokenPrice(input_per_mtok=input_, output_per_mtok=output, cached_input_per_mtok=cached)


DEFAULT_PRICES: Mapping[str, TokenPrice] = {
    # OpenAI
    "gpt-4o": _p(2.50, 10.00, 1.25),
    "gpt-4o-mini": _p(0.15, 0.60, 0.075),
    "gpt-4.1": _p(2.00, 8.00, 0.50),
    "gpt-4.1-mini": _p(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _p(0.10, 0.40, 0.025),
    "gpt-5": _p(1.25, 10.00, 0.125),
    "gpt-5-mini": _p(0.25, 2.00, 0.025),
    "gpt-5-nano": _p(0.05, 0.40, 0.005),
    "o3": _p(2.00, 8.00, 0.50),
    "o4-mini": _p(1.10, 4.40, 0.275),
    "text-embedding-3-small": _p(0.02, 0.0),
    "text-embedding-3-large": _p(0.13, 0.0),
    # Anthropic
    "claude-opus-4": _p(15.00, 75.00, 1.50),
    "claude-sonnet-4": _p(3.00, 15.00, 0.30),
    "claude-sonnet-4-5": _p(3.00, 15.00, 0.30),
    "claude-haiku-4-5": _p(1.00, 5.00, 0.10),
    "claude-3-5-haiku": _p(0.80, 4.00, 0.08),
}


def default_price(model: str, overrides: Mapping[str, TokenPrice] | None = None) -> TokenPrice | None:
    """The price of ``model``: an exact entry (overrides first), else the longest family prefix."""
    tables = (overrides or {}, DEFAULT_PRICES)
    for table in tables:
        if model in table:
            return table[model]
    best: TokenPrice | None = None
    best_len = 0
    for table in tables:
        for name, price in table.items():
            if model.startswith(name) and len(name) > best_len:
                best, best_len = price, len(name)
    return best

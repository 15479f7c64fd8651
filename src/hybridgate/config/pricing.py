"""Prices: cloud tokens, egress, and local hardware and energy (so local is never free)."""

from __future__ import annotations

from pydantic import Field

from hybridgate.config.base import Strict


class TokenPrice(Strict):
    """USD per million tokens."""

    input_per_mtok: float = Field(..., ge=0, description="USD per million prompt tokens.")
    output_per_mtok: float = Field(..., ge=0, description="USD per million completion tokens.")
    cached_input_per_mtok: float | None = Field(
        None, ge=0, description="USD per million cached prompt tokens (default: the input price)."
    )


class LocalCost(Strict):
    """What an hour of a local runtime costs; divided by its throughput it prices local tokens."""

    hardware_usd_per_hour: float = Field(
        0.10, ge=0, description="Hardware amortisation (purchase price / useful hours), USD per hour."
    )
    watts: float = Field(65.0, ge=0, description="Power draw while generating, watts.")
    energy_usd_per_kwh: float = Field(0.20, ge=0, description="Electricity price, USD per kWh.")


class PricingConfig(Strict):
    models: dict[str, TokenPrice] = Field(
        default_factory=dict,
        description="Prices by upstream model name; merged over the built-in table (see docs/cost.md).",
    )
    egress_usd_per_gb: dict[str, float] = Field(
        default_factory=dict,
        description="Egress price by 'from->to' region pair (or 'default'); local->local is free.",
    )
    local: LocalCost = Field(default_factory=LocalCost, description="Default cost of local runtimes.")

"""What one request costs on one deployment, before (estimate) and after (actual).

Cloud: tokens at the provider's prices (cached prompt tokens at their own price) plus egress of
the bytes sent and received, priced by region pair. Local: the runtime's hourly cost —
hardware amortisation plus energy (watts x price) — for the seconds the request occupied it,
which is the same as dividing the hourly cost by the measured throughput. So local is never free,
and local and cloud compare in one currency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from hybridgate.config.pricing import LocalCost, PricingConfig, TokenPrice
from hybridgate.config.schema import AnyDeployment, GatewayConfig, effective_placement
from hybridgate.cost.prices import default_price
from hybridgate.types import Placement

_GB = 1e9


class CostBreakdown(NamedTuple):
    """USD, split by what was paid for."""

    tokens: float = 0.0
    egress: float = 0.0
    compute: float = 0.0
    priced: bool = True  # False: a cloud model with no known price (counted as 0, flagged)

    @property
    def total(self) -> float:
        return self.tokens + self.egress + self.compute


@dataclass(frozen=True, slots=True)
class CostModel:
    """Prices of one deployment, precomputed per token, per byte and per second."""

    deployment: str
    placement: Placement
    region: str
    input_per_token: float
    output_per_token: float
    cached_input_per_token: float
    compute_per_second: float
    egress_per_byte: Mapping[str, float]  # origin region -> USD per byte (both directions)
    default_egress_per_byte: float
    priced: bool

    def _egress(self, origin: str, n_bytes: int) -> float:
        if self.placement == "local":
            return 0.0
        return n_bytes * self.egress_per_byte.get(origin, self.default_egress_per_byte)

    def estimate(
        self, prompt_tokens: int, output_tokens: int, n_bytes: int, origin: str, seconds: float
    ) -> CostBreakdown:
        """Expected cost of a request: ``seconds`` is the predicted time it occupies the runtime."""
        return self._cost(prompt_tokens, 0, output_tokens, n_bytes, origin, seconds)

    def actual(
        self,
        prompt_tokens: int,
        cached_prompt_tokens: int,
        output_tokens: int,
        n_bytes: int,
        origin: str,
        seconds: float,
    ) -> CostBreakdown:
        """What a finished request cost, from its reported usage and measured duration."""
        return self._cost(prompt_tokens, cached_prompt_tokens, output_tokens, n_bytes, origin, seconds)

    def _cost(
        self, prompt: int, cached: int, output: int, n_bytes: int, origin: str, seconds: float
    ) -> CostBreakdown:
        if self.placement == "local":
            return CostBreakdown(compute=max(0.0, seconds) * self.compute_per_second)
        uncached = max(0, prompt - cached)
        tokens = (
            uncached * self.input_per_token
            + cached * self.cached_input_per_token
            + output * self.output_per_token
        )
        return CostBreakdown(tokens=tokens, egress=self._egress(origin, n_bytes), priced=self.priced)


def _local_per_second(cost: LocalCost) -> float:
    per_hour = cost.hardware_usd_per_hour + cost.watts / 1000.0 * cost.energy_usd_per_kwh
    return per_hour / 3600.0


def _egress_table(pricing: PricingConfig, region: str) -> tuple[dict[str, float], float]:
    """USD per byte by origin region for data going to ``region``, and the default."""
    table: dict[str, float] = {}
    default = pricing.egress_usd_per_gb.get("default", 0.0) / _GB
    for pair, usd_per_gb in pricing.egress_usd_per_gb.items():
        origin, sep, destination = pair.partition("->")
        if sep and destination.strip() == region:
            table[origin.strip()] = usd_per_gb / _GB
    return table, default


def cost_model(name: str, dep: AnyDeployment, pricing: PricingConfig) -> CostModel:
    placement = effective_placement(dep)
    price: TokenPrice | None = dep.price
    upstream_model = getattr(dep, "model", None)
    if price is None and placement == "cloud" and isinstance(upstream_model, str):
        price = default_price(upstream_model, pricing.models)
    per_m = 1e-6
    egress, default_egress = _egress_table(pricing, dep.region)
    return CostModel(
        deployment=name,
        placement=placement,
        region=dep.region,
        input_per_token=(price.input_per_mtok * per_m) if price else 0.0,
        output_per_token=(price.output_per_mtok * per_m) if price else 0.0,
        cached_input_per_token=(
            (price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok)
            * per_m
            if price
            else 0.0
        ),
        compute_per_second=_local_per_second(dep.local_cost or pricing.local)
        if placement == "local"
        else 0.0,
        egress_per_byte=egress,
        default_egress_per_byte=default_egress,
        priced=placement == "local" or price is not None,
    )


def build_cost_models(config: GatewayConfig) -> dict[str, CostModel]:
    return {name: cost_model(name, dep, config.pricing) for name, dep in config.deployments.items()}

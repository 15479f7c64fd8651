"""The cost model: cloud tokens, egress, and local hardware and energy, priced alike."""

from hybridgate.cost.model import CostBreakdown, CostModel, build_cost_models
from hybridgate.cost.prices import PRICES_AS_OF, default_price

__all__ = ["PRICES_AS_OF", "CostBreakdown", "CostModel", "build_cost_models", "default_price"]

"""Running totals of what requests cost, by tenant, class, placement and deployment (in memory).

Failed attempts are recorded but never billed as completions: only the answer that was served
is charged, to the deployment that produced it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(slots=True)
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    egress_bytes: int = 0


class Ledger:
    def __init__(self) -> None:
        self._totals: dict[tuple[str, str, str, str], Totals] = defaultdict(Totals)

    def record(
        self,
        *,
        tenant: str,
        workload_class: str,
        placement: str,
        deployment: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        egress_bytes: int = 0,
    ) -> None:
        t = self._totals[(tenant, workload_class, placement, deployment)]
        t.requests += 1
        t.prompt_tokens += prompt_tokens
        t.completion_tokens += completion_tokens
        t.cost_usd += cost_usd
        t.egress_bytes += egress_bytes

    def totals(self, by: str = "placement") -> dict[str, Totals]:
        """Aggregated by one of ``tenant``, ``class``, ``placement``, ``deployment``."""
        index = {"tenant": 0, "class": 1, "placement": 2, "deployment": 3}[by]
        out: dict[str, Totals] = defaultdict(Totals)
        for key, t in self._totals.items():
            agg = out[key[index]]
            agg.requests += t.requests
            agg.prompt_tokens += t.prompt_tokens
            agg.completion_tokens += t.completion_tokens
            agg.cost_usd += t.cost_usd
        return dict(out)

    def rows(self) -> list[tuple[tuple[str, str, str, str], Totals]]:
        """((tenant, class, placement, deployment), totals), one row per key seen."""
        return list(self._totals.items())

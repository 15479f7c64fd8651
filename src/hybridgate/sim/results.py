"""What one simulated run measured, and its JSON form.

Per workload class: latencies of answered requests (p50/p95/p99 against the class budget), SLO
attainment (answered within the p95 budget, over all requests: a failed or refused request
misses), answers by placement. Per run: cost by placement (the real cost model), bytes sent to
and received from the cloud, governance violations, retries, failovers, hedges, breaker skips,
queue depths and answers by placement over time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def quantile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank quantile of an ascending list (None when empty)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(slots=True)
class ClassResult:
    name: str
    p95_budget_s: float
    p99_budget_s: float
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    failed: int = 0
    refused: int = 0
    within_budget: int = 0
    by_placement: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        p50, p95, p99 = (quantile(ordered, q) for q in (0.5, 0.95, 0.99))
        return {
            "requests": self.requests,
            "answered": len(ordered),
            "failed": self.failed,
            "refused": self.refused,
            "p50_s": _r(p50),
            "p95_s": _r(p95),
            "p99_s": _r(p99),
            "p95_budget_s": self.p95_budget_s,
            "p99_budget_s": self.p99_budget_s,
            "p95_met": p95 is not None and p95 <= self.p95_budget_s,
            "slo_attainment": _r(self.within_budget / self.requests if self.requests else None),
            "by_placement": dict(sorted(self.by_placement.items())),
        }


@dataclass(slots=True)
class RunResult:
    router: str
    classes: dict[str, ClassResult]
    simulated_s: float = 0.0
    cost_usd: dict[str, float] = field(default_factory=lambda: {"local": 0.0, "cloud": 0.0})
    egress_bytes: int = 0
    violations: int = 0
    violations_by_class: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)  # by deployment
    errors: Counter[str] = field(default_factory=Counter)  # failed attempts by kind
    retries: int = 0
    failovers: int = 0
    hedges: int = 0
    hedges_won: int = 0
    breaker_skips: int = 0
    budget_denied: int = 0
    series_t: list[float] = field(default_factory=list)
    series_queue: dict[str, list[int]] = field(default_factory=dict)  # waiting attempts by deployment
    series_answers: dict[str, list[int]] = field(default_factory=dict)  # answers per sample, by placement
    series_deployments: dict[str, list[int]] = field(
        default_factory=dict
    )  # answers per sample, by deployment
    wall_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.classes.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "router": self.router,
            "requests": self.requests,
            "simulated_s": round(self.simulated_s, 3),
            "classes": {name: c.to_dict() for name, c in sorted(self.classes.items())},
            "cost_usd": {k: round(v, 6) for k, v in sorted(self.cost_usd.items())},
            "cost_usd_total": round(sum(self.cost_usd.values()), 6),
            "egress_bytes": self.egress_bytes,
            "governance_violations": self.violations,
            "governance_violations_by_class": dict(sorted(self.violations_by_class.items())),
            "attempts_by_deployment": dict(sorted(self.attempts.items())),
            "failed_attempts_by_kind": dict(sorted(self.errors.items())),
            "retries": self.retries,
            "failovers": self.failovers,
            "hedges": self.hedges,
            "hedges_won": self.hedges_won,
            "breaker_skips": self.breaker_skips,
            "retry_budget_denied": self.budget_denied,
            "series": {
                "t_s": [round(t, 3) for t in self.series_t],
                "queue_depth": self.series_queue,
                "answers_by_placement": self.series_answers,
                "answers_by_deployment": self.series_deployments,
            },
        }

"""Explanations: why each deployment was considered, kept or dropped, and the final order.

One :class:`Explanation` object feeds the response headers, the decision log,
``hybridgate explain`` and ``POST /v1/route/explain``; :meth:`Explanation.to_dict` is the JSON
shape they share. It never contains request content: kinds of sensitive data, not values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from hybridgate.policy.governance import DataDecision


class Budget(NamedTuple):
    p95_ms: float
    p99_ms: float
    ttft_ms: float


class Verdict(NamedTuple):
    """One candidate: kept or dropped, the rule or signal that decided, and the estimates."""

    deployment: str
    placement: str
    region: str
    accepted: bool
    reason: str
    predicted_ms: float | None = None
    predicted_p95_ms: float | None = None
    predicted_ttft_p95_ms: float | None = None
    queue_wait_ms: float | None = None
    estimated_cost_usd: float | None = None
    meets_budget: bool | None = None
    redacted: bool = False
    priced: bool = True

    @staticmethod
    def scored(
        deployment: str,
        placement: str,
        region: str,
        seconds: tuple[float, float, float, float],
        cost: tuple[float, bool],
        meets: bool,
        redacted: bool,
    ) -> Verdict:
        """``seconds``: (queue wait, ttft p95, expected, p95); ``cost``: (USD, priced)."""
        wait, ttft_p95, expected, p95 = seconds
        usd, priced = cost
        reason = "meets the budget" if meets else "predicted to miss the budget"
        if redacted:
            reason += "; sensitive spans redacted before sending"
        if not priced:
            reason += "; no price known for this model (counted as $0)"
        return Verdict(
            deployment,
            placement,
            region,
            True,
            reason,
            predicted_ms=round(expected * 1000, 1),
            predicted_p95_ms=round(p95 * 1000, 1),
            predicted_ttft_p95_ms=round(ttft_p95 * 1000, 1),
            queue_wait_ms=round(wait * 1000, 1),
            estimated_cost_usd=usd,
            meets_budget=meets,
            redacted=redacted,
            priced=priced,
        )

    def rejected(self, reason: str) -> Verdict:
        return self._replace(accepted=False, reason=reason)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "deployment": self.deployment,
            "placement": self.placement,
            "region": self.region,
            "accepted": self.accepted,
            "reason": self.reason,
        }
        if self.predicted_p95_ms is not None:
            out.update(
                predicted_ms=self.predicted_ms,
                predicted_p95_ms=self.predicted_p95_ms,
                predicted_ttft_p95_ms=self.predicted_ttft_p95_ms,
                queue_wait_ms=self.queue_wait_ms,
                estimated_cost_usd=self.estimated_cost_usd,
                meets_budget=self.meets_budget,
                redacted=self.redacted,
            )
        return out


class Explanation:
    """Why a request goes where it goes. Immutable; the per-candidate verdicts, the order's names
    and the summary may be given as functions, called on first use (the planner's hot path
    leaves them to whoever reads them: the headers, the decision log, a trace)."""

    __slots__ = (
        "_make_order",
        "_make_summary",
        "_make_verdicts",
        "_order",
        "_summary",
        "_verdicts",
        "budget",
        "data",
        "model",
        "placement",
        "workload_class",
    )

    def __init__(
        self,
        *,
        model: str,
        workload_class: str,
        placement: str,
        budget: Budget,
        data: DataDecision,
        verdicts: tuple[Verdict, ...] | Callable[[], tuple[Verdict, ...]],
        order: tuple[str, ...] | Callable[[], tuple[str, ...]],
        summary: str | Callable[[], str],
    ) -> None:
        self.model = model
        self.workload_class = workload_class
        self.placement = placement
        self.budget = budget
        self.data = data
        self._verdicts = verdicts if isinstance(verdicts, tuple) else None
        self._make_verdicts = None if isinstance(verdicts, tuple) else verdicts
        self._order = order if isinstance(order, tuple) else None
        self._make_order = None if isinstance(order, tuple) else order
        self._summary = summary if isinstance(summary, str) else None
        self._make_summary = None if isinstance(summary, str) else summary

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        """Every deployment considered, in the model's configured order, kept or dropped and why."""
        if self._verdicts is None:
            assert self._make_verdicts is not None
            self._verdicts, self._make_verdicts = self._make_verdicts(), None
        return self._verdicts

    @property
    def order(self) -> tuple[str, ...]:
        """The deployments to try, in order."""
        if self._order is None:
            assert self._make_order is not None
            self._order, self._make_order = self._make_order(), None
        return self._order

    @property
    def summary(self) -> str:
        """One sentence: where it goes and why."""
        if self._summary is None:
            assert self._make_summary is not None
            self._summary, self._make_summary = self._make_summary(), None
        return self._summary

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "class": self.workload_class,
            "placement_preference": self.placement,
            "budget_ms": {"p95": self.budget.p95_ms, "p99": self.budget.p99_ms, "ttft": self.budget.ttft_ms},
            "data": {
                "sensitive": self.data.sensitive,
                "kinds": sorted(self.data.kinds),
                "cloud_allowed": self.data.cloud_allowed,
                "redact": self.data.redact,
                "rule": self.data.rule,
                "allowed_regions": sorted(self.data.allowed_regions)
                if self.data.allowed_regions is not None
                else None,
            },
            "candidates": [v.to_dict() for v in self.verdicts],
            "order": list(self.order),
            "summary": self.summary,
        }

    def headers(self) -> dict[str, str]:
        """The explanation's response headers (ASCII, bounded length)."""
        return {
            "x-hybridgate-class": self.workload_class,
            "x-hybridgate-route": ">".join(self.order),
            "x-hybridgate-reason": header_safe(self.summary),
        }


def header_safe(text: str, limit: int = 300) -> str:
    """``text`` as a header value: printable ASCII (others become ?), at most ``limit`` characters."""
    clean = (
        text
        if text.isascii() and text.isprintable()
        else "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
    )
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."

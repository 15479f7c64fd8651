"""Workload classes: what each kind of agent request needs (latency, placement, cost, priority)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hybridgate.config.base import Name, Strict

PlacementPreference = Literal["local-only", "local-first", "cloud-first", "cloud-only"]
SensitiveAction = Literal["keep-local", "redact", "refuse"]


class LatencyBudget(Strict):
    """End-to-end budgets (milliseconds) the planner plans against."""

    p95_ms: float = Field(..., gt=0, description="95th-percentile end-to-end latency budget.")
    p99_ms: float = Field(
        ..., gt=0, description="99th-percentile end-to-end budget; also the attempt deadline."
    )
    ttft_ms: float = Field(..., gt=0, description="Time-to-first-token budget.")
    jitter_ms: float | None = Field(
        None,
        ge=0,
        description="Acceptable spread between p50 and p95 (informational; reported in explanations).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> LatencyBudget:
        if self.p99_ms < self.p95_ms:
            raise ValueError("p99_ms must be at least p95_ms")
        if self.ttft_ms > self.p99_ms:
            raise ValueError("ttft_ms must not exceed p99_ms")
        return self


class SloTargets(Strict):
    """The class's service level objectives: the share of requests that must meet each budget.

    Used by ``hybridgate slo rules`` / ``slo dashboard`` (error budgets and burn-rate alerts)
    and exported at /metrics. The p95 and p99 budgets are met when at least 95% and 99% of
    requests finish within them: those are the defaults of their targets.
    """

    availability: float = Field(
        0.999, gt=0, lt=1, description="Share of requests answered without a server-side error (5xx, 429)."
    )
    p95: float = Field(0.95, gt=0, lt=1, description="Share of answered requests within `latency.p95_ms`.")
    p99: float = Field(0.99, gt=0, lt=1, description="Share of answered requests within `latency.p99_ms`.")
    ttft: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="Share of streamed requests whose first token came within `latency.ttft_ms`.",
    )


class WorkloadClass(Strict):
    """A QoS tier for a kind of request (perception, actuation, reasoning, planning, batch...)."""

    description: str = Field("", description="Shown in explanations.")
    priority: int = Field(50, ge=0, le=100, description="Higher is served first when queues form.")
    latency: LatencyBudget = Field(..., description="Latency budgets of the class.")
    placement: PlacementPreference = Field(
        "local-first",
        description="local-only, local-first (spill to cloud only when local would miss the budget or is "
        "unhealthy), cloud-first, cloud-only.",
    )
    models: list[Name] = Field(
        default_factory=list, description="Logical models the class may use (empty: any)."
    )
    max_cost_usd: float | None = Field(None, ge=0, description="Largest estimated cost of one request (USD).")
    expected_output_tokens: int = Field(
        256,
        gt=0,
        description="Output length assumed for latency and cost estimates when max_tokens is not given.",
    )
    hedge: bool = Field(False, description="May send a backup request to the next candidate (hedging).")
    cache: bool = Field(False, description="May be served from the response cache.")
    idempotent: bool = Field(
        False,
        description=(
            "Requests are actions that must not run twice (e.g. actuation): each must carry an "
            "Idempotency-Key header (400 without one), so an agent's retry gets the first answer."
        ),
    )
    on_sensitive: SensitiveAction | None = Field(
        None, description="What to do when sensitive data is found; default: governance.default_action."
    )
    slo: SloTargets = Field(
        default_factory=SloTargets, description="Service level objectives (alerting, dashboards)."
    )

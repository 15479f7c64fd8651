"""The decision log's record of one request, built from what the gateway knows at its end.

The shape (one JSON object per line; ``plan`` and ``prompt_hmac`` are added by the writer
thread, off the event loop)::

    {"ts": 1764300000.123, "time": "2026-11-28T03:20:00.123+00:00", "id": "<request id>",
     "trace_id": "<32 hex>" | null, "tenant", "key", "class", "model", "region", "sensitivity",
     "stream": bool, "deployment", "placement", "deployment_region", "outcome", "memory",
     "attempts": [{"deployment", "start_ms", "ms", "outcome", "error", "hedge", "reason", "after"}],
     "usage": {"prompt_tokens", "completion_tokens", "cached_prompt_tokens"},
     "cost_usd": {"total", "tokens", "egress", "compute"}, "egress_bytes",
     "sensitive": {"action", "kinds", "rule"}, "latency_ms", "overhead_ms", "plan", "prompt_hmac"}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hybridgate.cost.model import CostBreakdown
from hybridgate.execution.executor import Attempt
from hybridgate.policy.explain import Explanation
from hybridgate.telemetry.inflight import Inflight
from hybridgate.telemetry.propagation import parse_traceparent
from hybridgate.types import Usage


def _callers_trace_id(traceparent: str) -> str | None:
    """With tracing off, the caller's trace id still correlates the record with its trace."""
    parent = parse_traceparent(traceparent) if traceparent else None
    return f"{parent.trace_id:032x}" if parent is not None else None


def sensitive_action(explanation: Explanation | None, refused: bool = False) -> dict[str, Any]:
    """What was done about sensitive data: none, allowed, redact, keep_local or refuse."""
    if explanation is None:
        return {"action": "refuse" if refused else "none", "kinds": [], "rule": ""}
    data = explanation.data
    if refused:
        action = "refuse"
    elif not data.sensitive:
        action = "none"
    elif data.redact:
        action = "redact"
    elif not data.cloud_allowed:
        action = "keep_local"
    else:
        action = "allowed"
    return {"action": action, "kinds": sorted(data.kinds), "rule": data.rule}


def attempt_records(attempts: Sequence[Attempt], arrived: float) -> list[dict[str, Any]]:
    return [
        {
            "deployment": a.deployment,
            "start_ms": round((a.started - arrived) * 1000, 2),
            "ms": round(a.duration * 1000, 2),
            "outcome": a.outcome,
            "error": a.error.kind.value if a.error is not None else None,
            "hedge": a.hedge,
            "reason": a.reason or "first",
            "after": a.after or None,
        }
        for a in attempts
    ]


def decision_record(
    inflight: Inflight,
    *,
    ts: float,
    outcome: str,
    latency_s: float,
    overhead_ms: float,
    stream: bool,
    model: str,
    deployment: str = "",
    placement: str = "",
    deployment_region: str = "",
    usage: Usage | None = None,
    cost: CostBreakdown | None = None,
    egress_bytes: int = 0,
    memory: str | None = None,
    refused: bool = False,
) -> dict[str, Any]:
    """One request's record (without ``plan`` and ``prompt_hmac``: the writer adds them)."""
    ctx = inflight.ctx
    plan = inflight.plan
    trace = inflight.trace
    usage = usage or Usage()
    cost = cost or CostBreakdown()
    return {
        "ts": round(ts, 3),
        "id": inflight.id,
        "trace_id": trace.trace_id if trace is not None else _callers_trace_id(ctx.traceparent),
        "tenant": ctx.tenant,
        "key": ctx.key_id,
        "class": ctx.workload_class,
        "model": model,
        "region": ctx.region,
        "sensitivity": ctx.sensitivity,
        "stream": stream,
        "deployment": deployment or None,
        "placement": placement or None,
        "deployment_region": deployment_region or None,
        "outcome": outcome,
        "memory": memory,
        "attempts": attempt_records(inflight.attempts, inflight.arrived),
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_prompt_tokens": usage.cached_prompt_tokens,
        },
        "cost_usd": {
            "total": cost.total,
            "tokens": cost.tokens,
            "egress": cost.egress,
            "compute": cost.compute,
        },
        "egress_bytes": egress_bytes,
        "sensitive": sensitive_action(plan.explanation if plan is not None else None, refused),
        "latency_ms": round(latency_s * 1000, 2),
        "overhead_ms": round(overhead_ms, 3),
        "plan": None,
    }

"""One arm's numbers, from three sources that must agree.

- **The client** (the ``openai`` SDK's view): status, latency, first token, the answering
  deployment (``x-hybridgate-deployment``). A request *meets its budget* when it was answered
  within its class's p95 budget and, streamed, its first token came within the class's
  first-token budget; SLO attainment is the share of *all* requests that did (an error misses).
  Per class the counters and quantiles are the simulator's (:class:`hybridgate.sim.results.
  ClassResult`), so the two reports read alike.
- **The gateway's accounting**: its decision log, joined to the requests by trace id (cost by
  placement and class, egress, attempts, what it did with sensitive data, plans made offline),
  and ``/metrics`` (retries, failovers, hedges, breaker skips; the cost total, cross-checked).
- **What the clouds received** (the sandboxes' capture): a planted sensitive value found there is
  a governance violation, whatever the gateway believed it did.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from hybridgate.config.schema import GatewayConfig, effective_placement
from hybridgate.demo.cloud import leaked
from hybridgate.demo.driver import Outcome
from hybridgate.demo.workload import CLASS_NAMES, DemoRequest, Schedule
from hybridgate.sim.results import ClassResult, quantile
from hybridgate.telemetry.log_reader import Record, summarize

EXTRA_KINDS = (
    "retry",
    "failover",
    "hedge",
    "hedge_won",
    "continuation",
    "breaker_skip",
    "retry_budget_denied",
)


@dataclass(frozen=True, slots=True)
class ArmInput:
    """Everything one arm produced."""

    arm: str
    trace: Sequence[DemoRequest]
    outcomes: Sequence[Outcome]
    records: Mapping[int, Record]  # decision-log record by request index
    log_records: int  # every record in the arm's decision log
    metrics: str  # the /metrics exposition at the end
    received: Mapping[str, str]  # per cloud deployment, the bodies it received
    timeline: Sequence[Mapping[str, Any]]
    processes: Mapping[str, Sequence[int]]  # process ids: the gateway's, its runtimes'
    wall_s: float


def placement_of(config: GatewayConfig, deployment: str | None) -> str:
    dep = config.deployments.get(deployment or "")
    return effective_placement(dep) if dep is not None else "none"


def met_budget(config: GatewayConfig, outcome: Outcome) -> bool:
    if not outcome.answered or outcome.latency_s is None:
        return False
    budget = config.classes[outcome.workload_class].latency
    if outcome.latency_s * 1000 > budget.p95_ms:
        return False
    return not outcome.stream or (outcome.ttft_s is not None and outcome.ttft_s * 1000 <= budget.ttft_ms)


def error_label(outcome: Outcome) -> str:
    return f"{outcome.status} {outcome.code}" if outcome.status else str(outcome.code)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _classes(config: GatewayConfig, outcomes: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    results: dict[str, ClassResult] = {}
    ttfts: dict[str, list[float]] = {}
    errors: dict[str, Counter[str]] = {}
    for o in outcomes:
        budget = config.classes[o.workload_class].latency
        c = results.setdefault(
            o.workload_class, ClassResult(o.workload_class, budget.p95_ms / 1000, budget.p99_ms / 1000)
        )
        c.requests += 1
        if o.answered and o.latency_s is not None:
            c.latencies.append(o.latency_s)
            c.by_placement[placement_of(config, o.deployment)] += 1
            c.within_budget += met_budget(config, o)
            if o.ttft_s is not None:
                ttfts.setdefault(o.workload_class, []).append(o.ttft_s)
            continue
        errors.setdefault(o.workload_class, Counter())[error_label(o)] += 1
        if 400 <= o.status < 500:
            c.refused += 1
        else:
            c.failed += 1
    out = {}
    for name in sorted(results, key=lambda n: CLASS_NAMES.index(n) if n in CLASS_NAMES else 99):
        row = results[name].to_dict()
        budget = config.classes[name].latency
        ordered = sorted(ttfts.get(name, []))
        row.update(
            ttft_p95_s=None if not ordered else round(quantile(ordered, 0.95) or 0.0, 4),
            ttft_budget_s=budget.ttft_ms / 1000,
            errors=dict(errors.get(name, Counter()).most_common()),
        )
        out[name] = row
    return out


def _extra_attempts(metrics: str) -> dict[str, int]:
    """``hybridgate_extra_attempts_total`` by kind, and the cost total, from an exposition."""
    counts = dict.fromkeys(EXTRA_KINDS, 0)
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "hybridgate_extra_attempts_total":
                kind = sample.labels.get("kind", "")
                counts[kind] = counts.get(kind, 0) + int(sample.value)
    return counts


def metrics_cost(metrics: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "hybridgate_cost_usd_total":
                total += sample.value
    return round(total, 6)


def _cost(records: Sequence[Record]) -> dict[str, Any]:
    by_placement: defaultdict[str, float] = defaultdict(float)
    by_class: defaultdict[str, float] = defaultdict(float)
    for r in records:
        cost = r.get("cost_usd")
        total = float(cost.get("total") or 0.0) if isinstance(cost, dict) else 0.0
        by_placement[str(r.get("placement") or "none")] += total
        by_class[str(r.get("class"))] += total
    stats = summarize(records)
    return {
        "total": round(stats.cost_usd, 6),
        "local": round(by_placement.get("local", 0.0), 6),
        "cloud": round(by_placement.get("cloud", 0.0), 6),
        "by_class": {k: round(v, 6) for k, v in sorted(by_class.items())},
        "egress_bytes": stats.egress_bytes,
    }


def _action(record: Record | None) -> str:
    sensitive = record.get("sensitive") if record is not None else None
    return str(sensitive.get("action") or "none") if isinstance(sensitive, dict) else "unknown"


def _sensitive(data: ArmInput, config: GatewayConfig) -> dict[str, Any]:
    planted = [r for r in data.trace if r.planted]
    by_class = Counter(r.workload_class for r in planted)
    actions: Counter[str] = Counter()
    served: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    for request in planted:
        outcome = data.outcomes[request.index]
        actions[_action(data.records.get(request.index))] += 1
        served[placement_of(config, outcome.deployment) if outcome.answered else "not answered"] += 1
        if leaked((p.value for p in request.planted), data.received):
            violations[request.workload_class] += 1
    flagged_clean = sum(
        1
        for r in data.trace
        if not r.planted and _action(data.records.get(r.index)) not in ("none", "unknown")
    )
    return {
        "requests": len(planted),
        "by_class": dict(by_class),
        "gateway_actions": dict(actions.most_common()),
        "served": dict(served.most_common()),
        "violations": sum(violations.values()),
        "violations_by_class": dict(violations),
        "clean_requests_flagged": flagged_clean,
    }


def _spills(records: Sequence[Record], config: GatewayConfig) -> dict[str, int]:
    """Requests of local-first classes answered by a cloud: planned so (the predicted local wait
    broke the budget), or moved when the local queue was full (``overloaded``)."""
    planned = queue_full = 0
    for r in records:
        cls = config.classes.get(str(r.get("class")))
        if (
            cls is None
            or cls.placement != "local-first"
            or placement_of(config, r.get("deployment")) != "cloud"
        ):
            continue
        attempts = [a for a in r.get("attempts") or () if isinstance(a, dict)]
        if any(a.get("outcome") == "overloaded" for a in attempts):
            queue_full += 1
        order = (r.get("plan") or {}).get("order") or []
        if order and placement_of(config, order[0]) == "cloud":
            planned += 1
    return {"spilled_planned": planned, "spilled_queue_full": queue_full}


def _planned_around(record: Record | None, reason: str) -> bool:
    """Whether the plan dropped a candidate for ``reason`` (``offline:``, ``circuit_open``)."""
    plan = record.get("plan") if record is not None else None
    candidates = plan.get("candidates") if isinstance(plan, dict) else None
    return any(isinstance(c, dict) and str(c.get("reason", "")).startswith(reason) for c in candidates or ())


def _failed_over(record: Record | None) -> bool:
    attempts = record.get("attempts") if record is not None else None
    return any(isinstance(a, dict) and a.get("reason") == "failover" for a in attempts or ())


def _outage(data: ArmInput, config: GatewayConfig, schedule: Schedule) -> dict[str, Any] | None:
    if schedule.outage is None:
        return None
    during = [o for o in data.outcomes if o.phase == "outage"]
    answered = [o for o in during if o.answered]
    records = [data.records.get(o.index) for o in during]
    return {
        "window_s": list(schedule.outage),
        "requests": len(during),
        "answered": len(answered),
        "within_budget": sum(met_budget(config, o) for o in during),
        "answered_local": sum(placement_of(config, o.deployment) == "local" for o in answered),
        "answered_cloud": sum(placement_of(config, o.deployment) == "cloud" for o in answered),
        "errors": dict(Counter(error_label(o) for o in during if not o.answered).most_common()),
        "failed_over": sum(_failed_over(r) for r in records),
        "planned_offline": sum(_planned_around(r, "offline:") for r in records),
        "planned_around_open_breakers": sum(_planned_around(r, "circuit_open") for r in records),
        "timeline": list(data.timeline),
    }


def _series(data: ArmInput, config: GatewayConfig, duration_s: float) -> dict[str, list[int]]:
    """Per second of the run (by sending time): answers by placement, misses, errors."""
    n = max(1, int(duration_s + 0.999))
    series = {key: [0] * n for key in ("local", "cloud", "missed_budget", "errors")}
    for o in data.outcomes:
        second = min(n - 1, int(data.trace[o.index].t))
        if not o.answered:
            series["errors"][second] += 1
            continue
        series.setdefault(placement_of(config, o.deployment), [0] * n)[second] += 1
        series["missed_budget"][second] += not met_budget(config, o)
    return series


def _consistency(data: ArmInput, config: GatewayConfig) -> dict[str, Any]:
    joined = [data.records.get(o.index) for o in data.outcomes]
    agree = sum(
        1
        for o, r in zip(data.outcomes, joined, strict=True)
        if o.answered and r is not None and r.get("deployment") == o.deployment
    )
    sent_by_class = Counter(r.workload_class for r in data.trace)
    logged_by_class = Counter(str(r.get("class")) for r in joined if r is not None)
    return {
        "sent": len(data.trace),
        "client_outcomes": len(data.outcomes),
        "decision_log_records": data.log_records,
        "joined_records": sum(r is not None for r in joined),
        "classes_match": sent_by_class == logged_by_class,
        "answered": sum(o.answered for o in data.outcomes),
        "answer_deployment_agrees_with_log": agree,
        "metrics_cost_usd": metrics_cost(data.metrics),
    }


def measure(data: ArmInput, config: GatewayConfig, schedule: Schedule) -> dict[str, Any]:
    """The arm's section of the report (JSON-ready)."""
    outcomes = data.outcomes
    answered = [o for o in outcomes if o.answered]
    records = [r for r in (data.records.get(o.index) for o in outcomes) if r is not None]
    within = sum(met_budget(config, o) for o in outcomes)
    failed_attempts: Counter[str] = Counter()
    by_deployment: Counter[str] = Counter()
    for r in records:
        for a in r.get("attempts") or ():
            if isinstance(a, dict):
                by_deployment[str(a.get("deployment"))] += 1
                if a.get("outcome") != "ok":
                    failed_attempts[str(a.get("error") or a.get("outcome"))] += 1
    lateness = sorted(max(0.0, o.sent_s - data.trace[o.index].t) for o in outcomes)
    return {
        "requests": len(outcomes),
        "answered": len(answered),
        "within_budget": within,
        "slo_attainment": round(within / len(outcomes), 4) if outcomes else None,
        "split": dict(Counter(placement_of(config, o.deployment) for o in answered)),
        "errors": dict(Counter(error_label(o) for o in outcomes if not o.answered).most_common()),
        "classes": _classes(config, outcomes),
        "cost_usd": _cost(records),
        "sensitive": _sensitive(data, config),
        "resilience": {
            **_extra_attempts(data.metrics),
            **_spills(records, config),
            "attempts_by_deployment": dict(sorted(by_deployment.items())),
            "failed_attempts_by_kind": dict(failed_attempts.most_common()),
            "hedged_answers": sum(o.hedged for o in answered),
        },
        "outage": _outage(data, config, schedule),
        "consistency": _consistency(data, config),
        "series_per_s": _series(data, config, schedule.duration_s),
        "processes": {name: list(pids) for name, pids in data.processes.items()},
        "driver": {
            "wall_s": round(data.wall_s, 2),
            "send_lateness_ms": {"p50": _ms(quantile(lateness, 0.5)), "p99": _ms(quantile(lateness, 0.99))},
        },
    }


def write_requests(path: Path, data: ArmInput, config: GatewayConfig) -> None:
    """One JSON line per request: what was sent, what the client saw, whether it met its budget,
    and the decision-log record's id (for ``hybridgate log tail`` and the traces)."""
    with path.open("wb") as f:
        for request, outcome in zip(data.trace, data.outcomes, strict=True):
            record = data.records.get(request.index) or {}
            line = {
                **asdict(outcome),
                "t_s": request.t,
                "max_tokens": request.max_tokens,
                "prompt_words": request.prompt_words,
                "planted": [p.kind for p in request.planted],
                "placement": placement_of(config, outcome.deployment) if outcome.answered else None,
                "met_budget": met_budget(config, outcome),
                "decision_id": record.get("id"),
                "trace_id": record.get("trace_id"),
            }
            f.write(orjson.dumps(line) + b"\n")

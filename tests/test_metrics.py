"""Metrics at /metrics: SLO events, histograms, bounded labels (rendered and parsed back)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from hybridgate.config import load_config_text
from hybridgate.config.routing import WorkloadClass
from hybridgate.telemetry.histogram import LabelledHistogram
from hybridgate.telemetry.metrics import CostRow, Metrics, Sources
from hybridgate.telemetry.slo import SloEvents, objectives

CONFIG = """
version: 1
classes:
  fast:
    latency: {p95_ms: 100, p99_ms: 200, ttft_ms: 50}
    slo: {availability: 0.99}
  default:
    latency: {p95_ms: 1000, p99_ms: 2000, ttft_ms: 500}
deployments:
  s: {type: sandbox}
models:
  m: {deployments: [s]}
"""


def classes() -> dict[str, WorkloadClass]:
    return dict(load_config_text(CONFIG, env={}).config.classes)


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def slo(cls: str, name: str, good: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return ("hybridgate_slo_events_total", frozenset({"class": cls, "slo": name, "good": good}.items()))


def sources(costs: Iterable[CostRow] = ()) -> Sources:
    rows = list(costs)
    return Sources(
        executor=lambda: {"retry": 2},
        costs=lambda: rows,
        deployments=lambda: [("s", {"ready": 1.0})],
        cache=lambda: {},
        offline=lambda: False,
        attempts=lambda: [("s", "cloud", {"ok": 3, "timeout": 1})],
        breakers=lambda: [("s", "open")],
    )


def test_every_slo_series_exists_at_zero_before_any_request() -> None:
    got = samples(Metrics(sources(), classes()))
    for cls in ("fast", "default"):
        for name in ("availability", "latency_p95", "latency_p99", "ttft"):
            assert got[slo(cls, name, "true")] == 0
            assert got[slo(cls, name, "false")] == 0


def test_slo_events_count_budgets_and_server_failures_only() -> None:
    events = SloEvents(classes())
    events.record("fast", 200, 0.05, ttft_s=0.01)  # within everything
    events.record("fast", 200, 0.15, ttft_s=0.08)  # over p95 and TTFT, within p99
    events.record("fast", 200, 0.3, ttft_s=None)  # over both, not streamed: no TTFT event
    events.record("fast", 502, 0.01, ttft_s=None)  # server failure: availability only
    events.record("fast", 429, 0.01, ttft_s=None)  # overloaded: counts against availability
    events.record("fast", 400, 0.01, ttft_s=None)  # the client's fault: not an event
    events.record("fast", 499, 0.01, ttft_s=None)  # the client went away: not an event
    events.record("unknown", 200, 0.01, ttft_s=None)  # not a configured class: ignored
    c = events.counts
    assert (c["fast", "availability", "true"], c["fast", "availability", "false"]) == (3, 2)
    assert (c["fast", "latency_p95", "true"], c["fast", "latency_p95", "false"]) == (1, 2)
    assert (c["fast", "latency_p99", "true"], c["fast", "latency_p99", "false"]) == (2, 1)
    assert (c["fast", "ttft", "true"], c["fast", "ttft", "false"]) == (1, 1)
    assert sum(v for (cls, _, _), v in c.items() if cls == "default") == 0
    assert not any(cls == "unknown" for cls, _, _ in c)


def test_a_request_at_exactly_its_budget_is_within_it() -> None:
    events = SloEvents(classes())
    events.record("fast", 200, 0.1, ttft_s=0.05)
    assert events.counts["fast", "latency_p95", "true"] == 1
    assert events.counts["fast", "ttft", "true"] == 1


def test_objectives_carry_the_class_targets_and_budgets() -> None:
    fast = {o.sli: o for o in objectives(classes()) if o.workload_class == "fast"}
    targets = {name: (o.target, o.threshold_s) for name, o in fast.items()}
    assert targets["availability"] == (0.99, None)
    assert targets["latency_p95"] == (0.95, 0.1)
    assert targets["latency_p99"] == (0.99, 0.2)
    assert fast["ttft"].threshold_s == 0.05
    assert round(fast["availability"].error_budget, 6) == 0.01


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    h = LabelledHistogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(("x",), value)
    family = h.family("t_seconds", "test", ["class"])
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "t_seconds_bucket"}
    assert buckets == {"0.1": 2, "1.0": 3, "+Inf": 4}
    total = {s.name: s.value for s in family.samples if s.name != "t_seconds_bucket"}
    assert total == {"t_seconds_count": 4, "t_seconds_sum": 3.65}


def test_requests_render_outcomes_histograms_and_slo_events() -> None:
    metrics = Metrics(sources(), classes())
    metrics.request(
        "m", "fast", "s", "cloud", "ok", 0.15, ttft_s=0.02, overhead_s=0.0007, completion_tokens=14
    )
    metrics.request("m", "fast", "none", "none", "no_route", 0.01, status=503)
    got = samples(metrics)
    labels = {"model": "m", "class": "fast", "deployment": "s", "placement": "cloud", "outcome": "ok"}
    assert got["hybridgate_requests_total", frozenset(labels.items())] == 1
    assert got[slo("fast", "availability", "false")] == 1
    assert got[slo("fast", "latency_p95", "false")] == 1  # 150 ms > 100 ms
    assert got[slo("fast", "latency_p99", "true")] == 1
    assert got[slo("fast", "ttft", "true")] == 1
    assert got["hybridgate_time_to_first_token_seconds_count", frozenset({"class": "fast"}.items())] == 1
    assert (
        got["hybridgate_overhead_seconds_bucket", frozenset({"le": "0.001"}.items())] == 1
    )  # failures: none
    tps = got["hybridgate_output_tokens_per_second_sum", frozenset({"deployment": "s"}.items())]
    assert abs(tps - 14 / 0.13) < 1e-9  # after the first token
    assert (
        got["hybridgate_slo_objective", frozenset({"class": "fast", "slo": "availability"}.items())] == 0.99
    )
    threshold = frozenset({"class": "fast", "slo": "latency_p99"}.items())
    assert got["hybridgate_slo_threshold_seconds", threshold] == 0.2


def test_scrape_time_sources_attempts_breakers() -> None:
    got = samples(Metrics(sources(), classes()))
    attempts = {"deployment": "s", "placement": "cloud", "outcome": "timeout"}
    assert got["hybridgate_attempts_total", frozenset(attempts.items())] == 1
    state = {s: got["hybridgate_breaker_state", frozenset({"deployment": "s", "state": s}.items())] for s in
             ("closed", "open", "half_open")}  # fmt: skip
    assert state == {"closed": 0, "open": 1, "half_open": 0}
    assert got["hybridgate_extra_attempts_total", frozenset({"kind": "retry"}.items())] == 2


def test_unknown_tenants_are_folded_into_other() -> None:
    rows: list[CostRow] = [
        (("acme", "fast", "cloud", "us"), 0.5, 10, 20, 120),
        (("<script>", "fast", "cloud", "us"), 0.25, 1, 2, 12),
        (("whatever-a-client-says", "fast", "cloud", "us"), 0.25, 1, 2, 12),
    ]
    got = samples(Metrics(sources(rows), classes(), tenants=["acme"]))
    tenants = {
        dict(labels)["tenant"]: value
        for (name, labels), value in got.items()
        if name == "hybridgate_cost_usd_total"
    }
    assert tenants == {"acme": 0.5, "other": 0.5}
    other = {
        "tenant": "other",
        "class": "fast",
        "placement": "cloud",
        "region": "us",
        "direction": "completion",
    }
    assert got["hybridgate_tokens_total", frozenset(other.items())] == 4
    del other["direction"]
    assert got["hybridgate_egress_bytes_total", frozenset(other.items())] == 24

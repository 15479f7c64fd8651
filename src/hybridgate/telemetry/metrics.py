"""Prometheus metrics, in the text format at ``GET /metrics``.

Counters the gateway keeps anyway (executor counters, the ledger, live health, breakers,
caches) are read at scrape time by a custom collector, so they cost nothing per request. Only
what exists nowhere else is recorded per request: request outcomes, the SLO events
(:mod:`hybridgate.telemetry.slo`) and a few histograms, each a dictionary update or two.
Each gateway has its own registry (no process-global state).

Label values are bounded: classes, models, deployments, placements and regions come from the
configuration; outcomes and error kinds from fixed sets; a tenant is named only when the
configuration knows it (``governance.tenants`` or a client key's tenant), else ``other``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from hybridgate.config.routing import WorkloadClass
from hybridgate.telemetry.histogram import LabelledHistogram
from hybridgate.telemetry.slo import SloEvents, objectives

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1)
_TPS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
BREAKER_STATES = ("closed", "open", "half_open")
OTHER_TENANT = "other"

# (tenant, class, placement, region), cost in USD, prompt tokens, completion tokens, egress bytes
CostRow = tuple[tuple[str, str, str, str], float, int, int, int]


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the scrape-time values come from (functions, so nothing is copied per request)."""

    executor: Callable[[], Mapping[str, int]]  # retries, failovers, hedges... by kind
    costs: Callable[[], Iterable[CostRow]]
    deployments: Callable[[], Iterable[tuple[str, Mapping[str, float]]]]  # name -> in_flight, queued...
    cache: Callable[[], Mapping[str, int]]  # hits, misses, stale, idempotent replays
    offline: Callable[[], bool]
    # (deployment, placement, {"ok": n, error kind: n}) since start
    attempts: Callable[[], Iterable[tuple[str, str, Mapping[str, int]]]] = lambda: ()
    breakers: Callable[[], Iterable[tuple[str, str]]] = lambda: ()  # (deployment, state)


@dataclass(slots=True)
class _PerRequest:
    """What is recorded per request (the collector reads it at scrape time)."""

    outcomes: Counter[tuple[str, str, str, str, str]]
    sensitive: Counter[tuple[str, str]]  # (class, action)
    refused: Counter[tuple[str, str]]  # (class, reason): admission refusals of tenancy
    slo: SloEvents
    latency: LabelledHistogram
    ttft: LabelledHistogram
    overhead: LabelledHistogram
    tokens_per_s: LabelledHistogram


class _Collector(Collector):
    def __init__(
        self,
        sources: Sources,
        recorded: _PerRequest,
        classes: Mapping[str, WorkloadClass],
        tenants: frozenset[str],
    ) -> None:
        self.sources = sources
        self.recorded = recorded
        self.objectives = objectives(classes)
        self.tenants = tenants

    def collect(self) -> Iterable[Metric]:
        yield from self._requests()
        yield from self._slo()
        yield from self._spend()
        yield from self._deployments()
        yield from self._resilience()

    def _requests(self) -> Iterator[Metric]:
        rec = self.recorded
        requests = CounterMetricFamily(
            "hybridgate_requests",
            "Requests served, by model, class, deployment, placement and outcome",
            labels=["model", "class", "deployment", "placement", "outcome"],
        )
        for labels, count in rec.outcomes.items():
            requests.add_metric(list(labels), count)
        yield requests
        sensitive = CounterMetricFamily(
            "hybridgate_sensitive_data",
            "Requests with sensitive data, by class and action (kept_local, redacted, refused)",
            labels=["class", "action"],
        )
        for (cls, action), count in rec.sensitive.items():
            sensitive.add_metric([cls, action], count)
        yield sensitive
        refused = CounterMetricFamily(
            "hybridgate_admission_refused",
            "Requests refused before routing by the key's limits, by class and reason "
            "(model_not_allowed 403, rate_limited 429, budget 402)",
            labels=["class", "reason"],
        )
        for (cls, reason), count in rec.refused.items():
            refused.add_metric([cls, reason], count)
        yield refused
        yield rec.latency.family(
            "hybridgate_request_duration_seconds",
            "Request latency as the client saw it (to the last byte), by class",
            ["class"],
        )
        yield rec.ttft.family(
            "hybridgate_time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first event, by class",
            ["class"],
        )
        yield rec.overhead.family(
            "hybridgate_overhead_seconds", "The gateway's own time per request, upstream time excluded", []
        )
        yield rec.tokens_per_s.family(
            "hybridgate_output_tokens_per_second",
            "Output tokens per second of an answer (streams: after the first token), by deployment",
            ["deployment"],
        )

    def _slo(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "hybridgate_slo_events",
            "SLO events by class and SLO; good=false spends the error budget (see docs/operations.md)",
            labels=["class", "slo", "good"],
        )
        for labels, count in self.recorded.slo.counts.items():
            events.add_metric(list(labels), count)
        yield events
        target = GaugeMetricFamily(
            "hybridgate_slo_objective", "The SLO's target share of good events", labels=["class", "slo"]
        )
        threshold = GaugeMetricFamily(
            "hybridgate_slo_threshold_seconds", "The latency budget of a latency SLO", labels=["class", "slo"]
        )
        for o in self.objectives:
            target.add_metric([o.workload_class, o.sli], o.target)
            if o.threshold_s is not None:
                threshold.add_metric([o.workload_class, o.sli], o.threshold_s)
        yield target
        yield threshold

    def _spend(self) -> Iterator[Metric]:
        labels = ["tenant", "class", "placement", "region"]
        cost = CounterMetricFamily("hybridgate_cost_usd", "Cost of served requests", labels=labels)
        tokens = CounterMetricFamily(
            "hybridgate_tokens", "Tokens of served requests", labels=[*labels, "direction"]
        )
        egress = CounterMetricFamily(
            "hybridgate_egress_bytes",
            "Bytes sent to and received from cloud deployments (estimated as billed: 4 per token)",
            labels=labels,
        )
        merged: dict[tuple[str, str, str, str], list[float]] = {}
        for (tenant, cls, placement, region), *values in self.sources.costs():
            key = (tenant if tenant in self.tenants else OTHER_TENANT, cls, placement, region)
            row = merged.setdefault(key, [0.0, 0.0, 0.0, 0.0])
            for i, value in enumerate(values):
                row[i] += value
        for key, totals in merged.items():
            cost.add_metric(list(key), totals[0])
            tokens.add_metric([*key, "prompt"], totals[1])
            tokens.add_metric([*key, "completion"], totals[2])
            egress.add_metric(list(key), totals[3])
        yield cost
        yield tokens
        yield egress

    def _deployments(self) -> Iterator[Metric]:
        gauges: dict[str, GaugeMetricFamily] = {}
        for name, values in self.sources.deployments():
            for key, value in values.items():
                family = gauges.get(key)
                if family is None:
                    family = gauges[key] = GaugeMetricFamily(
                        f"hybridgate_deployment_{key}",
                        f"Deployment {key.replace('_', ' ')}",
                        labels=["deployment"],
                    )
                family.add_metric([name], value)
        yield from gauges.values()
        attempts = CounterMetricFamily(
            "hybridgate_attempts",
            "Attempts sent to each deployment, by outcome (ok, or the error kind)",
            labels=["deployment", "placement", "outcome"],
        )
        for name, placement, counts in self.sources.attempts():
            for outcome, count in counts.items():
                attempts.add_metric([name, placement, outcome], count)
        yield attempts
        breaker = GaugeMetricFamily(
            "hybridgate_breaker_state",
            "1 for the circuit breaker's current state (closed, open, half_open)",
            labels=["deployment", "state"],
        )
        for name, state in self.sources.breakers():
            for candidate in BREAKER_STATES:
                breaker.add_metric([name, candidate], float(candidate == state))
        yield breaker

    def _resilience(self) -> Iterator[Metric]:
        extra = CounterMetricFamily(
            "hybridgate_extra_attempts", "Attempts beyond the first, by kind", labels=["kind"]
        )
        for kind, count in self.sources.executor().items():
            extra.add_metric([kind], count)
        yield extra
        cache = CounterMetricFamily("hybridgate_memory", "Answers served from memory", labels=["result"])
        for result, count in self.sources.cache().items():
            cache.add_metric([result], count)
        yield cache
        yield GaugeMetricFamily(
            "hybridgate_offline", "1 while the cloud path is lost", value=float(self.sources.offline())
        )


class Metrics:
    """The gateway's metrics: per-request recording, and the registry rendered at /metrics.

    ``tenants`` are the tenant names that may appear as label values (the rest are ``other``).
    """

    def __init__(
        self,
        sources: Sources,
        classes: Mapping[str, WorkloadClass] | None = None,
        tenants: Iterable[str] = (),
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        classes = classes or {}
        self._rec = _PerRequest(
            outcomes=Counter(),
            sensitive=Counter(),
            refused=Counter(),
            slo=SloEvents(classes),
            latency=LabelledHistogram(_BUCKETS),
            ttft=LabelledHistogram(_BUCKETS),
            overhead=LabelledHistogram(_OVERHEAD_BUCKETS),
            tokens_per_s=LabelledHistogram(_TPS_BUCKETS),
        )
        self.registry.register(_Collector(sources, self._rec, classes, frozenset(tenants)))

    def request(
        self,
        model: str,
        workload_class: str,
        deployment: str,
        placement: str,
        outcome: str,
        seconds: float,
        *,
        status: int = 200,
        ttft_s: float | None = None,
        overhead_s: float | None = None,
        completion_tokens: int = 0,
    ) -> None:
        """One request's end: ``status`` is the HTTP status its outcome has (for the SLOs)."""
        rec = self._rec
        rec.outcomes[(model, workload_class, deployment, placement, outcome)] += 1
        rec.latency.observe((workload_class,), seconds)
        rec.slo.record(workload_class, status, seconds, ttft_s)
        if ttft_s is not None:
            rec.ttft.observe((workload_class,), ttft_s)
        if overhead_s is not None:
            rec.overhead.observe((), overhead_s)
        generating = seconds - (ttft_s or 0.0)
        if status < 400 and completion_tokens > 1 and generating > 0:
            rec.tokens_per_s.observe((deployment,), completion_tokens / generating)

    def sensitive(self, workload_class: str, action: str) -> None:
        """A request with sensitive data: ``kept_local``, ``redacted`` (sent to a cloud
        redacted) or ``refused``."""
        self._rec.sensitive[(workload_class, action)] += 1

    def refused(self, workload_class: str, reason: str) -> None:
        """A request refused by its key's limits before routing: ``model_not_allowed``,
        ``rate_limited`` or ``budget``. Not an SLO event: the client's own limits said no."""
        self._rec.refused[(workload_class, reason)] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)

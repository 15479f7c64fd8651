"""Prometheus metrics, in the text format at ``GET /metrics``.

Counters the gateway keeps anyway (executor counters, the ledger, live health, caches) are read
at scrape time by a custom collector, so they cost nothing per request. Only what exists nowhere
else is recorded per request: request outcomes and the latency histogram.
Each gateway has its own registry (no process-global state).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the scrape-time values come from (functions, so nothing is copied per request)."""

    executor: Callable[[], Mapping[str, int]]  # retries, failovers, hedges... by kind
    costs: Callable[[], Iterable[tuple[tuple[str, str, str], float, int, int]]]  # (tenant, class, placement)
    deployments: Callable[
        [], Iterable[tuple[str, Mapping[str, float]]]
    ]  # name -> in_flight, queued, breaker_open...
    cache: Callable[[], Mapping[str, int]]  # hits, misses, stale, idempotent replays
    offline: Callable[[], bool]


class _Collector(Collector):
    def __init__(self, sources: Sources, outcomes: Counter[tuple[str, str, str, str]]) -> None:
        self.sources = sources
        self.outcomes = outcomes

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "hybridgate_requests", "Requests served, by model, class, deployment and outcome",
            labels=["model", "class", "deployment", "outcome"],
        )  # fmt: skip
        for labels, count in self.outcomes.items():
            requests.add_metric(list(labels), count)
        yield requests
        extra = CounterMetricFamily(
            "hybridgate_extra_attempts", "Attempts beyond the first, by kind", labels=["kind"]
        )
        for kind, count in self.sources.executor().items():
            extra.add_metric([kind], count)
        yield extra
        cost = CounterMetricFamily(
            "hybridgate_cost_usd", "Cost of served requests", labels=["tenant", "class", "placement"]
        )
        tokens = CounterMetricFamily(
            "hybridgate_tokens",
            "Tokens of served requests",
            labels=["tenant", "class", "placement", "direction"],
        )
        for (tenant, cls, placement), usd, prompt, completion in self.sources.costs():
            cost.add_metric([tenant, cls, placement], usd)
            tokens.add_metric([tenant, cls, placement, "prompt"], prompt)
            tokens.add_metric([tenant, cls, placement, "completion"], completion)
        yield cost
        yield tokens
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
        cache = CounterMetricFamily("hybridgate_memory", "Answers served from memory", labels=["result"])
        for result, count in self.sources.cache().items():
            cache.add_metric([result], count)
        yield cache
        yield GaugeMetricFamily(
            "hybridgate_offline", "1 while the cloud path is lost", value=float(self.sources.offline())
        )


class Metrics:
    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._outcomes: Counter[tuple[str, str, str, str]] = Counter()
        self.registry.register(_Collector(sources, self._outcomes))
        self.latency = Histogram(
            "hybridgate_request_duration_seconds",
            "Request latency as the client saw it (to the last byte), by class",
            ["class"],
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def request(self, model: str, workload_class: str, deployment: str, outcome: str, seconds: float) -> None:
        self._outcomes[(model, workload_class, deployment, outcome)] += 1
        self.latency.labels(workload_class).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

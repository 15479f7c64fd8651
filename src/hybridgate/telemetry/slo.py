"""Service level objectives: each workload class's budgets, as SLOs. One definition serves the
per-request events at /metrics, the Prometheus rules and the Grafana dashboard.

Every class has four SLOs (its targets: ``classes.<name>.slo``):

=============== ======================================================= ==================
SLO             an event is                                             good when
=============== ======================================================= ==================
availability    a request the gateway accepted (client errors other     no 5xx or 429
                than 429, and requests the client abandoned, are not
                events: they say nothing of the service)
latency_p95     an answered request                                     within ``p95_ms``
latency_p99     an answered request                                     within ``p99_ms``
ttft            an answered streamed request                            first event within
                                                                        ``ttft_ms``
=============== ======================================================= ==================

Latency is measured as the client sees it (arrival to last byte; for ``ttft``, to the first
event), against the class's budget even when a request declares a tighter one of its own.
The events are the counter ``hybridgate_slo_events_total{class, slo, good}``; the error ratio
of an SLO over a window is ``rate(bad) / rate(all)``, its burn rate that ratio over the error
budget ``1 - target`` (the Google SRE workbook's multi-window, multi-burn-rate method).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from hybridgate.config.routing import WorkloadClass

SLIS = ("availability", "latency_p95", "latency_p99", "ttft")
EVENTS_METRIC = "hybridgate_slo_events_total"
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
PERIOD = "30d"  # the error budget's period (budget remaining is reported over it)


@dataclass(frozen=True, slots=True)
class Objective:
    """One SLO of one class: ``target`` share of its events must be good."""

    workload_class: str
    sli: str
    target: float
    threshold_s: float | None  # the latency budget; None for availability

    @property
    def error_budget(self) -> float:
        return 1.0 - self.target


@dataclass(frozen=True, slots=True)
class BurnAlert:
    """Fires when the error budget burns ``factor`` times too fast over both windows."""

    severity: str  # "page" or "ticket"
    long_window: str
    short_window: str
    factor: float

    @property
    def budget_spent(self) -> str:
        """The share of a 30-day budget spent when the long window burns at ``factor``."""
        hours = {"1h": 1, "6h": 6, "1d": 24, "3d": 72}[self.long_window]
        return f"{self.factor * hours / (30 * 24):.0%}"


# The SRE workbook's recommended table (chapter 5, "Alerting on SLOs", method 6).
BURN_ALERTS = (
    BurnAlert("page", "1h", "5m", 14.4),
    BurnAlert("page", "6h", "30m", 6.0),
    BurnAlert("ticket", "1d", "2h", 3.0),
    BurnAlert("ticket", "3d", "6h", 1.0),
)


def objectives(classes: Mapping[str, WorkloadClass]) -> list[Objective]:
    """Every class's four SLOs, in the order of ``classes`` and :data:`SLIS`."""
    out: list[Objective] = []
    for name, cls in classes.items():
        latency, slo = cls.latency, cls.slo
        out += [
            Objective(name, "availability", slo.availability, None),
            Objective(name, "latency_p95", slo.p95, latency.p95_ms / 1000.0),
            Objective(name, "latency_p99", slo.p99, latency.p99_ms / 1000.0),
            Objective(name, "ttft", slo.ttft, latency.ttft_ms / 1000.0),
        ]
    return out


def is_server_failure(status: int) -> bool:
    """Whether a request that ended with HTTP ``status`` counts against availability."""
    return status >= 500 or status == 429


class SloEvents:
    """Counts each request's SLO events (good or bad) by class: a few dictionary updates."""

    def __init__(self, classes: Mapping[str, WorkloadClass]) -> None:
        self._budgets = {
            name: (c.latency.p95_ms / 1000.0, c.latency.p99_ms / 1000.0, c.latency.ttft_ms / 1000.0)
            for name, c in classes.items()
        }
        self.counts: Counter[tuple[str, str, str]] = Counter()
        for name in classes:  # every series exists from the start: a ratio is 0, not absent
            for sli in SLIS:
                self.counts[(name, sli, "true")] = 0
                self.counts[(name, sli, "false")] = 0

    def record(self, workload_class: str, status: int, seconds: float, ttft_s: float | None) -> None:
        """One request that ended with ``status`` after ``seconds`` (``ttft_s``: streams only)."""
        budgets = self._budgets.get(workload_class)
        if budgets is None:
            return
        counts = self.counts
        failed = is_server_failure(status)
        if status >= 400 and not failed:
            return  # the client's error or its abandoning the request: not an event
        counts[(workload_class, "availability", "false" if failed else "true")] += 1
        if failed:
            return
        p95, p99, ttft = budgets
        counts[(workload_class, "latency_p95", "true" if seconds <= p95 else "false")] += 1
        counts[(workload_class, "latency_p99", "true" if seconds <= p99 else "false")] += 1
        if ttft_s is not None:
            counts[(workload_class, "ttft", "true" if ttft_s <= ttft else "false")] += 1

"""A Grafana dashboard generated from the classes' SLOs (``hybridgate slo dashboard``).

It reads the recording rules of :mod:`hybridgate.telemetry.slo_rules` (load them first): per
class, one row with each SLO's 30-day attainment, error budget left and burn rates; then the
gateway's traffic, latency and deployments. Targets and thresholds come from the same
:func:`~hybridgate.telemetry.slo.objectives` as the alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hybridgate.config.routing import WorkloadClass
from hybridgate.telemetry.slo import PERIOD, Objective, objectives
from hybridgate.telemetry.slo_rules import ATTAINMENT, BUDGET_REMAINING, BURN_RATE, HEDGES_WASTED

_DS = {"type": "prometheus", "uid": "${datasource}"}
_WIDTH = 24


class _Layout:
    """Places panels left to right, wrapping at Grafana's 24 columns, and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            self._with_id({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        )
        self.y += 1

    def add(self, panel: dict[str, Any], width: int, height: int) -> None:
        if self.x + width > _WIDTH:
            self._newline()
        self.panels.append(self._with_id(panel, width, height))
        self.x += width
        self.row_height = max(self.row_height, height)

    def _with_id(self, panel: dict[str, Any], width: int, height: int) -> dict[str, Any]:
        grid = {"x": self.x, "y": self.y, "w": width, "h": height}
        return {"id": len(self.panels) + 1, "gridPos": grid, **panel}

    def _newline(self) -> None:
        self.y += self.row_height
        self.x = self.row_height = 0


def _target(expr: str, legend: str = "") -> dict[str, Any]:
    return {"datasource": _DS, "expr": expr, "legendFormat": legend, "refId": "A"}


def _stat(
    title: str, expr: str, steps: list[tuple[float | None, str]], unit: str = "percentunit"
) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "datasource": _DS,
        "targets": [_target(expr)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "decimals": 3,
                "thresholds": {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]},
            },
            "overrides": [],
        },
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
    }


def _series(title: str, targets: list[dict[str, Any]], unit: str) -> dict[str, Any]:
    for i, target in enumerate(targets):
        target["refId"] = chr(ord("A") + i)
    return {
        "type": "timeseries",
        "title": title,
        "datasource": _DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
    }


def _slo_panels(layout: _Layout, o: Objective) -> None:
    sel = f'{{class="{o.workload_class}", slo="{o.sli}"}}'
    what = o.sli if o.threshold_s is None else f"{o.sli} (≤ {o.threshold_s:g}s)"
    layout.add(
        _stat(
            f"{what}: attainment {PERIOD} (target {o.target:.4g})",
            f"{ATTAINMENT.format(window=PERIOD)}{sel}",
            [(None, "red"), (o.target, "green")],
        ),
        4,
        5,
    )
    layout.add(
        _stat(
            f"{o.sli}: error budget left",
            f"{BUDGET_REMAINING}{sel}",
            [(None, "red"), (0.25, "orange"), (0.5, "green")],
        ),
        3,
        5,
    )
    burns = [_target(f"{BURN_RATE.format(window=w)}{sel}", w) for w in ("5m", "1h", "6h", "1d")]
    layout.add(_series(f"{o.sli}: burn rate (1 = budget spent exactly in {PERIOD})", burns, "none"), 5, 5)


def _gateway_panels(layout: _Layout) -> None:
    layout.row("Traffic and latency")
    layout.add(
        _series(
            "Requests per second by class and outcome",
            [
                _target(
                    "sum by (class, outcome) (rate(hybridgate_requests_total[5m]))", "{{class}} {{outcome}}"
                )
            ],
            "reqps",
        ),
        12,
        8,
    )
    by_class = "sum by (class, le) (rate(hybridgate_{}_bucket[5m]))"
    quantiles = [
        _target(
            f"histogram_quantile({q}, {by_class.format('request_duration_seconds')})",
            f"{{{{class}}}} p{int(q * 100)}",
        )
        for q in (0.95, 0.99)
    ]
    layout.add(_series("Latency p95 / p99 by class", quantiles, "s"), 12, 8)
    ttft = f"histogram_quantile(0.95, {by_class.format('time_to_first_token_seconds')})"
    layout.add(_series("Time to first token p95 by class", [_target(ttft, "{{class}}")], "s"), 8, 8)
    overhead = "histogram_quantile({q}, sum by (le) (rate(hybridgate_overhead_seconds_bucket[5m])))"
    layout.add(
        _series(
            "Gateway overhead", [_target(overhead.format(q=q), f"p{int(q * 100)}") for q in (0.5, 0.99)], "s"
        ),
        8,
        8,
    )
    extra = "sum by (kind) (rate(hybridgate_extra_attempts_total[5m]))"
    wasted = _target(f"sum({HEDGES_WASTED})", "hedge wasted")
    layout.add(_series("Retries, failovers, hedges", [_target(extra, "{{kind}}"), wasted], "ops"), 8, 8)
    layout.row("Deployments")
    for title, expr, unit in (
        ("In flight", "hybridgate_deployment_in_flight", "none"),
        ("Queued", "hybridgate_deployment_queued", "none"),
        ("TTFT p95 (predicted)", "hybridgate_deployment_ttft_p95_seconds", "s"),
        ("Breakers not closed", 'hybridgate_breaker_state{state!="closed"} == 1', "none"),
    ):
        layout.add(_series(title, [_target(expr, "{{deployment}} {{state}}")], unit), 6, 8)
    layout.row("Spend")
    cost = "sum by (class, placement) (rate(hybridgate_cost_usd_total[1h])) * 3600"
    layout.add(
        _series(
            "Cost per hour by class and placement", [_target(cost, "{{class}} {{placement}}")], "currencyUSD"
        ),
        12,
        8,
    )
    layout.add(
        _stat("Offline mode", "max(hybridgate_offline)", [(None, "green"), (1, "red")], unit="none"), 4, 8
    )


def dashboard(classes: Mapping[str, WorkloadClass], title: str = "hybridgate SLOs") -> dict[str, Any]:
    """The dashboard's JSON model (import it in Grafana, or provision it from a file)."""
    layout = _Layout()
    by_class: dict[str, list[Objective]] = {}
    for o in objectives(classes):
        by_class.setdefault(o.workload_class, []).append(o)
    for name, slos in by_class.items():
        layout.row(f"Class {name}")
        for o in slos:
            _slo_panels(layout, o)
    _gateway_panels(layout)
    return {
        "title": title,
        "uid": "hybridgate-slo",
        "tags": ["hybridgate", "slo"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
            ]
        },
        "panels": layout.panels,
    }

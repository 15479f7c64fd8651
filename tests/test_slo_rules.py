"""The generated SLO rules, checked and unit-tested by Prometheus's own promtool.

``promtool check rules`` validates every example configuration's rules; ``promtool test rules``
evaluates them over synthetic series: a fast burn pages, a slow burn only tickets, a healthy
class and one that has recovered do not page. promtool comes with Debian's ``prometheus``
package (``make sysdeps`` installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hybridgate.cli import app
from hybridgate.config import load_config_text
from hybridgate.telemetry.slo_dashboard import dashboard
from hybridgate.telemetry.slo_rules import rules

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

CONFIG = """
version: 1
classes:
  fast-burn: {latency: {p95_ms: 1000, p99_ms: 2000, ttft_ms: 500}}
  slow-burn: {latency: {p95_ms: 1000, p99_ms: 2000, ttft_ms: 500}}
  healthy: {latency: {p95_ms: 1000, p99_ms: 2000, ttft_ms: 500}}
  recovered: {latency: {p95_ms: 1000, p99_ms: 2000, ttft_ms: 500}}
  costly: {latency: {p95_ms: 1000, p99_ms: 2000, ttft_ms: 500}, max_cost_usd: 0.01}
  default: {latency: {p95_ms: 1000, p99_ms: 2000, ttft_ms: 500}}
deployments:
  s: {type: sandbox}
models:
  m: {deployments: [s]}
"""


def promtool() -> str:
    path = shutil.which("promtool")
    assert path is not None, "promtool is missing: install Debian's prometheus package (make sysdeps)"
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_rules_pass_promtool_check(example: Path, tmp_path: Path) -> None:
    out = tmp_path / "rules.yaml"
    result = CliRunner().invoke(app, ["slo", "rules", "-c", str(example), "-o", str(out)])
    assert result.exit_code == 0, result.output
    checked = run_promtool("check", "rules", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def events(cls: str, good_per_min: float, bad: str) -> list[dict[str, str]]:
    """A class's availability events: ``good_per_min`` good ones a minute, bad ones as ``bad``."""
    name = "hybridgate_slo_events_total"
    labels = f'class="{cls}", slo="availability"'
    return [
        {"series": f'{name}{{{labels}, good="true"}}', "values": f"0+{good_per_min:g}x200"},
        {"series": f'{name}{{{labels}, good="false"}}', "values": bad},
    ]


def alert(name: str, cls: str, severity: str) -> dict[str, Any]:
    labels = {"severity": severity, "class": cls, "slo": "availability"}
    return {"exp_labels": labels}


RATE1H, OBJECTIVE = "hybridgate:slo_error_ratio:rate1h", "hybridgate:slo_objective:ratio"
RECOVERED, HEALTHY_P99 = 'class="recovered", slo="availability"', 'class="healthy", slo="latency_p99"'


def unit_tests(rules_file: str) -> dict[str, Any]:
    series = [
        *events("fast-burn", 980, "0+20x200"),  # 2% errors: 20x the 0.1% budget
        *events("slow-burn", 995, "0+5x200"),  # 0.5%: 5x
        *events("healthy", 999.5, "0+0.5x200"),  # 0.05%: half the budget
        *events("recovered", 980, "0+20x120 2400+0x80"),  # 2% for two hours, then none for one
        {"series": 'hybridgate_breaker_state{deployment="stuck", state="closed"}', "values": "0x30"},
        {
            "series": 'hybridgate_breaker_state{deployment="flapping", state="closed"}',
            "values": "0x10 1 0x10",
        },
        {"series": "hybridgate_offline", "values": "0 1x20"},
        {"series": 'hybridgate_cost_usd_total{class="costly"}', "values": "0+2x200"},  # 0.02 USD a request
        {"series": 'hybridgate_requests_total{class="costly", outcome="ok"}', "values": "0+100x200"},
    ]
    return {
        "rule_files": [rules_file],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "3h",
                        "alertname": "HybridgateErrorBudgetBurnFast",
                        "exp_alerts": [alert("fast", "fast-burn", "page")],
                    },
                    {
                        "eval_time": "3h",
                        "alertname": "HybridgateErrorBudgetBurnSlow",
                        "exp_alerts": [
                            alert("slow", "fast-burn", "ticket"),
                            alert("slow", "slow-burn", "ticket"),
                            alert("slow", "recovered", "ticket"),
                        ],
                    },
                    {"eval_time": "14m", "alertname": "HybridgateBreakerOpenTooLong", "exp_alerts": []},
                    {
                        "eval_time": "25m",
                        "alertname": "HybridgateBreakerOpenTooLong",
                        "exp_alerts": [
                            {"exp_labels": {"severity": "ticket", "deployment": "stuck", "state": "closed"}}
                        ],
                    },
                    {"eval_time": "4m", "alertname": "HybridgateOffline", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "HybridgateOffline",
                        "exp_alerts": [{"exp_labels": {"severity": "ticket"}}],
                    },
                    {
                        "eval_time": "2h",
                        "alertname": "HybridgateCostOverClassMax",
                        "exp_alerts": [{"exp_labels": {"severity": "ticket", "class": "costly"}}],
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": f"{OBJECTIVE}{{{HEALTHY_P99}}}",
                        "eval_time": "1m",
                        "exp_samples": [{"labels": f"{OBJECTIVE}{{{HEALTHY_P99}}}", "value": 0.99}],
                    },
                    {
                        "expr": f"{RATE1H}{{{RECOVERED}}} == 0",
                        "eval_time": "3h",
                        "exp_samples": [{"labels": f"{RATE1H}{{{RECOVERED}}}", "value": 0}],
                    },
                ],
            }
        ],
    }


def test_burn_rate_alerts_page_on_fast_burns_and_ticket_on_slow_ones(tmp_path: Path) -> None:
    classes = load_config_text(CONFIG, env={}).config.classes
    generated = rules(classes)
    # Annotations hold the value at the moment ({{ $value }}): promtool would compare them
    # verbatim. The templates themselves are validated by `promtool check rules` above.
    for group in generated["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(generated, sort_keys=False))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(unit_tests("rules.yaml"), sort_keys=False))
    result = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_shows_every_class_slo_with_its_target() -> None:
    classes = load_config_text(CONFIG, env={}).config.classes
    model = dashboard(classes)
    titles = [p["title"] for p in model["panels"]]
    for name in classes:
        assert f"Class {name}" in titles
    stat = next(p for p in model["panels"] if p["title"].startswith("availability: attainment"))
    assert stat["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 0.999
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    for panel in model["panels"]:  # nothing overlaps or leaves the 24-column grid
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in model["panels"]]
    assert len(cells) == len(set(cells))


def test_slo_dashboard_cli_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "dashboard.json"
    result = CliRunner().invoke(app, ["slo", "dashboard", "-c", str(EXAMPLES[0]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["uid"] == "hybridgate-slo"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["slo", "rules", "-c", "/nonexistent.yaml"], "cannot read"),
        (["slo", "rules", "-c", "CONFIG", "--breaker-open-for", "soon"], "not a duration"),
        (["slo", "rules", "-c", "CONFIG", "-o", "/nonexistent/dir/rules.yaml"], "cannot write"),
        (["slo", "dashboard", "-c", "/nonexistent.yaml"], "cannot read"),
    ],
)
def test_bad_cli_input_is_a_clear_error_without_traceback(args: list[str], message: str) -> None:
    args = [str(EXAMPLES[0]) if a == "CONFIG" else a for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "hybridgate.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout

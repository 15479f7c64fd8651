"""The report of a simulation: JSON, Markdown, PNG charts and a self-contained HTML page.

Every router (the policy and each baseline) side by side: per class p50/p95/p99 against the
budget and SLO attainment, cost by placement, bytes to the cloud, governance violations,
retries/failovers/hedges, and over time the local queues and where answers came from.
Charts need matplotlib (the ``sim`` extra); without it the JSON and Markdown are still written.
"""

from __future__ import annotations

import base64
import html
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from hybridgate.sim.results import RunResult

CHARTS = ("latency", "slo", "cost", "queues", "cloud_share")


def report_dict(results: Mapping[str, RunResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"meta": dict(meta), "runs": {name: r.to_dict() for name, r in results.items()}}


def _fmt(value: float | None, unit: str = "s") -> str:
    return "—" if value is None else f"{value:.3f} {unit}".strip()


def markdown(report: Mapping[str, Any], charts: Mapping[str, str] | None = None) -> str:
    meta, runs = report["meta"], report["runs"]
    lines = [
        "# hybridgate simulation report",
        "",
        f"Config `{meta['config']}`, workload `{meta['workload']}`, faults `{meta['faults'] or 'none'}`, "
        f"seed {meta['seed']}, {meta['requests']} requests per router. Simulated: the backends are "
        "models (see docs/simulator.md), the routing, health, breakers, retries and costs are "
        "hybridgate's own code.",
        "",
        "## Latency and SLO by class",
        "",
        "| class | router | answered | failed | refused | p50 | p95 | p99 | p95 budget | p95 met "
        "| SLO attainment | local / cloud |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    classes = sorted({c for r in runs.values() for c in r["classes"]})
    for cls in classes:
        for name, run in runs.items():
            c = run["classes"].get(cls)
            if c is None:
                continue
            place = c["by_placement"]
            attain = "—" if c["slo_attainment"] is None else f"{100 * c['slo_attainment']:.1f}%"
            lines.append(
                f"| {cls} | {name} | {c['answered']} | {c['failed']} | {c['refused']} | {_fmt(c['p50_s'])} "
                f"| {_fmt(c['p95_s'])} | {_fmt(c['p99_s'])} | {c['p95_budget_s']:.3f} s "
                f"| {'yes' if c['p95_met'] else 'no'} | {attain} "
                f"| {place.get('local', 0)} / {place.get('cloud', 0)} |"
            )
    lines += [
        "",
        "## Cost, data and resilience",
        "",
        "| router | cost local | cost cloud | total | egress | governance violations | retries | failovers "
        "| hedges (won) | breaker skips | retry budget denied |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        cost = run["cost_usd"]
        lines.append(
            f"| {name} | ${cost.get('local', 0):.4f} | ${cost.get('cloud', 0):.4f} "
            f"| ${run['cost_usd_total']:.4f} "
            f"| {run['egress_bytes'] / 1e6:.2f} MB | {run['governance_violations']} | {run['retries']} "
            f"| {run['failovers']} | {run['hedges']} ({run['hedges_won']}) | {run['breaker_skips']} "
            f"| {run['retry_budget_denied']} |"
        )
    lines += ["", "Failed attempts by kind:", ""]
    for name, run in runs.items():
        kinds = ", ".join(f"{k} {v}" for k, v in run["failed_attempts_by_kind"].items()) or "none"
        lines.append(f"- {name}: {kinds}")
    if charts:
        lines += ["", "## Charts", ""]
        lines += [f"![{key}]({file})" for key, file in charts.items()]
    return "\n".join(lines) + "\n"


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_charts(report: Mapping[str, Any], outdir: Path) -> dict[str, str]:
    """PNG charts into ``outdir``; returns chart -> file name. Nothing without matplotlib."""
    if not have_matplotlib():
        return {}
    from hybridgate.sim.charts import draw_all

    return draw_all(report["runs"], outdir)


def html_page(report: Mapping[str, Any], md: str, charts: Mapping[str, str], outdir: Path) -> str:
    """One self-contained page: the tables, and the charts embedded as data URIs."""
    body: list[str] = []
    table: list[str] = []
    for line in md.splitlines():
        if line.startswith("|"):
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            tag = "th" if not table else "td"
            table.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            body.append(f"<div>• {html.escape(line[2:])}</div>")
        elif line.startswith("!["):
            continue
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    if table:
        body.append("<table>" + "".join(table) + "</table>")
    for key, file in charts.items():
        data = base64.b64encode((outdir / file).read_bytes()).decode("ascii")
        body.append(f'<figure><img alt="{key}" src="data:image/png;base64,{data}"></figure>')
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}"
        "img{max-width:100%}"
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>hybridgate simulation</title>'
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_report(results: Mapping[str, RunResult], meta: Mapping[str, Any], outdir: Path) -> dict[str, Any]:
    """report.json, report.md, the PNGs and report.html in ``outdir``; returns the report dict."""
    outdir.mkdir(parents=True, exist_ok=True)
    report = report_dict(results, meta)
    (outdir / "report.json").write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    )
    charts = write_charts(report, outdir)
    md = markdown(report, charts)
    (outdir / "report.md").write_text(md, encoding="utf-8")
    (outdir / "report.html").write_text(html_page(report, md, charts, outdir), encoding="utf-8")
    return report

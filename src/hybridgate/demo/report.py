"""The demo's report: the arms side by side, the conclusion drawn from the numbers, JSON and
Markdown. The conclusion is computed, never written in advance: where hybrid does not beat an
arm on some measure, it says so."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from hybridgate.markdown import table

SCHEMA = "hybridgate-demo/1"
BASELINE_ORDER = ("hybrid", "local-only", "cloud-only")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _usd(value: float) -> str:
    return f"${value:.4f}"


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} s"


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "0/0"


def _errors(errors: Mapping[str, int], limit: int = 3) -> str:
    if not errors:
        return "none"
    items = list(errors.items())
    text = ", ".join(f"{label} ×{n}" for label, n in items[:limit])
    return text + (f", … ({sum(n for _, n in items[limit:])} more)" if len(items) > limit else "")


def _arms(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    arms: Mapping[str, Any] = report["arms"]
    return [(name, arms[name]) for name in BASELINE_ORDER if name in arms]


def _attainment_line(arms: Mapping[str, Mapping[str, Any]]) -> str:
    hybrid = arms["hybrid"]
    others = [f"{name} {_pct(a['slo_attainment'])}" for name, a in arms.items() if name != "hybrid"]
    versus = f", vs {' and '.join(others)}" if others else ""
    return (
        f"Hybrid answered {_pct(hybrid['slo_attainment'])} of its {hybrid['requests']} requests within "
        f"their class budgets{versus} (the same seeded workload in every arm)."
    )


def _cost_line(arms: Mapping[str, Mapping[str, Any]]) -> str:
    cost = arms["hybrid"]["cost_usd"]
    others = [f"{_usd(a['cost_usd']['total'])} for {name}" for name, a in arms.items() if name != "hybrid"]
    versus = f", vs {' and '.join(others)}" if others else ""
    return (
        f"It cost {_usd(cost['total'])} (cloud {_usd(cost['cloud'])}, local {_usd(cost['local'])})"
        f"{versus}, from each gateway's own accounting."
    )


def _sensitive_line(arms: Mapping[str, Mapping[str, Any]]) -> str:
    s = arms["hybrid"]["sensitive"]
    actions = s["gateway_actions"]
    line = (
        f"Of {s['requests']} requests carrying sensitive data (emails, cards, IBANs), hybrid let "
        f"{s['violations']} reach a cloud unredacted ({actions.get('keep_local', 0)} kept local, "
        f"{actions.get('redact', 0)} redacted before any cloud, {actions.get('refuse', 0)} refused)"
    )
    if "cloud-only" in arms:
        line += f"; cloud-only sent {arms['cloud-only']['sensitive']['violations']} of them as they were"
    return line + "."


def _spill_line(arms: Mapping[str, Mapping[str, Any]]) -> str | None:
    r = arms["hybrid"]["resilience"]
    moved = r["spilled_planned"] + r["spilled_queue_full"]
    if not moved:
        return None
    return (
        f"Hybrid kept {arms['hybrid']['split'].get('local', 0)} answers local and moved {moved} "
        f"requests of local-first classes to a cloud ({r['spilled_planned']} planned so, the "
        f"predicted local wait breaking their budget; {r['spilled_queue_full']} when the local "
        f"queue was full); {r['hedge_won']} of {r['hedge']} hedges won."
    )


def _outage_line(arms: Mapping[str, Mapping[str, Any]]) -> str | None:
    hybrid = arms["hybrid"]["outage"]
    if hybrid is None:
        return None
    start, end = hybrid["window_s"]
    n = hybrid["requests"]
    others = [
        f"{name} {_share(a['outage']['within_budget'], n)}" for name, a in arms.items() if name != "hybrid"
    ]
    versus = f", vs {' and '.join(others)}" if others else ""
    return (
        f"During the cloud outage ({start:g}-{end:g} s, every cloud answering 503), hybrid answered "
        f"{_share(hybrid['within_budget'], n)} of the requests sent within budget "
        f"({hybrid['failed_over']} after failing over, {hybrid['planned_around_open_breakers']} "
        f"planned around open breakers, {hybrid['planned_offline']} planned offline for local only)"
        f"{versus}."
    )


def _class_lines(arms: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Where a baseline's attainment differs from hybrid's by 5 points or more, per class."""
    lines = []
    hybrid = arms["hybrid"]["classes"]
    for name, arm in arms.items():
        if name == "hybrid":
            continue
        for cls, row in arm["classes"].items():
            mine = hybrid.get(cls, {}).get("slo_attainment")
            theirs = row["slo_attainment"]
            if mine is None or theirs is None or abs(mine - theirs) < 0.05:
                continue
            better = "better" if mine > theirs else "WORSE"
            lines.append(
                f"{cls}: hybrid {_pct(mine)} vs {name} {_pct(theirs)} ({better}); {name}: p95 "
                f"{_s(row['p95_s'])} against a {row['p95_budget_s']:g} s budget, errors "
                f"{_errors(row['errors'])}."
            )
    return lines


def conclusion(arms: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The verdict and the sentences that support it, from the numbers alone."""
    hybrid = arms["hybrid"]
    lines = [_attainment_line(arms), _cost_line(arms), _sensitive_line(arms)]
    lines += [line for line in (_spill_line(arms), _outage_line(arms)) if line is not None]
    lines += _class_lines(arms)
    mine = hybrid["slo_attainment"] or 0.0
    beaten = [n for n, a in arms.items() if n != "hybrid" and (a["slo_attainment"] or 0.0) >= mine]
    cheaper_than_cloud = "cloud-only" not in arms or (
        hybrid["cost_usd"]["total"] <= arms["cloud-only"]["cost_usd"]["total"]
    )
    clean = hybrid["sensitive"]["violations"] == 0
    wins = not beaten and clean and cheaper_than_cloud and len(arms) > 1
    if wins:
        verdict = (
            "Hybrid beat every baseline: more requests within budget than any of them, "
            "no sensitive data sent to a cloud, for less than cloud-only."
        )
    else:
        reasons = [f"{n} met the budget as often" for n in beaten]
        reasons += [] if clean else ["sensitive data reached a cloud"]
        reasons += [] if cheaper_than_cloud else ["it cost more than cloud-only"]
        reasons += [] if len(arms) > 1 else ["no baseline was run"]
        verdict = "Hybrid did not beat every baseline on this run: " + "; ".join(reasons) + "."
    return {"hybrid_wins": wins, "verdict": verdict, "lines": lines}


def build_report(meta: Mapping[str, Any], arms: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    ordered = {name: arms[name] for name in BASELINE_ORDER if name in arms}
    return {"schema": SCHEMA, "meta": dict(meta), "arms": ordered, "conclusion": conclusion(ordered)}


# --------------------------------------------------------------------------- Markdown
def _overall(report: Mapping[str, Any]) -> list[str]:
    header = ["arm", "requests", "answered", "within budget", "SLO attainment", "local / cloud", "errors"]
    rows = [
        [
            name,
            a["requests"],
            a["answered"],
            a["within_budget"],
            _pct(a["slo_attainment"]),
            f"{a['split'].get('local', 0)} / {a['split'].get('cloud', 0)}",
            _errors(a["errors"], 2),
            _usd(a["cost_usd"]["total"]),
            a["sensitive"]["violations"],
        ]
        for name, a in _arms(report)
    ]
    return table([*header, "cost", "sensitive sent to a cloud"], rows)


def _by_class(report: Mapping[str, Any]) -> list[str]:
    classes: list[str] = []
    for _, a in _arms(report):
        classes += [c for c in a["classes"] if c not in classes]
    rows = []
    for cls in classes:
        for name, a in _arms(report):
            row = a["classes"].get(cls)
            if row is None:
                continue
            place = row["by_placement"]
            rows.append(
                [
                    cls,
                    f"{row['p95_budget_s']:g} s / {row['ttft_budget_s']:g} s",
                    name,
                    f"{row['answered']}/{row['requests']}",
                    *(_s(row[k]) for k in ("p50_s", "p95_s", "p99_s", "ttft_p95_s")),
                    _pct(row["slo_attainment"]),
                    f"{place.get('local', 0)} / {place.get('cloud', 0)}",
                    _errors(row["errors"], 2),
                ]
            )
    header = ["class", "budget p95 / first token", "arm", "answered", "p50", "p95", "p99", "first token p95"]
    return table([*header, "within budget", "local / cloud", "errors"], rows)


def _sensitive(report: Mapping[str, Any]) -> list[str]:
    rows = []
    for name, a in _arms(report):
        s = a["sensitive"]
        act, served = s["gateway_actions"], s["served"]
        rows.append(
            [
                name,
                s["requests"],
                f"{act.get('keep_local', 0)} / {act.get('redact', 0)} / {act.get('refuse', 0)} / "
                f"{act.get('none', 0)}",
                f"{served.get('local', 0)} / {served.get('cloud', 0)} / {served.get('not answered', 0)}",
                s["violations"],
            ]
        )
    header = ["arm", "with planted values", "gateway: kept local / redacted / refused / not flagged"]
    return table([*header, "answered local / cloud / not", "reached a cloud (violations)"], rows)


def _outage(report: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            name,
            o["requests"],
            o["answered"],
            _share(o["within_budget"], o["requests"]),
            f"{o['answered_local']} / {o['answered_cloud']}",
            o["failed_over"],
            o["planned_around_open_breakers"],
            o["planned_offline"],
            _errors(o["errors"], 2),
        ]
        for name, a in _arms(report)
        if (o := a["outage"]) is not None
    ]
    header = ["arm", "requests", "answered", "within budget", "local / cloud", "failed over"]
    lines = table([*header, "planned around open breakers", "planned offline", "errors"], rows)
    hybrid = report["arms"]["hybrid"]["outage"]
    if hybrid is not None and hybrid["timeline"]:
        lines += ["", "What the hybrid gateway's `/readyz` said (seconds from the start):", ""]
        lines += [
            f"- {e['t_s']:.2f} s: {e['event']}" + (f" — {e['detail']}" if e["detail"] else "")
            for e in hybrid["timeline"]
        ]
    return lines


def _resilience(report: Mapping[str, Any]) -> list[str]:
    rows = []
    for name, a in _arms(report):
        c, r = a["cost_usd"], a["resilience"]
        rows.append(
            [
                name,
                _usd(c["local"]),
                _usd(c["cloud"]),
                f"{c['egress_bytes'] / 1e6:.2f} MB",
                f"{r['spilled_planned']} / {r['spilled_queue_full']}",
                r["retry"],
                r["failover"],
                f"{r['hedge']} ({r['hedge_won']})",
                r["breaker_skip"],
                _errors(r["failed_attempts_by_kind"], 4),
            ]
        )
    header = ["arm", "cost local", "cost cloud", "egress", "spilled to a cloud: planned / queue full"]
    return table(
        [*header, "retries", "failovers", "hedges (won)", "breaker skips", "failed attempts by kind"], rows
    )


def _consistency(report: Mapping[str, Any]) -> list[str]:
    rows = []
    for name, a in _arms(report):
        k = a["consistency"]
        rows.append(
            [
                name,
                k["sent"],
                f"{k['decision_log_records']} ({k['joined_records']})",
                "yes" if k["classes_match"] else "NO",
                f"{k['answered']} ({k['answer_deployment_agrees_with_log']})",
                f"{_usd(a['cost_usd']['total'])} / {_usd(k['metrics_cost_usd'])}",
            ]
        )
    header = ["arm", "sent", "decision-log records (joined)", "classes match"]
    return table([*header, "answered (deployment as logged)", "cost: log / metrics"], rows)


def _intro(report: Mapping[str, Any]) -> list[str]:
    meta = report["meta"]
    schedule = meta["schedule"]
    bursts = ", ".join(f"{lo:g}-{hi:g} s" for lo, hi in schedule["bursts"])
    outage = schedule["outage"]
    return [
        f"{meta['requests']} requests over {meta['duration_s']:g} s (seed {meta['seed']}, "
        f"bursts at {bursts}, "
        + (f"cloud outage {outage[0]:g}-{outage[1]:g} s" if outage else "no outage")
        + f"), replayed against each arm with the official openai SDK; config `{meta['config']}`; "
        f"{meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}). The cloud is hybridgate's "
        "SANDBOX stand-in (synthetic text, latency of a typical cloud API); the local model is "
        f"`{meta['local_model']}`. A request meets its budget when answered within its class's p95 "
        "budget (and, streamed, its first token within the class's first-token budget)."
    ]


def _conclusion(report: Mapping[str, Any]) -> list[str]:
    verdict = report["conclusion"]
    return [f"**{verdict['verdict']}**", "", *[f"- {line}" for line in verdict["lines"]]]


Section = Callable[[Mapping[str, Any]], list[str]]
SECTIONS: tuple[tuple[str, Section], ...] = (
    ("", _intro),
    ("Conclusion", _conclusion),
    ("Overall", _overall),
    ("By class", _by_class),
    ("Sensitive data", _sensitive),
    ("The cloud outage", _outage),
    ("Cost and resilience", _resilience),
    ("Consistency of the numbers", _consistency),
)
SUMMARY = ("Conclusion", "Overall")


def markdown(report: Mapping[str, Any], only: Sequence[str] | None = None) -> str:
    """The report in Markdown: every section, or ``only`` those named (e.g. :data:`SUMMARY`)."""
    lines = ["# hybridgate demo report", ""] if only is None else []
    for title, render in SECTIONS:
        if only is not None and title not in only:
            continue
        lines += ([f"## {title}", ""] if title else []) + render(report) + [""]
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], outdir: Path) -> Sequence[Path]:
    """``report.json`` and ``report.md`` in ``outdir``; returns their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = outdir / "report.json", outdir / "report.md"
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    md_path.write_text(markdown(report), encoding="utf-8")
    return json_path, md_path

"""``hybridgate log tail`` and ``hybridgate log stats``: the decision log, read back.

The log is found from ``--config`` (its ``decision_log.path``) or given as a file. Rotated files
(``PATH.1`` ... ``PATH.N``) are read too, oldest first. A line that is not a JSON object is
skipped and counted, and the count is reported; a missing log is a one-line error, exit 1.
"""

from __future__ import annotations

import datetime
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
from rich.console import Console, JustifyMethod
from rich.table import Table

from hybridgate.telemetry.log_reader import LogFollower, LogStats, Record, matches, read_log, summarize


def _time(record: Record) -> str:
    ts = record.get("ts")
    if not isinstance(ts, int | float):
        return "?"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _attempts(record: Record) -> str:
    attempts = record.get("attempts")
    if not isinstance(attempts, list) or not attempts:
        return "-"
    parts = []
    for a in attempts:
        if not isinstance(a, dict):
            continue
        mark = "+" if a.get("hedge") else ""
        outcome = a.get("outcome") or a.get("error") or "ok"
        parts.append(f"{mark}{a.get('deployment')}:{outcome}")
    return " ".join(parts)


def _cost(record: Record) -> str:
    cost = record.get("cost_usd")
    total = cost.get("total") if isinstance(cost, dict) else None
    return f"{total:.6f}" if isinstance(total, int | float) else "-"


def _tokens(record: Record) -> str:
    usage = record.get("usage")
    if not isinstance(usage, dict):
        return "-"
    return f"{usage.get('prompt_tokens', 0)}/{usage.get('completion_tokens', 0)}"


def _sensitive(record: Record) -> str:
    sensitive = record.get("sensitive")
    if not isinstance(sensitive, dict) or sensitive.get("action") in (None, "none"):
        return ""
    kinds = ",".join(sensitive.get("kinds") or [])
    return f"{sensitive.get('action')}" + (f" ({kinds})" if kinds else "")


def tail_table(records: Iterable[Record]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("time (UTC)", "left"),
        ("id", "left"),
        ("class", "left"),
        ("model", "left"),
        ("deployment", "left"),
        ("outcome", "left"),
        ("attempts", "left"),
        ("ms", "right"),
        ("tokens in/out", "right"),
        ("USD", "right"),
        ("sensitive", "left"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for r in records:
        outcome = str(r.get("outcome") or "?")
        style = "" if outcome == "ok" or outcome.startswith("cache") else "red"
        table.add_row(
            _time(r),
            str(r.get("id") or "")[:12],
            str(r.get("class") or ""),
            str(r.get("model") or ""),
            str(r.get("deployment") or "-"),
            f"[{style}]{outcome}[/]" if style else outcome,
            _attempts(r),
            f"{r.get('latency_ms', '')}",
            _tokens(r),
            _cost(r),
            _sensitive(r),
        )
    return table


def print_records(records: list[Record], out: Console, as_json: bool) -> None:
    if not records:
        return
    if as_json:
        for r in records:
            out.print(orjson.dumps(r).decode(), markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(tail_table(records))


def run_tail(
    path: Path,
    *,
    lines: int,
    workload_class: str | None,
    as_json: bool,
    follow: bool,
    out: Console,
    err: Console,
    wait: Callable[[float], object] | None = None,
) -> int:
    """Print the last ``lines`` records (of ``workload_class``), then, with ``follow``, new ones
    as they are appended until interrupted. ``wait(seconds)`` paces the polling."""
    try:
        result = read_log(path)
    except FileNotFoundError:
        if not follow:
            err.print(f"[bold red]error:[/] no decision log at {path} (is decision_log.path set?)")
            return 1
        result = None
    if result is not None:
        shown = [r for r in result.records if matches(r, workload_class)]
        print_records(shown[-lines:] if lines > 0 else [], out, as_json)
        if result.corrupt:
            err.print(f"[yellow]![/] {result.corrupt} corrupt lines skipped")
    if not follow:
        return 0
    pause = wait or threading.Event().wait
    follower = LogFollower(path, from_end=result is not None)
    try:
        while True:
            print_records([r for r in follower.poll() if matches(r, workload_class)], out, as_json)
            pause(0.25)
    except KeyboardInterrupt:
        pass
    if follower.corrupt:
        err.print(f"[yellow]![/] {follower.corrupt} corrupt lines skipped")
    return 0


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _counts(title: str, counts: Counter[str], total: int) -> Table:
    table = Table(title=title, box=None, header_style="bold", title_justify="left", pad_edge=False)
    table.add_column(title.split(" ")[-1])
    table.add_column("requests", justify="right")
    table.add_column("share", justify="right")
    for name, n in counts.most_common():
        table.add_row(name, str(n), f"{100 * n / total:.1f}%")
    return table


def stats_tables(stats: LogStats) -> list[Table]:
    p50, p95 = stats.quantiles()
    overview = Table(
        title="decision log", box=None, header_style="bold", title_justify="left", pad_edge=False
    )
    overview.add_column("")
    overview.add_column("", justify="right")
    span = ""
    if stats.first_ts is not None and stats.last_ts is not None:
        span = f"{_time({'ts': stats.first_ts})} .. {_time({'ts': stats.last_ts})}"
    for name, value in (
        ("requests", str(stats.requests)),
        ("period (UTC)", span or "-"),
        ("latency p50 ms", _ms(p50)),
        ("latency p95 ms", _ms(p95)),
        ("attempts", str(stats.attempts)),
        ("hedged requests", str(stats.hedged)),
        ("cost USD", f"{stats.cost_usd:.6f}"),
        ("egress bytes", str(stats.egress_bytes)),
    ):
        overview.add_row(name, value)
    by_class = Table(title="by class", box=None, header_style="bold", title_justify="left", pad_edge=False)
    for column in ("class", "requests", "p50 ms", "p95 ms"):
        by_class.add_column(column, justify="left" if column == "class" else "right")
    for name, n in stats.by_class.most_common():
        c50, c95 = stats.quantiles(name)
        by_class.add_row(name, str(n), _ms(c50), _ms(c95))
    total = max(1, stats.requests)
    return [
        overview,
        by_class,
        _counts("by deployment", stats.by_deployment, total),
        _counts("by outcome", stats.by_outcome, total),
        _counts("sensitive data action", stats.sensitive_actions, total),
    ]


def run_stats(path: Path, *, workload_class: str | None, as_json: bool, out: Console, err: Console) -> int:
    try:
        result = read_log(path)
    except FileNotFoundError:
        err.print(f"[bold red]error:[/] no decision log at {path} (is decision_log.path set?)")
        return 1
    stats = summarize(r for r in result.records if matches(r, workload_class))
    if as_json:
        p50, p95 = stats.quantiles()
        payload = {
            "requests": stats.requests,
            "files": [str(f) for f in result.files],
            "corrupt_lines": result.corrupt,
            "latency_ms": {"p50": p50, "p95": p95},
            "by_class": {
                name: {"requests": n, "p50_ms": stats.quantiles(name)[0], "p95_ms": stats.quantiles(name)[1]}
                for name, n in stats.by_class.items()
            },
            "by_deployment": dict(stats.by_deployment),
            "by_outcome": dict(stats.by_outcome),
            "sensitive_actions": dict(stats.sensitive_actions),
            "cost_usd": stats.cost_usd,
            "egress_bytes": stats.egress_bytes,
            "attempts": stats.attempts,
            "hedged": stats.hedged,
        }
        out.print(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode(), markup=False, highlight=False)
    else:
        for table in stats_tables(stats):
            out.print(table)
            out.print()
        out.print(f"{len(result.files)} file(s): " + ", ".join(str(f) for f in result.files))
    if result.corrupt:
        err.print(f"[yellow]![/] {result.corrupt} corrupt lines skipped")
    return 0

"""Run every benchmark and write the performance report (``make bench``).

Runs each benchmark of this folder as its own process (so one that fails or is interrupted does
not take the others with it), keeps every benchmark's JSON and output in one results folder, then
writes ``docs/performance.md``: the machine and versions, a summary of every target, and a section
per benchmark with its tables and charts (PNG, next to the page in ``docs/performance/``). Every
figure comes from this one run; where a benchmark compares two things, both were measured in it,
side by side, and the page gives the ratio.

Usage::

    python bench/report.py                  # every benchmark, full size (~25 minutes)
    python bench/report.py --quick          # every benchmark, quick presets (~5 minutes)
    python bench/report.py --only planning,scan --out /tmp/perf.md
    python bench/report.py --render bench/results/report-20261206-120000   # re-render only

Exit status: 0 when every benchmark ran and was valid, 1 when one failed (the page says which,
and why), 2 on bad arguments, 130 when interrupted. Speed never fails the run: targets are
reported as met or missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import _harness as h
import _report_charts as charts
import _report_machine as machine
import _report_sections as sections

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS_DIR = BENCH / "results"
DEFAULT_OUT = ROOT / "docs" / "performance.md"


@dataclass(frozen=True)
class Bench:
    """One benchmark: its script and its arguments for each preset."""

    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    smoke: tuple[str, ...]  # seconds, for the report's own test
    timeout_s: float


BENCHES: tuple[Bench, ...] = (
    Bench("overhead", "overhead.py", (), ("--quick",), ("--quick",), 1200),
    Bench("telemetry", "telemetry.py", (), ("--quick",), ("--quick",), 900),
    Bench(
        "transport",
        "transport.py",
        (),
        ("--requests", "1500", "--rounds", "3"),
        ("--requests", "200", "--rounds", "1"),
        600,
    ),
    Bench("planning", "planning.py", ("--plans", "30000"), ("--plans", "10000"), ("--plans", "2000"), 300),
    Bench("scan", "scan.py", (), ("--size-kb", "256", "--rounds", "3"), ("--tiny",), 600),
    Bench(
        "hedging",
        "hedging.py",
        (),
        ("--warmup", "200", "--requests", "1000"),
        ("--warmup", "20", "--requests", "60"),
        1800,
    ),
    Bench("spillover", "spillover.py", (), ("--quick",), ("--quick",), 2400),
    Bench(
        "simulator",
        "simulator.py",
        (),
        ("--quick",),
        ("--requests", "3000", "--profile", "1000", "--no-pin"),
        900,
    ),
    Bench("sim_vs_real", "sim_vs_real.py", (), ("--quick",), ("--quick",), 1800),
)
NAMES = tuple(b.name for b in BENCHES)


@dataclass
class Outcome:
    """How one benchmark's run went: its JSON (None if it wrote none) and exit status."""

    bench: Bench
    status: int | None  # None: not run in this report
    seconds: float = 0.0
    data: dict[str, Any] | None = None
    note: str = ""


def _select(only: str | None, skip: str | None) -> list[Bench]:
    """The benchmarks to run; ValueError naming any unknown one."""

    def names(text: str | None) -> set[str]:
        chosen = {n.strip() for n in (text or "").split(",") if n.strip()}
        unknown = chosen - set(NAMES)
        if unknown:
            raise ValueError(f"unknown benchmark(s) {', '.join(sorted(unknown))} (known: {', '.join(NAMES)})")
        return chosen

    wanted, dropped = names(only), names(skip)
    return [b for b in BENCHES if (not wanted or b.name in wanted) and b.name not in dropped]


def _run_one(bench: Bench, preset: str, results: Path) -> Outcome:
    """Run ``bench`` with the preset's arguments; its output is shown and kept in ``<name>.log``."""
    out = results / f"{bench.name}.json"
    log_path = results / f"{bench.name}.log"
    args = {"full": bench.full, "quick": bench.quick, "smoke": bench.smoke}[preset]
    command = [sys.executable, str(BENCH / bench.script), *args, "--json", str(out)]
    print(f"\n=== {bench.name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
            status = proc.wait(timeout=bench.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = 124
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    seconds = time.perf_counter() - started
    data = orjson.loads(out.read_bytes()) if out.exists() else None
    note = "" if status == 0 else _failure_note(status, log_path)
    return Outcome(bench, status, round(seconds, 1), data, note)


def _failure_note(status: int, log_path: Path) -> str:
    what = {124: "timed out", 130: "interrupted", 2: "did not start", 3: "ran out of time"}.get(
        status, "failed"
    )
    tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-3:]
    return f"exit status {status} ({what}); last output: " + " / ".join(tail)


def _load(results: Path, selected: Sequence[Bench]) -> list[Outcome]:
    """Outcomes of an earlier run, from its folder (for --render)."""
    status = {}
    index = results / "report.json"
    if index.exists():
        status = {b["name"]: b for b in orjson.loads(index.read_bytes())["benchmarks"]}
    outcomes = []
    for bench in BENCHES:
        if bench not in selected:
            outcomes.append(Outcome(bench, None))
            continue
        path = results / f"{bench.name}.json"
        entry = status.get(bench.name, {})
        data = orjson.loads(path.read_bytes()) if path.exists() else None
        code = entry.get("status", 0 if data is not None else None)
        outcomes.append(Outcome(bench, code, entry.get("seconds", 0.0), data, entry.get("note", "")))
    return outcomes


def write_report(
    outcomes: Sequence[Outcome], info: dict[str, Any], out: Path, results: Path, preset: str
) -> Path:
    """docs/performance.md (or ``out``) and its charts, from the outcomes."""
    chart_dir = out.parent / out.stem
    chart_dir.mkdir(parents=True, exist_ok=True)
    for stale in chart_dir.glob("*.png"):
        stale.unlink()
    rendered = []
    for o in outcomes:
        if o.data is None:
            rendered.append(sections.not_run(o.bench.name, o.note or "not selected for this run"))
            continue
        drawn = charts.draw(o.bench.name, o.data, chart_dir)
        links = [f"{chart_dir.name}/{p.name}" for p in drawn]
        rendered.append(sections.render(o.bench.name, o.data, links, o.note))
    page = sections.page(info, rendered, preset, results)
    out.write_text(page)
    index = {
        "machine": info,
        "preset": preset,
        "page": str(out),
        "benchmarks": [
            {"name": o.bench.name, "status": o.status, "seconds": o.seconds, "note": o.note} for o in outcomes
        ],
        "summary": [row._asdict() for r in rendered for row in r.targets],
    }
    (results / "report.json").write_bytes(orjson.dumps(index, option=orjson.OPT_INDENT_2))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    preset = ap.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="quick presets of every benchmark (~5 minutes)")
    preset.add_argument("--smoke", action="store_true", help="the smallest runs (seconds; for tests)")
    ap.add_argument("--only", help=f"comma-separated benchmarks to run (default all: {','.join(NAMES)})")
    ap.add_argument("--skip", help="comma-separated benchmarks not to run")
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="the page to write (default docs/performance.md)"
    )
    ap.add_argument(
        "--results", type=Path, help="folder for the JSON and logs (default bench/results/report-<time>)"
    )
    ap.add_argument(
        "--render", type=Path, metavar="DIR", help="only re-render the page from an earlier run's folder"
    )
    args = ap.parse_args(argv)
    h.sigterm_as_interrupt()
    try:
        selected = _select(args.only, args.skip)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.render is not None:
        if not args.render.is_dir():
            print(f"error: {args.render} is not a results folder", file=sys.stderr)
            return 2
        earlier = _load(args.render, selected)
        index_path = args.render / "report.json"
        index = orjson.loads(index_path.read_bytes()) if index_path.exists() else {}
        info = index.get("machine") or machine.describe()
        page = write_report(earlier, info, args.out, args.render, index.get("preset", name))
        print(f"page: {page}")
        return 0
    results = args.results or RESULTS_DIR / f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    results.mkdir(parents=True, exist_ok=True)
    info = machine.describe()
    outcomes: list[Outcome] = []
    try:
        for bench in selected:
            outcomes.append(_run_one(bench, name, results))
    except KeyboardInterrupt:
        print("\ninterrupted: the page is written with what finished", file=sys.stderr)
        done = {o.bench.name for o in outcomes}
        outcomes += [Outcome(b, 130, note="interrupted") for b in selected if b.name not in done]
        write_report(outcomes, info | machine.after(), args.out, results, name)
        return 130
    outcomes += [Outcome(b, None) for b in BENCHES if b not in selected]
    outcomes.sort(key=lambda o: NAMES.index(o.bench.name))
    page = write_report(outcomes, info | machine.after(), args.out, results, name)
    failed = [o.bench.name for o in outcomes if o.status not in (0, None)]
    print(f"\npage: {page}\nresults: {results}")
    if failed:
        print(f"failed: {', '.join(failed)} (see the page and their logs)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""``make bench``'s runner (bench/report.py): it runs the benchmarks as they are run by hand and
writes the performance page from their JSON. Smoke-sized runs of the quick benchmarks; the other
sections are rendered from real runs in their own benchmarks' tests (``report_section``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _report(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / "report.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("report")
    page, results = base / "docs" / "performance.md", base / "results"
    page.parent.mkdir()
    done = _report(
        "--smoke", "--only", "planning,scan,simulator", "--out", str(page), "--results", str(results)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    return page, results


def test_the_page_shows_the_machine_and_every_number_from_this_run(run: tuple[Path, Path]) -> None:
    page, results = run
    text = page.read_text()
    assert text.startswith("# Performance\n")
    assert "## Machine" in text
    assert "| Python, event loop | 3." in text
    assert "llama-cpp-python" in text  # the package versions the numbers depend on
    planning = json.loads((results / "planning.json").read_text())
    assert planning["plans"] == 2000
    p99 = planning["plan"]["p99_us"]
    assert f"| plan p99 < 50 µs | {p99:,.1f} µs |" in text
    assert f"| one plan | {planning['plan']['p50_us']:,.1f} |" in text
    simulator = json.loads((results / "simulator.json").read_text())
    assert f"**{simulator['run']['requests_per_cpu_s']:,.0f}**" in text
    scan = json.loads((results / "scan.json").read_text())
    for row in scan["results"]:
        assert f"| {row['workload']} | {row['group']} | {row['mb_per_s']:,.1f} |" in text


def test_benchmarks_not_run_are_named_not_invented(run: tuple[Path, Path]) -> None:
    text = run[0].read_text()
    for title in ("Gateway overhead", "Hedging", "Spillover", "Simulation vs reality"):
        assert f"## {title}\n\nNot in this report: not selected for this run." in text
    index = json.loads((run[1] / "report.json").read_text())
    status = {b["name"]: b["status"] for b in index["benchmarks"]}
    assert status["planning"] == status["scan"] == status["simulator"] == 0
    assert status["hedging"] is None
    assert {row["benchmark"] for row in index["summary"]} == {"planning", "scan", "simulator"}


def test_charts_are_drawn_next_to_the_page_and_linked(run: tuple[Path, Path]) -> None:
    page = run[0]
    charts = sorted(p.name for p in (page.parent / "performance").glob("*.png"))
    assert charts == ["scan.png", "simulator.png"]
    text = page.read_text()
    for name in charts:
        assert f"](performance/{name})" in text
        assert (page.parent / "performance" / name).read_bytes().startswith(b"\x89PNG")


def test_rendering_again_from_the_results_gives_the_same_page(run: tuple[Path, Path]) -> None:
    page, results = run
    again = page.parent.parent / "again" / "performance.md"
    again.parent.mkdir()
    done = _report("--render", str(results), "--out", str(again))
    assert done.returncode == 0, done.stderr
    assert again.read_text() == page.read_text()
    drawn = sorted(p.name for p in (again.parent / "performance").glob("*.png"))
    assert drawn == ["scan.png", "simulator.png"]


def test_bad_arguments_exit_2_with_a_message() -> None:
    done = _report("--only", "planning,nope")
    assert done.returncode == 2
    assert "unknown benchmark(s) nope" in done.stderr
    assert "Traceback" not in done.stderr
    done = _report("--render", "/nonexistent/results")
    assert done.returncode == 2
    assert "is not a results folder" in done.stderr

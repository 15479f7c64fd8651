"""bench/telemetry.py runs end to end in a tiny mode: two real gateways (telemetry off and on)
and the mock upstream. Checked: it completes, writes the JSON it documents, every reply was
valid, and the *on* gateway really recorded one decision-log record and two spans per request.
Speed is never asserted here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.bench import report_section, run_bench


@pytest.mark.slow
def test_telemetry_bench_runs_and_checks_its_telemetry(tmp_path: Path) -> None:
    args = ("--warmup", "2", "--rounds", "2", "--per-round", "3")
    report = run_bench("telemetry.py", args, tmp_path / "telemetry.json", timeout=180)
    assert report["meta"]["schema"] == "hybridgate-bench-telemetry/1"
    checks = report["checks"]
    # 2 phases x (2 warm-up + 2 rounds x 3) requests per gateway.
    assert checks["requests"] == {"off": 16, "on": 16}
    assert checks["errors"] == {}
    assert checks["decision_records"] == 16
    assert checks["spans"] == 32
    assert checks["ok"] is True
    for phase, kinds in (("non_stream", ["total"]), ("stream", ["total", "ttft"])):
        for kind in kinds:
            added = report[phase]["added"][kind]
            assert len(added["round_diffs_ms"]) == 2
            assert isinstance(added["p50_ms"], float)
    assert set(report["target"]) == {"added_p50_ms", "met"}
    text, targets = report_section("telemetry", report)  # the performance page's section
    assert f"**{report['non_stream']['added']['total']['p50_ms']:,.3f}**" in text
    assert f"({checks['decision_records']} decision records, {checks['spans']} spans)" in text
    assert [t[2] for t in targets] == [report["target"]["met"]]

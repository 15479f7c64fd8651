"""bench/simulator.py runs end to end on a few thousand requests and writes its JSON (speed is
never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "simulator.py"


def test_simulator_bench_writes_its_result(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    args = [
        sys.executable,
        str(BENCH),
        "--requests",
        "3000",
        "--profile",
        "1000",
        "--no-pin",
        "--json",
        str(out),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "target: 1,000,000 requests" in done.stdout
    result = json.loads(out.read_text())
    assert result["run"]["requests"] == 3000
    assert result["run"]["requests_per_s"] > 0
    assert result["target_met"] is (result["run"]["requests_per_cpu_s"] >= result["target_requests_per_s"])
    areas = result["time_by_area_percent"]
    assert "planner (policy/)" in areas
    assert 99.0 < sum(areas.values()) < 101.0

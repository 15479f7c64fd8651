"""bench/scan.py runs end to end in its tiny mode and writes the JSON it documents.

Speed is never asserted here: the benchmark reports it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scan.py"


def test_tiny_run_writes_the_documented_json(tmp_path: Path) -> None:
    out = tmp_path / "scan.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert str(out) in proc.stdout
    report = json.loads(out.read_text())
    assert report["meta"]["schema"] == "hybridgate-bench-scan/1"
    groups = {r["group"] for r in report["results"]}
    assert groups == {"realistic", "adversarial"}
    for result in report["results"]:
        assert result["bytes"] > 0
        assert result["median_s"] > 0
        assert result["mb_per_s"] > 0
    assert report["worst_adversarial"]["group"] == "adversarial"

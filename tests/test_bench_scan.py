"""bench/scan.py runs end to end in its tiny mode and writes the JSON it documents.

Speed is never asserted here: the benchmark reports it.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.bench import run_bench


def test_tiny_run_writes_the_documented_json(tmp_path: Path) -> None:
    report = run_bench("scan.py", ["--tiny"], tmp_path / "scan.json", timeout=300)
    assert report["meta"]["schema"] == "hybridgate-bench-scan/1"
    groups = {r["group"] for r in report["results"]}
    assert groups == {"realistic", "adversarial"}
    for result in report["results"]:
        assert result["bytes"] > 0
        assert result["median_s"] > 0
        assert result["mb_per_s"] > 0
    assert report["worst_adversarial"]["group"] == "adversarial"

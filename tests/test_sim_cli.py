"""``hybridgate simulate`` on the command line: the report files, and clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from hybridgate.cli import app
from tests.support.sim import BACKENDS, SIM_EXAMPLES, actuation

GATEWAY = SIM_EXAMPLES / "gateway.yaml"


def _workload(tmp_path: Path, classes: list[dict[str, object]] | None = None) -> Path:
    path = tmp_path / "workload.yaml"
    data = {"model": "hybrid", "backends": BACKENDS, "classes": classes or [actuation(2.0)]}
    path.write_text(yaml.safe_dump(data))
    return path


def _simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hybridgate.cli", "simulate", "-c", str(GATEWAY), "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_writes_the_report_and_the_same_seed_writes_the_same_json(tmp_path: Path) -> None:
    workload = _workload(tmp_path)
    faults = tmp_path / "faults.yaml"
    faults.write_text(yaml.safe_dump({"faults": [{"kind": "partition", "start_s": 20, "end_s": 40}]}))
    runner = CliRunner()
    outputs = []
    for out in ("a", "b"):
        args = ["simulate", "-c", str(GATEWAY), "-w", str(workload), "--faults", str(faults)]
        args += ["--requests", "300", "--seed", "7", "--no-progress", "-o", str(tmp_path / out)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outputs.append(tmp_path / out)
    a, b = outputs
    assert (a / "report.json").read_bytes() == (b / "report.json").read_bytes()
    report = orjson.loads((a / "report.json").read_bytes())
    assert set(report["runs"]) == {
        "policy",
        "local-only",
        "cloud-only",
        "static-split",
        "lowest-latency",
        "oracle",
    }
    assert report["runs"]["policy"]["requests"] == 300
    assert report["runs"]["policy"]["governance_violations"] == 0
    page = (a / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert 'src="http' not in page
    for chart in ("latency", "slo", "cost", "queues", "cloud_share"):
        assert (a / f"{chart}.png").read_bytes().startswith(b"\x89PNG")
    md = (a / "report.md").read_text()
    assert "| actuation | policy |" in md
    assert "| oracle |" in md


def test_baselines_can_be_chosen(tmp_path: Path) -> None:
    args = ["simulate", "-c", str(GATEWAY), "-w", str(_workload(tmp_path)), "--requests", "50"]
    args += ["--baselines", "cloud-only", "--no-progress", "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = orjson.loads((tmp_path / "out" / "report.json").read_bytes())
    assert set(report["runs"]) == {"policy", "cloud-only"}


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        ({"classes": [actuation(-1.0)]}, "classes[0].rate_per_s (line"),
        ({"classes": [actuation(1.0, arrival={"kind": "sometimes"})]}, "classes[0].arrival.kind"),
        ({"classes": [{**actuation(1.0), "class": "nope"}]}, "unknown workload class 'nope'"),
        ({"backends": {"ghost": str(SIM_EXAMPLES / "profiles" / "cloud-fast.yaml")}}, "backends.ghost"),
        ({"model": "absent"}, "model 'absent' is not in the configuration"),
    ],
)
def test_bad_workload_is_a_clear_error_with_its_yaml_path(
    tmp_path: Path, workload: dict[str, object], expected: str
) -> None:
    data: dict[str, object] = {
        "model": "hybrid",
        "backends": BACKENDS,
        "classes": [actuation(1.0)],
        **workload,
    }
    path = tmp_path / "workload.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["simulate", "-c", str(GATEWAY), "-w", str(path), "--no-progress"])
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output


def test_bad_files_exit_non_zero_without_a_traceback(tmp_path: Path) -> None:
    workload = _workload(tmp_path)
    faults = tmp_path / "faults.yaml"
    faults.write_text(
        "faults:\n  - kind: outage\n    deployments: [cloud-us]\n    start_s: 50\n    end_s: 10\n"
    )
    bad = _simulate("-w", str(workload), "--faults", str(faults), "-o", str(tmp_path / "out"))
    assert bad.returncode == 2
    assert "faults[0] (line 2)" in bad.stderr
    assert "end_s must be after start_s" in bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: hybrid\nclasses: [\n")
    syntax = _simulate("-w", str(broken), "-o", str(tmp_path / "out"))
    assert syntax.returncode == 2
    assert "YAML syntax error" in syntax.stderr
    assert "Traceback" not in syntax.stderr
    assert not (tmp_path / "out").exists()


def test_the_same_seed_gives_the_same_json_in_another_process(tmp_path: Path) -> None:
    """Nothing may depend on hash randomisation or object addresses (set order, id())."""
    import os

    workload = tmp_path / "workload.yaml"
    classes = [actuation(3.0), {**actuation(1.0), "class": "interactive", "sensitive_share": 0.3}]
    workload.write_text(yaml.safe_dump({"model": "hybrid", "backends": BACKENDS, "classes": classes}))
    faults = tmp_path / "faults.yaml"
    schedule = [
        {"kind": "node_down", "deployments": ["local-a"], "start_s": 20, "end_s": 40},
        {"kind": "outage", "deployments": ["cloud-us"], "start_s": 30, "end_s": 60},
    ]
    faults.write_text(yaml.safe_dump({"faults": schedule}))
    reports = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"out-{hash_seed}"
        args = ["simulate", "-c", str(GATEWAY), "-w", str(workload), "--faults", str(faults)]
        args += ["--duration", "90", "--no-progress", "-o", str(out)]
        done = subprocess.run(
            [sys.executable, "-m", "hybridgate.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert done.returncode == 0, done.stderr
        reports.append((out / "report.json").read_bytes())
    assert reports[0] == reports[1]
    assert orjson.loads(reports[0])["runs"]["policy"]["failed_attempts_by_kind"]["crashed"] > 0

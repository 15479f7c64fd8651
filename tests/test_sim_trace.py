"""Trace replay: a decision log, as the gateway writes it, replayed through the simulation."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from hybridgate.cli import app
from hybridgate.sim.engine import run_scenario
from hybridgate.sim.scenario import load_scenario
from tests.support.sim import BACKENDS, SIM_EXAMPLES


def _decision_log(path: Path, n: int) -> None:
    """Records with the keys of ``Gateway._account`` (only those the replay reads matter)."""
    rng = random.Random(3)
    lines = []
    for i in range(n):
        sensitive = i % 5 == 0
        record = {
            "ts": 1_760_000_000.0 + i * 0.5 + rng.random() * 0.1,
            "tenant": "default",
            "key": "abc123",
            "class": "interactive" if i % 2 else "actuation",
            "model": "hybrid",
            "region": "eu" if i % 3 == 0 else "us",
            "sensitivity": "public",
            "stream": False,
            "deployment": "local-a",
            "placement": "local",
            "outcome": "ok",
            "usage": {"prompt_tokens": 80 + i % 200, "completion_tokens": 20 + i % 50},
            "plan": {"data": {"sensitive": sensitive, "kinds": ["email"] if sensitive else []}},
        }
        lines.append(orjson.dumps(record))
    # A request that failed: no usage; it is replayed with the class's expected output.
    lines.append(
        orjson.dumps({"ts": 1_760_000_000.0 + n, "class": "planning", "outcome": "no_route_available"})
    )
    path.write_bytes(b"\n".join(lines) + b"\n")


def _workload(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "workload.yaml"
    path.write_text(
        yaml.safe_dump({"model": "hybrid", "backends": BACKENDS, "trace": "decisions.jsonl", **extra})
    )
    return path


def test_a_decision_log_is_replayed_request_by_request(tmp_path: Path) -> None:
    _decision_log(tmp_path / "decisions.jsonl", 400)
    sc = load_scenario(SIM_EXAMPLES / "gateway.yaml", _workload(tmp_path, trace_speed=2.0))
    assert len(sc.trace) == 401
    assert sc.trace[-1].t == pytest.approx(200.0, abs=0.1)  # 400 s of log at twice the speed
    results = run_scenario(sc, ["policy", "cloud-only"])
    policy = results["policy"]
    assert policy.requests == 401
    assert {name: c.requests for name, c in policy.classes.items()} == {
        "actuation": 200,
        "interactive": 200,
        "planning": 1,
    }
    # The replayed sensitive requests keep their data profile: the policy redacts or keeps them
    # local, a cloud-only router sends them as they are.
    assert policy.violations == 0
    assert results["cloud-only"].violations >= 80
    assert 195 < policy.simulated_s < 260


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    _decision_log(tmp_path / "decisions.jsonl", 5)
    with (tmp_path / "decisions.jsonl").open("ab") as log:
        log.write(b'{"ts": "yesterday", "class": "actuation"}\nnot json\n')
    runner = CliRunner()
    args = [
        "simulate",
        "-c",
        str(SIM_EXAMPLES / "gateway.yaml"),
        "-w",
        str(_workload(tmp_path)),
        "--no-progress",
    ]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "decisions.jsonl line 7" in result.output
    assert "decisions.jsonl line 8" in result.output
    assert "Traceback" not in result.output

"""The decision log: rotation, the prompt hash, reading back (tail, follow, stats) and bad input.

The writer thread is the real one; files are real; the clock is a ManualClock (age-based
rotation moves time by hand). Follow mode is driven by appending to the file between polls.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console
from typer.testing import CliRunner

from hybridgate.cli import app
from hybridgate.cli_log import run_tail
from hybridgate.clock import ManualClock
from hybridgate.telemetry.decision_log import DecisionLog, prompt_digest
from hybridgate.telemetry.log_reader import LogFollower, log_files, read_log, summarize
from hybridgate.telemetry.rotation import RotatingFile
from hybridgate.types import Message, ToolCall

KEY = b"k" * 32


def record(i: int, **fields: Any) -> dict[str, Any]:
    return {"ts": 1_764_300_000.0 + i, "id": f"req{i:04d}", "class": "default", "outcome": "ok", **fields}


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_log_rotates_by_size_and_keeps_n_files(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path, max_bytes=400, keep=2, hash_key=KEY, clock=ManualClock())
    log.start()
    for i in range(40):
        log.write(record(i))
    log.close()
    assert [p.name for p in log_files(path)] == ["decisions.jsonl.2", "decisions.jsonl.1", "decisions.jsonl"]
    assert not (tmp_path / "decisions.jsonl.3").exists()
    for file in log_files(path):
        assert file.stat().st_size <= 400
    kept = [r["id"] for r in read_log(path).records]
    # Whole lines only, in order, the newest kept and the oldest files deleted.
    assert kept == [f"req{i:04d}" for i in range(40 - len(kept), 40)]
    assert log.rotations >= 3
    assert log.written == 40
    assert log.dropped == 0


def test_the_log_rotates_by_age(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "d.jsonl"
    rotating = RotatingFile(path, max_bytes=10**9, keep=3, clock=clock, max_age_s=3600)
    rotating.write([b'{"a":1}\n'])
    clock.advance(3599)
    rotating.write([b'{"a":2}\n'])
    assert rotating.rotations == 0
    clock.advance(1)
    rotating.write([b'{"a":3}\n'])
    rotating.close()
    assert rotating.rotations == 1
    assert lines_of(path.with_name("d.jsonl.1")) == [{"a": 1}, {"a": 2}]
    assert lines_of(path) == [{"a": 3}]


def test_the_prompt_is_only_a_keyed_hash(tmp_path: Path) -> None:
    messages = (Message.of_text("system", "be brief"), Message.of_text("user", "my secret plan"))
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, hash_key=KEY)
    log.start()
    log.write(record(1), messages=messages)
    log.close()
    [written] = lines_of(path)
    assert written["prompt_hmac"] == prompt_digest(messages, KEY)
    assert len(written["prompt_hmac"]) == 64
    assert "secret plan" not in path.read_text()
    # Keyed: another deployment's key gives another hash; any change to the messages does too.
    assert prompt_digest(messages, b"other") != prompt_digest(messages, KEY)
    changed = (*messages[:1], Message.of_text("user", "my secret plan!"))
    assert prompt_digest(changed, KEY) != prompt_digest(messages, KEY)
    with_tool = (Message("assistant", tool_calls=(ToolCall("1", "f", "{}"),)),)
    assert prompt_digest(with_tool, KEY) != prompt_digest((Message("assistant"),), KEY)


def write_log(path: Path, records: list[dict[str, Any]], *extra_lines: bytes) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + b"".join(extra_lines))


KNOWN = [
    record(
        i,
        **{"class": cls, "deployment": dep, "outcome": outcome},
        latency_ms=latency,
        cost_usd={"total": cost},
        egress_bytes=egress,
        sensitive={"action": action, "kinds": [], "rule": ""},
        attempts=[{"deployment": dep, "hedge": hedge}]
        + ([{"deployment": "x", "hedge": True}] if hedge else []),
    )
    for i, (cls, dep, outcome, latency, cost, egress, action, hedge) in enumerate(
        [
            ("fast", "cloud", "ok", 10.0, 0.001, 100, "none", False),
            ("fast", "cloud", "ok", 20.0, 0.002, 200, "redact", False),
            ("fast", "local", "ok", 30.0, 0.0, 0, "keep_local", True),
            ("fast", "cloud", "upstream_timeout", 40.0, 0.0, 0, "none", False),
            ("slow", "local", "ok", 100.0, 0.0, 0, "keep_local", False),
            ("slow", "local", "ok", 300.0, 0.0, 0, "none", False),
        ]
    )
]


def test_stats_numbers_of_a_known_log() -> None:
    stats = summarize(KNOWN)
    assert stats.requests == 6
    assert stats.by_class == {"fast": 4, "slow": 2}
    assert stats.by_deployment == {"cloud": 3, "local": 3}
    assert stats.by_outcome == {"ok": 5, "upstream_timeout": 1}
    assert stats.sensitive_actions == {"none": 3, "redact": 1, "keep_local": 2}
    assert stats.quantiles() == (30.0, 300.0)  # nearest rank over 10, 20, 30, 40, 100, 300
    assert stats.quantiles("fast") == (20.0, 40.0)
    assert stats.quantiles("slow") == (100.0, 300.0)
    assert stats.cost_usd == pytest.approx(0.003)
    assert stats.egress_bytes == 300
    assert stats.attempts == 7
    assert stats.hedged == 1


def test_log_stats_reads_rotated_files_and_counts_corrupt_lines(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    write_log(path.with_name("decisions.jsonl.1"), KNOWN[:3], b"{not json\n")
    write_log(path, KNOWN[3:], b"[1, 2]\n", b"\n")
    result = CliRunner().invoke(app, ["log", "stats", str(path), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["requests"] == 6
    assert stats["corrupt_lines"] == 2
    assert stats["latency_ms"] == {"p50": 30.0, "p95": 300.0}
    assert stats["by_class"]["fast"] == {"requests": 4, "p50_ms": 20.0, "p95_ms": 40.0}
    assert stats["egress_bytes"] == 300
    assert stats["files"] == [str(path.with_name("decisions.jsonl.1")), str(path)]
    assert "2 corrupt lines skipped" in result.stderr
    tables = CliRunner().invoke(app, ["log", "stats", str(path)])
    assert tables.exit_code == 0
    for word in ("requests", "by class", "by deployment", "by outcome", "keep_local", "upstream_timeout"):
        assert word in tables.stdout


def test_log_tail_shows_the_last_records_of_a_class(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    write_log(path, KNOWN)
    result = CliRunner().invoke(app, ["log", "tail", str(path), "-n", "2", "--class", "fast", "--json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["req0002", "req0003"]
    wide = Console(record=True, width=250, file=(tmp_path / "out.txt").open("w"))
    assert run_tail(path, lines=20, workload_class=None, as_json=False, follow=False, out=wide, err=wide) == 0
    table = wide.export_text()
    assert "upstream_timeout" in table
    assert "req0005" in table
    assert "keep_local" in table


def test_bad_input_gets_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    for command in ("tail", "stats"):
        result = CliRunner().invoke(app, ["log", command, str(missing)])
        assert result.exit_code == 1
        assert f"no decision log at {missing}" in result.stderr.replace("\n", "")
        assert "Traceback" not in result.output
    no_log = tmp_path / "gateway.yaml"
    no_log.write_text(
        "version: 1\ndeployments: {a: {type: openai, base_url: 'http://x/v1', model: m}}\n"
        "models: {m: {deployments: [a]}}\n"
    )
    result = CliRunner().invoke(app, ["log", "stats", "-c", str(no_log)])
    assert result.exit_code == 2
    assert "decision_log.path is not set" in result.stderr
    result = CliRunner().invoke(app, ["log", "stats"])
    assert result.exit_code == 2
    assert "give the decision log file" in result.stderr


def test_follow_prints_what_is_appended(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    write_log(path, KNOWN[:2])
    out = Console(record=True, width=200, file=open(tmp_path / "out.txt", "w"))  # noqa: SIM115
    err = Console(record=True, width=200, file=open(tmp_path / "err.txt", "w"))  # noqa: SIM115
    rounds: list[int] = []

    def wait(seconds: float) -> None:
        """Between two polls: append (a whole line, a corrupt one, half a line), then stop."""
        rounds.append(1)
        with path.open("ab") as f:
            if len(rounds) == 1:
                f.write(orjson.dumps(KNOWN[2]) + b"\nnot json\n" + orjson.dumps(KNOWN[3])[:10])
            elif len(rounds) == 2:
                f.write(orjson.dumps(KNOWN[3])[10:] + b"\n")
            else:
                raise KeyboardInterrupt

    code = run_tail(
        path, lines=1, workload_class=None, as_json=True, follow=True, out=out, err=err, wait=wait
    )
    assert code == 0
    shown = [json.loads(line)["id"] for line in out.export_text().splitlines()]
    assert shown == ["req0001", "req0002", "req0003"]
    assert "1 corrupt lines skipped" in err.export_text()


def test_the_follower_follows_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    write_log(path, KNOWN[:1])
    follower = LogFollower(path)
    assert follower.poll() == []
    with path.open("ab") as f:
        f.write(orjson.dumps(KNOWN[1]) + b"\n")
    assert [r["id"] for r in follower.poll()] == ["req0001"]
    path.replace(path.with_name("decisions.jsonl.1"))
    write_log(path, KNOWN[2:4])
    assert [r["id"] for r in follower.poll()] == ["req0002", "req0003"]


def test_check_warns_about_what_telemetry_will_record(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "version: 1\n"
        "tracing: {enabled: true, exporter: console, record_content: true}\n"
        "decision_log: {path: d.jsonl}\n"
        "deployments: {a: {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}}\n"
        "models: {m: {deployments: [a]}}\n"
    )
    result = CliRunner().invoke(app, ["check", str(config)])
    assert result.exit_code == 0, result.output
    assert "tracing.record_content" in result.output
    assert "decision_log.prompt_hash_key" in result.output


WRITER = """
import sys
from pathlib import Path
from hybridgate.telemetry.decision_log import DecisionLog

name, path, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
log = DecisionLog(path, max_bytes=2000, keep=1000, hash_key=b"k", delay_s=0.001)
log.start()
for i in range(n):
    log.write({"ts": 1764300000.0 + i, "id": f"{name}-{i:04d}", "class": "default", "pad": "x" * 40})
    if i % 7 == 0:
        log.close()  # flush now: the writers' batches interleave
        log.start()
log.close()
"""


def test_several_processes_share_one_rotating_log(tmp_path: Path) -> None:
    """``serve --workers N``: every worker appends to the one log and any of them may rotate it."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "decisions.jsonl"
    writers = [
        subprocess.Popen([sys.executable, str(script), name, str(path), "300"], stderr=subprocess.PIPE)
        for name in ("a", "b", "c")
    ]
    for proc in writers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    result = read_log(path)
    assert result.corrupt == 0
    ids = [r["id"] for r in result.records]
    assert sorted(ids) == sorted(f"{name}-{i:04d}" for name in "abc" for i in range(300))
    for name in "abc":  # each writer's records stay in order across files
        mine = [i for i in ids if i.startswith(name)]
        assert mine == sorted(mine)
    assert len(result.files) > 10
    assert all(f.stat().st_size <= 2000 for f in result.files)


def test_a_log_found_on_disk_is_as_old_as_its_first_record(tmp_path: Path) -> None:
    """Another worker (or an earlier run) started the file: its age is its first record's."""
    clock = ManualClock()
    path = tmp_path / "decisions.jsonl"
    write_log(path, [record(0, ts=clock.wall() - 7200)])
    log = DecisionLog(path, max_age_s=3600, hash_key=KEY, clock=clock)
    log.start()
    log.write(record(1, ts=clock.wall()))
    log.close()
    assert [r["id"] for r in lines_of(path.with_name("decisions.jsonl.1"))] == ["req0000"]
    assert [r["id"] for r in lines_of(path)] == ["req0001"]

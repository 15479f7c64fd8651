"""The benchmarks (bench/overhead.py, bench/transport.py) run end to end in a tiny mode.

It starts its own mock upstream and a real ``hybridgate serve``; these tests check that it
completes, writes the JSON it documents, that every request was valid and that the upstream
saw exactly the requests that were sent. Speed is never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.bench import load_bench, report_section, run_bench

BENCH = Path(__file__).resolve().parents[1] / "bench"
WARMUP, ROUNDS, PER_ROUND = 2, 2, 5


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    args = [
        *("--warmup", str(WARMUP), "--rounds", str(ROUNDS), "--per-round", str(PER_ROUND)),
        *("--duration", "0.5", "--sweep-warmup", "0.1", "--concurrency", "1,4"),
    ]
    return run_bench("overhead.py", args, tmp_path_factory.mktemp("bench") / "overhead.json", timeout=120)


@pytest.mark.slow
def test_writes_the_documented_json(report: dict[str, Any]) -> None:
    assert set(report) >= {"meta", "c1", "sweep", "memory", "checks", "targets", "warnings"}
    assert report["meta"]["schema"] == "hybridgate-bench-overhead/1"
    non_stream, stream = report["c1"]["non_stream"], report["c1"]["stream"]
    for phase, kinds in ((non_stream, ["total"]), (stream, ["total", "ttft"])):
        for kind in kinds:
            for target in ("direct", "gateway"):
                assert phase[target][kind]["n"] == ROUNDS * PER_ROUND
            added = phase["added"][kind]
            assert set(added) >= {"p50_ms", "p90_ms", "p99_ms", "round_min_ms", "round_max_ms"}
            assert len(added["round_diffs_ms"]) == ROUNDS
        assert set(phase["cpu"]) >= {"driver", "gateway", "mock", "other", "cores_busy"}
    levels = {(row["target"], row["concurrency"]) for row in report["sweep"]}
    assert levels == {(t, c) for t in ("direct", "gateway") for c in (1, 4)}
    for row in report["sweep"]:
        assert row["ok"] > 0
        assert row["rps"] > 0
        assert row["latency_ms"]["n"] == row["ok"]
    assert report["memory"]["peak_rss_mb"] > 0
    assert set(report["targets"]) == {"added_p50_ms", "added_p99_ms"}
    for verdict in report["targets"].values():
        assert isinstance(verdict["met"], bool)  # reported, never asserted


@pytest.mark.slow
def test_no_errors_and_upstream_saw_each_request_once(report: dict[str, Any]) -> None:
    checks = report["checks"]
    assert checks["errors_total"] == 0, checks["errors"]
    assert all(row["errors"] == 0 for row in report["sweep"])
    upstream = checks["upstream"]
    assert upstream["bad_requests"] == 0
    assert upstream["seen"] == upstream["sent_total"] == sum(upstream["sent"].values())
    c1_per_target = 2 * (WARMUP + ROUNDS * PER_ROUND)  # non-streaming and streaming phases
    sweep_ok = {t: sum(r["ok"] for r in report["sweep"] if r["target"] == t) for t in ("direct", "gateway")}
    for target in ("direct", "gateway"):
        assert upstream["sent"][target] >= c1_per_target + sweep_ok[target]
    assert upstream["seen_stream"] == 2 * (WARMUP + ROUNDS * PER_ROUND)
    assert checks["ok"] is True


@pytest.mark.slow
def test_records_the_process_layout(report: dict[str, Any]) -> None:
    layout = report["meta"]["layout"]
    if layout["pinned"]:
        gateway_cpu = str(layout["gateway_cpus"][0])
        assert layout["gateway_threads_cpus"] == [gateway_cpu]
        assert layout["mock_threads_cpus"] == [str(layout["driver_and_mock_cpus"][0])]
    else:
        assert "not pinned" in layout["note"]


async def test_client_parses_responses_split_anywhere() -> None:
    """The load client reads both response kinds however the bytes are cut, and validates them."""
    h = load_bench("_harness.py")
    payloads = h.build_mock_payloads("mock", 4, 0)
    expected = h.mock_content(4)

    class Sink:
        def write(self, data: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    for raw, stream in ((payloads.completion, False), (payloads.stream, True)):
        for cut in range(1, len(raw)):
            conn = h.HttpConnection()
            conn.transport, conn.alive = Sink(), True
            future = conn.send(b"", stream, 5.0)
            conn.data_received(raw[:cut])
            conn.data_received(raw[cut:])
            reply = future.result()
            h.validate(reply, stream, expected)
            assert reply.error is None, (cut, reply.error)
            assert (reply.ttft is not None) == stream


def test_client_rejects_wrong_content() -> None:
    h = load_bench("_harness.py")
    payloads = h.build_mock_payloads("mock", 4, 0)
    body = payloads.completion.partition(b"\r\n\r\n")[2]
    assert h.check_completion(body, h.mock_content(4)) is None
    assert h.check_completion(body, "something else") == "content_mismatch"
    assert h.check_completion(b"{}", "x") == "bad_json"
    events = h.dechunk(payloads.stream.partition(b"\r\n\r\n")[2], 0)[0]
    assert h.check_sse(events, h.mock_content(4)) is None
    assert h.check_sse(events.replace(b"data: [DONE]", b""), h.mock_content(4)) == "no_done"


@pytest.mark.slow
def test_transport_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "transport.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "transport.py"),
            "--requests",
            "40",
            "--rounds",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    data = json.loads(out.read_text())
    assert set(data["results"]) == {
        "hybridgate transport",
        next(k for k in data["results"] if k.startswith("aiohttp")),
    }
    for result in data["results"].values():
        assert result["cpu_us_per_request"] > 0
        assert result["wall_us_per_request"] > 0
    assert data["cpu_ratio"] > 0


@pytest.mark.slow
def test_the_performance_page_shows_this_run_s_numbers(report: dict[str, Any]) -> None:
    text, targets = report_section("overhead", report)
    added = report["c1"]["non_stream"]["added"]["total"]
    assert f"| non-streaming, total | {report['c1']['non_stream']['direct']['total']['p50']:,.3f} |" in text
    assert f"**{added['p50_ms']:,.3f}**" in text
    assert "| c=4 |" in text
    assert [t[2] for t in targets] == [
        report["targets"]["added_p50_ms"]["met"],
        report["targets"]["added_p99_ms"]["met"],
    ]

"""bench/hedging.py runs end to end in a tiny configuration and writes the JSON it documents.

It starts two SANDBOX upstreams and two real ``hybridgate serve`` processes (hedged and
unhedged). These tests check completeness and correctness only: every request answered validly
(the sandboxes echo the prompt, so the exact content is known), the upstream logs account for
every attempt, the JSON has the documented keys, exit status 0. Speed is never asserted here.
"""

from __future__ import annotations

import importlib
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.bench import report_section, run_bench

BENCH = Path(__file__).resolve().parents[1] / "bench"
WARMUP, REQUESTS = 10, 30
ARMS = ("unhedged", "hedged")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    args = [
        *("--warmup", str(WARMUP), "--requests", str(REQUESTS), "--rate", "40"),
        *("--time-scale", "0.01", "--bootstrap", "50", "--metrics-period", "0.2"),
    ]
    return run_bench("hedging.py", args, tmp_path_factory.mktemp("bench") / "hedging.json", timeout=120)


@pytest.mark.slow
def test_writes_the_documented_json(report: dict[str, Any]) -> None:
    assert set(report) >= {"meta", "modes", "checks", "targets", "warnings", "connections"}
    assert report["meta"]["schema"] == "hybridgate-bench-hedging/1"
    assert set(report["modes"]) == {"stream", "json"}
    for mode, result in report["modes"].items():
        kinds = {"ttft", "total"} if mode == "stream" else {"total"}
        assert set(result["latency_ms"]) == kinds
        for comparison in result["latency_ms"].values():
            for arm in ARMS:
                assert comparison[arm]["n"] == REQUESTS
                assert {"p50", "p95", "p99"} <= set(comparison[arm])
            assert set(comparison["ratio"]) >= {"p50", "p95", "p99"}
            assert isinstance(comparison["p99_cut"], float)
        assert result["headline"] in kinds
        assert set(result["replay_p95_hedge"]) >= {"hedge_after_ms", "extra_pct", "p99_cut"}
        for arm in ARMS:
            a = result["arms"][arm]
            assert set(a) >= {"upstream", "extra_requests", "extra_pct", "gateway_extra_attempts"}
            assert len(result["samples"][arm]["total_ms"]) == REQUESTS
        verdict = report["targets"][mode]
        assert isinstance(verdict["met"], bool)  # reported, never asserted
        assert isinstance(verdict["extra_met"], bool)
        assert isinstance(verdict["p99_cut_met"], bool)


@pytest.mark.slow
def test_every_request_valid_and_every_attempt_accounted_for(report: dict[str, Any]) -> None:
    checks = report["checks"]
    assert checks["errors_total"] == 0, checks["errors"]
    assert checks["problems"] == []
    assert checks["ok"] is True
    per_arm = len(report["modes"]) * (WARMUP + REQUESTS)
    assert checks["sent"] == dict.fromkeys(ARMS, per_arm)
    for mode, result in report["modes"].items():
        assert result["stats_log_complete"], mode
        assert result["unknown_upstream_requests"] == 0
        unhedged, hedged = result["arms"]["unhedged"], result["arms"]["hedged"]
        assert unhedged["errors"] == {}
        assert hedged["errors"] == {}
        # The unhedged gateway sends each request upstream exactly once, and never hedges.
        assert unhedged["upstream"]["requests"] == unhedged["requests"] == REQUESTS
        assert unhedged["hedged_responses"] == unhedged["gateway_extra_attempts"]["hedge"] == 0
        # The hedged one: its upstream requests are the client's plus the hedges that got out.
        hedges = hedged["gateway_extra_attempts"]["hedge"]
        assert hedged["hedged_responses"] == hedges
        assert hedged["upstream"]["requests"] == REQUESTS + hedges - hedged["attempts_not_sent"]
        assert hedged["extra_requests"] == hedged["upstream"]["requests"] - REQUESTS
        assert sum(hedged["upstream"]["outcomes"].values()) == hedged["upstream"]["requests"]
        for arm in ARMS:
            assert set(result["arms"][arm]["served_by"]) <= {"a", "b"}


@pytest.fixture
def hedging() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("hedging")
    finally:
        sys.path.remove(str(BENCH))


async def test_reads_gateway_headers_and_metrics(hedging: ModuleType) -> None:
    class Sink:
        def write(self, data: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    body = b'{"choices":[{"message":{"content":"hi"}}]}'
    raw = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-hybridgate-hedged: 1\r\n"
        b"X-Hybridgate-Deployment: b\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )
    conn = hedging.HeadConnection()
    conn.transport, conn.alive = Sink(), True
    future = conn.send(b"", False, 5.0)
    conn.data_received(raw)
    reply = await future
    assert reply.status == 200
    assert reply.error is None
    assert conn.headers == {"x-hybridgate-hedged": "1", "x-hybridgate-deployment": "b"}
    metrics = hedging.parse_metrics(
        '# HELP x\nhybridgate_extra_attempts_total{kind="hedge"} 7.0\n'
        'hybridgate_deployment_ttft_p95_seconds{deployment="a"} 0.25\n'
    )
    assert hedging.extra_attempts(metrics)["hedge"] == 7
    assert hedging.ttft_p95_gauges(metrics) == {"a": 0.25}


def test_replay_hedges_only_beyond_the_p95(hedging: ModuleType) -> None:
    samples = [0.01] * 95 + [1.0] * 5
    replay = hedging.replay_p95_hedge(samples, random.Random(1))
    assert replay["extra_pct"] <= 5.0
    assert replay["hedged_p99_ms"] <= replay["p99_ms"]


@pytest.mark.slow
def test_the_performance_page_shows_this_run_s_numbers(report: dict[str, Any]) -> None:
    text, targets = report_section("hedging", report)
    for mode in ("stream", "json"):
        latency = report["modes"][mode]["latency_ms"][report["modes"][mode]["headline"]]
        assert f"**{100 * latency['p99_cut']:.1f}%**" in text
        assert f"**{report['modes'][mode]['arms']['hedged']['extra_pct']:,.2f}%**" in text
    assert [t[2] for t in targets] == [report["targets"]["stream"]["met"], report["targets"]["json"]["met"]]

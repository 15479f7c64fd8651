"""bench/spillover.py runs end to end in a tiny configuration.

It starts the sandbox cloud and one real ``hybridgate serve`` per arm (each with the real
llama.cpp runtime on the tiny model), replays a short bursty trace against every arm, and writes
its JSON. This checks completeness and correctness only: every request answered validly, every
answer accounted for, the documented keys present, exit status 0. Speed is never asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.bench import load_bench, report_section, run_bench

ARMS = ("spill", "failover", "local-only")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> dict[str, Any]:
    args = [
        *("--rounds", "1", "--bursts", "1", "--calm-s", "1.5", "--burst-s", "1"),
        *("--calm-load", "0.2", "--burst-load", "1.0", "--warmup", "2", "--gap", "0.2"),
        *("--prompt-words", "50,200", "--max-tokens", "16,32", "--seed", "3"),
        *("--model", str(models_dir / "tiny.gguf"), "--max-seconds", "60"),
    ]
    return run_bench("spillover.py", args, tmp_path_factory.mktemp("bench") / "spillover.json", timeout=90)


@pytest.mark.slow
def test_writes_the_documented_json(report: dict[str, Any]) -> None:
    assert set(report) >= {
        "meta", "arms", "by_phase", "ratios", "prediction", "executor", "rounds", "checks",
        "requests", "targets", "warnings",
    }  # fmt: skip
    assert report["meta"]["schema"] == "hybridgate-bench-spillover/1"
    assert set(report["arms"]) == set(ARMS)
    for summary in report["arms"].values():
        assert set(summary) >= {
            "requests", "served", "refused", "errors", "met_share", "local_share", "latency_ms",
            "ttft_ms", "left_local", "local_alone_p50_ms", "other_cpu",
        }  # fmt: skip
    assert set(report["ratios"]) >= {"met_share", "met_share_pooled", "local_share_pooled"}
    (rnd,) = report["rounds"]
    assert sorted(rnd["order"]) == sorted(ARMS)
    assert set(rnd["cpu"]) == set(ARMS)
    for verdict in report["targets"].values():
        assert isinstance(verdict["met"], bool)  # reported, never asserted


@pytest.mark.slow
def test_every_request_was_answered_validly(report: dict[str, Any]) -> None:
    checks = report["checks"]
    assert checks["errors_total"] == 0, (checks["errors"], checks["warmup_errors"])
    assert checks["missing_decision_records"] == 0
    assert checks["ok"] is True
    trace_size = report["rounds"][0]["trace"]["requests"]
    assert trace_size > 0
    for arm in ARMS:
        rows = [r for r in report["requests"] if r["arm"] == arm]
        assert len(rows) == trace_size, "every arm replays the same trace"
        summary = report["arms"][arm]
        assert summary["served"] + summary["refused"] == summary["requests"] == trace_size
        for r in rows:
            if r["outcome"] == "served":
                assert r["status"] == 200
                assert r["deployment"] in ("local", "cloud")
                assert r["events"] > 0
                assert r["ttft"] is not None
                assert r["latency"] is not None
                assert r["latency"] >= r["ttft"]
            else:  # only local-only may refuse: queue full, breaker open, or deadline in the queue
                assert (arm, r["outcome"], r["status"]) in {
                    ("local-only", "refused", s) for s in (429, 503, 504)
                }
        if arm == "local-only":
            assert all(r["deployment"] in ("local", None) for r in rows)
    # The same trace: the same offsets and sizes in every arm.
    by_arm = {
        arm: [(r["t"], r["max_tokens"], r["words"]) for r in report["requests"] if r["arm"] == arm]
        for arm in ARMS
    }
    assert by_arm["spill"] == by_arm["failover"] == by_arm["local-only"]


def test_the_trace_is_seeded_and_bursty() -> None:
    """The trace generator alone (no processes): same seed, same trace; bursts are denser."""
    spillover = load_bench("spillover.py")
    s = spillover.parse_args(
        [
            "--rounds",
            "1",
            "--bursts",
            "2",
            "--calm-s",
            "10",
            "--burst-s",
            "5",
            "--calm-rate",
            "2",
            "--burst-rate",
            "16",
        ]
    )
    a, b = spillover.make_trace(7, s), spillover.make_trace(7, s)
    assert a == b
    assert spillover.make_trace(8, s) != a
    calm = [x for x in a.arrivals if x.phase == "calm"]
    burst = [x for x in a.arrivals if x.phase == "burst"]
    assert len(burst) / (2 * 5) > 2 * len(calm) / (3 * 10), "bursts arrive much faster than calm traffic"
    assert [x.t for x in a.arrivals] == sorted(x.t for x in a.arrivals)
    assert all(
        x.max_tokens in s.max_tokens and s.prompt_words[0] <= x.words <= s.prompt_words[1] for x in a.arrivals
    )


@pytest.mark.slow
def test_the_performance_page_shows_this_run_s_numbers(report: dict[str, Any]) -> None:
    text, targets = report_section("spillover", report)
    for arm in ARMS:
        a = report["arms"][arm]
        assert f"| {arm} | {a['requests']:,} | **{100 * a['met_share']:.1f}%** |" in text
    assert {t[0] for t in targets} == {name.replace("_", " ") for name in report["targets"]}


@pytest.mark.slow
def test_arrival_rates_are_loads_of_the_local_runtime_measured_first(report: dict[str, Any]) -> None:
    """With no rates given, the bursts are sized to the runtime's capacity on this machine."""
    c = report["calibration"]
    assert c["requests"] == 12
    capacity = 1000.0 / c["local_alone_p50_ms"]
    assert c["capacity_per_s"] == pytest.approx(capacity, rel=0.01)
    assert c["calm_rate"] == pytest.approx(0.2 * capacity, rel=0.01)
    assert c["burst_rate"] == pytest.approx(1.0 * capacity, rel=0.01)
    assert report["meta"]["settings"]["burst_rate"] == c["burst_rate"]

"""Latency prediction and live statistics (no clock involved: values are passed in)."""

from __future__ import annotations

import pytest

from hybridgate.health.live import DeploymentStats, LiveHealth
from hybridgate.health.predictor import predict, prior
from hybridgate.health.snapshot import DeploymentState
from hybridgate.types import Usage


def test_queue_wait_grows_with_the_queue_of_a_one_slot_runtime() -> None:
    base = prior("local", ttft_s=0.1, tokens_per_s=50, prefill_tokens_per_s=200, expected_output_tokens=100)
    idle = predict(base, prompt_tokens=200, output_tokens=100)
    assert idle.queue_wait_s == 0
    assert idle.ttft_s == pytest.approx(0.1 + 1.0)
    assert idle.expected_s == pytest.approx(0.1 + 1.0 + 2.0)
    queued = predict(base._replace(in_flight=3), prompt_tokens=200, output_tokens=100)
    assert queued.queue_wait_s == pytest.approx(3 * base.service_s)
    assert queued.p95_s > idle.p95_s


def test_cloud_has_no_queue() -> None:
    cloud = prior("cloud")
    assert predict(cloud._replace(in_flight=500), 100, 100).queue_wait_s == 0


def test_live_stats_replace_priors_after_enough_samples() -> None:
    stats = DeploymentStats(prior("local", prefill_tokens_per_s=1e9), min_samples=3)
    for _ in range(2):
        stats.record_success(prompt_tokens=10, completion_tokens=21, ttft_s=0.5, duration_s=1.5)
    assert stats.estimate().samples == 0, "too few samples: priors stand"
    stats.record_success(prompt_tokens=10, completion_tokens=21, ttft_s=0.5, duration_s=1.5)
    est = stats.estimate()
    assert est.samples == 3
    assert est.ttft_p50_s == pytest.approx(0.5)
    assert est.tokens_per_s == pytest.approx(20.0)
    assert est.service_s == pytest.approx(1.5)


def test_in_flight_is_reflected_in_snapshots() -> None:
    health = LiveHealth({"a": prior("local")})
    health.set_state("a", DeploymentState.READY)
    health.started("a")
    health.started("a")
    snapshot = health.snapshot().of("a")
    assert snapshot.perf is not None
    assert snapshot.perf.in_flight == 2
    assert snapshot.perf.queued == 1
    health.succeeded("a", usage=Usage(5, 5), ttft_s=0.1, duration_s=0.3)
    health.finished("a")
    health.failed("a", "timeout")
    health.finished("a")
    assert health.stats["a"].in_flight == 0
    assert health.stats["a"].errors["timeout"] == 1

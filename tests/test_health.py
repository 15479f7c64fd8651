"""Latency prediction, windowed statistics and LiveHealth (breakers, offline, snapshots).

Time is a ManualClock moved by hand; nothing here sleeps.
"""

from __future__ import annotations

import random
import timeit

import pytest

from hybridgate.backends.base import ProbeResult
from hybridgate.clock import ManualClock, SystemClock
from hybridgate.config.resilience import BreakerConfig, OfflineConfig
from hybridgate.health.breaker import BreakerState
from hybridgate.health.live import DeploymentStats, LiveHealth
from hybridgate.health.load import LoadReading
from hybridgate.health.predictor import predict, prior
from hybridgate.health.sketch import WindowedCounter, WindowedSketch
from hybridgate.health.snapshot import DeploymentHealth, DeploymentState
from hybridgate.health.tail import TailTracker
from hybridgate.types import Usage

# ---------------------------------------------------------------------------- prediction


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


# ---------------------------------------------------------------------------- windows


def test_sketch_quantiles_are_within_their_relative_accuracy() -> None:
    sketch = WindowedSketch(60, 6, ManualClock())
    values = [0.001 * 1.01**i for i in range(1000)]
    for v in values:
        sketch.add(v)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.95, 0.99):
        rank = round(q * (len(ordered) - 1))
        got = sketch.quantile(q)
        assert got is not None
        # Within 1% of a value observed at that rank (give or take the rank's rounding).
        assert any(got == pytest.approx(v, rel=0.01) for v in ordered[rank - 1 : rank + 2])
    assert sketch.count == 1000
    assert sketch.mean() == pytest.approx(sum(values) / len(values))


def test_sketch_forgets_what_left_the_window_slot_by_slot() -> None:
    clock = ManualClock(start=0.0)
    sketch = WindowedSketch(60, 6, clock)  # slots of 10 s
    assert sketch.quantile(0.5) is None
    assert sketch.count == 0
    for _ in range(10):
        sketch.add(1.0)
    clock.advance(30)
    for _ in range(10):
        sketch.add(3.0)
    assert sketch.count == 20
    q99 = sketch.quantile(0.99)
    assert q99 is not None
    assert q99 == pytest.approx(3.0, rel=0.01)
    clock.advance(30)  # t=60: the first slot (t 0..10) is out
    assert sketch.count == 10
    assert sketch.quantile(0.01) == pytest.approx(3.0, rel=0.01)
    sketch.add(2.0)  # the merged view is updated in place, not only rebuilt
    assert sketch.count == 11
    assert sketch.quantile(0.01) == pytest.approx(2.0, rel=0.01)
    clock.advance(1000)
    assert sketch.count == 0
    assert sketch.mean() is None


def test_counter_counts_keys_over_the_window() -> None:
    clock = ManualClock(start=0.0)
    counter = WindowedCounter(10, 2, clock)
    counter.add("timeout")
    counter.add("timeout")
    clock.advance(5)
    counter.add("server_error")
    assert counter.counts() == {"timeout": 2, "server_error": 1}
    assert counter.total() == 3
    clock.advance(5)  # t=10: the slot of t 0..5 is out
    assert counter.counts() == {"server_error": 1}
    assert counter.get("timeout") == 0


def test_a_window_needs_a_width() -> None:
    with pytest.raises(ValueError, match="window"):
        WindowedSketch(0, 3, ManualClock())


# ---------------------------------------------------------------------------- statistics


def test_live_stats_replace_priors_after_enough_samples() -> None:
    stats = DeploymentStats(prior("local", prefill_tokens_per_s=1e9), min_samples=3)
    for _ in range(2):
        stats.record_success(prompt_tokens=10, completion_tokens=21, ttft_s=0.5, duration_s=1.5)
    assert stats.estimate().samples == 0, "too few samples: priors stand"
    stats.record_success(prompt_tokens=10, completion_tokens=21, ttft_s=0.5, duration_s=1.5)
    est = stats.estimate()
    assert est.samples == 3
    assert est.ttft_p50_s == pytest.approx(0.5, rel=0.01)  # the sketch's relative accuracy
    assert est.tokens_per_s == pytest.approx(20.0, rel=0.01)
    assert est.service_s == pytest.approx(1.5)


def test_priors_return_when_the_measurements_leave_the_window() -> None:
    clock = ManualClock()
    base = prior("local", prefill_tokens_per_s=1e9)
    stats = DeploymentStats(base, clock=clock, window_s=60, slots=6, min_samples=3)
    for _ in range(3):
        stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=2.0, duration_s=3.0)
    assert stats.estimate().ttft_p50_s == pytest.approx(2.0, rel=0.01)
    clock.advance(61)
    est = stats.estimate()
    assert est.samples == 0
    assert est.ttft_p50_s == base.ttft_p50_s, "a deployment not measured lately is judged by its priors"


ONE_SLOT = prior("local", concurrency=1, prefill_tokens_per_s=1e9)


def test_a_one_slot_runtime_s_queue_wait_is_not_counted_as_service() -> None:
    """Three attempts sent together to one slot finish 1 s apart: each served in 1 s, not 1, 2, 3."""
    clock = ManualClock()
    stats = DeploymentStats(ONE_SLOT, clock=clock, min_samples=3)
    for _ in range(3):
        stats.started()
    for i in range(1, 4):
        clock.advance(1.0)
        stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=i - 0.5, duration_s=float(i))
        stats.finished()
    est = stats.estimate()
    assert est.service_s == pytest.approx(1.0)
    assert est.ttft_p50_s == pytest.approx(0.5, rel=0.01)
    assert stats.quantiles()["ttft_p95_s"] == pytest.approx(0.5, rel=0.01)


def test_a_failure_that_held_the_slot_frees_it_and_one_refused_at_once_does_not() -> None:
    clock = ManualClock()
    stats = DeploymentStats(ONE_SLOT, clock=clock, min_samples=2)
    for _ in range(3):
        stats.started()
    clock.advance(2.0)
    stats.record_error("server_error")  # held the slot for 2 s, then failed: the slot is free now
    stats.finished()
    stats.record_error("overloaded")  # refused at once: never held it
    stats.finished()
    clock.advance(1.0)
    stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=2.5, duration_s=3.0)
    stats.finished()
    stats.started()  # an idle slot: sent and served at once
    clock.advance(1.0)
    stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=0.5, duration_s=1.0)
    stats.finished()
    assert stats.estimate().service_s == pytest.approx(1.0), "2 s of the first success were queue wait"


def test_an_attempt_cut_short_is_recorded_as_a_lower_bound_only_beyond_the_p95() -> None:
    """Its first token would have come after the p95 plus ``over_s``: censored, not dropped; but a
    bound below the p95 (a backup cancelled early) says nothing about the tail and is left out."""
    clock = ManualClock()
    stats = DeploymentStats(prior("cloud", prefill_tokens_per_s=1e9), clock=clock, min_samples=5)
    for _ in range(18):
        stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=0.02, duration_s=0.1)
    p95 = stats.estimate().ttft_p95_s
    assert p95 == pytest.approx(0.02, rel=0.02)
    tracked = stats.estimate().hedge_ttft_s
    assert tracked == pytest.approx(p95)
    for _ in range(5):
        stats.record_cut_short(-0.01, backup=True)  # a backup cancelled before its p95: nothing known
    assert stats.estimate().ttft_p95_s == pytest.approx(p95)
    assert stats.estimate().hedge_ttft_s == pytest.approx(tracked)
    stats.record_cut_short(0.5)
    stats.record_cut_short(0.5)  # two in twenty: beyond the p95
    assert stats.estimate().ttft_p95_s == pytest.approx(p95 + 0.5, rel=0.02)
    assert stats.estimate().ttft_p50_s == pytest.approx(0.02, rel=0.02)
    raised = stats.estimate().hedge_ttft_s
    assert raised is not None
    assert tracked is not None
    assert raised > tracked
    # Backups (hedges) do not move the tracker, finished or cut short: the ones that finish are
    # mostly the fast ones, since a slow backup is usually cancelled before anything is known.
    stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=5.0, duration_s=5.1, backup=True)
    stats.record_cut_short(5.0, backup=True)
    assert stats.estimate().hedge_ttft_s == pytest.approx(raised)
    # A first attempt that won although its hedge was sent had exceeded the delay, whatever its
    # time says against the tracker's value now.
    stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=0.001, duration_s=0.1, late=True)
    later = stats.estimate().hedge_ttft_s
    assert later is not None
    assert later > raised


def _seeded_one_slot(clock: ManualClock) -> DeploymentStats:
    """A one-slot runtime with 20 quick attempts behind it (first token ~20 ms): seeded tracker."""
    stats = DeploymentStats(ONE_SLOT, clock=clock, min_samples=5)
    for _ in range(20):
        stats.started()
        clock.advance(0.1)
        stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=0.02, duration_s=0.1)
        stats.finished()
    assert stats.estimate().hedge_ttft_s == pytest.approx(0.02, rel=0.02)
    return stats


def test_a_one_slot_attempt_late_because_it_queued_does_not_raise_the_hedge_delay() -> None:
    """Hedged because the queue ahead of it outgrew its prediction, then cut short or answered:
    its lateness is the queue's (which the queue model predicts), not its first token's. Counted
    as "exceeded", one burst on a local runtime would ratchet the tracker up by up to 1.6x per
    attempt, to a hedge delay of days (the simulator found 1.4 million seconds)."""
    clock = ManualClock()
    stats = _seeded_one_slot(clock)
    tracked = stats.estimate().hedge_ttft_s
    p95 = stats.estimate().ttft_p95_s
    assert tracked is not None
    for _ in range(3):
        stats.started()  # three sent at once; the planner predicted 0.1 s of wait per one ahead
    clock.advance(5.0)  # the first writes a long answer: first token at 20 ms, done after 5 s
    stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=0.02, duration_s=5.0)
    stats.finished()
    after_first = stats.estimate().hedge_ttft_s
    assert after_first is not None
    assert after_first <= tracked
    # The second was hedged (predicted 0.1 s of wait + 20 ms, it had waited 5 s) and loses 10 ms
    # after it got the slot: its own part is within the prediction, so nothing is known of it.
    clock.advance(0.01)
    stats.record_cut_short(5.01 - 0.12, elapsed_s=5.01, predicted_wait_s=0.1)
    stats.finished()
    assert stats.estimate().hedge_ttft_s == pytest.approx(after_first)
    assert stats.estimate().ttft_p95_s == pytest.approx(p95, rel=0.02), "no lower bound from the queue"
    # The third was hedged too, and answered first anyway: it waited for the slot (5 s by the
    # one-server rule), and its own first token (15 ms) is known, which the tracker hears instead
    # of "exceeded".
    clock.advance(0.1)
    stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=5.015, duration_s=5.11, late=True)
    stats.finished()
    after = stats.estimate().hedge_ttft_s
    assert after is not None
    assert after <= after_first


def test_a_one_slot_attempt_cut_short_while_served_still_counts_as_exceeded() -> None:
    """No wait for the slot: the time past the prediction was the runtime's own."""
    clock = ManualClock()
    stats = _seeded_one_slot(clock)
    tracked = stats.estimate().hedge_ttft_s
    assert tracked is not None
    stats.started()
    clock.advance(1.0)
    stats.record_cut_short(0.98, elapsed_s=1.0)  # served at once (no wait), 0.98 s past its p95
    stats.finished()
    raised = stats.estimate().hedge_ttft_s
    assert raised is not None
    assert raised > tracked


def _hedged_deployment(use_tracker: bool) -> tuple[float, float, float]:
    """A hedged deployment: nine attempts in ten take ~25 ms, one in ten is heavy-tailed. An
    attempt still running at the hedge delay is hedged; when the hedge wins, it is cut short and
    only "exceeded" is known (the sketch gets the lower bound). Returns the true p95, the final
    hedge delay and the share of the last 3,000 attempts hedged."""
    rng = random.Random(7)

    def draw() -> float:
        t = 0.025 * rng.uniform(0.8, 1.2)
        return t * 8 * (1 - rng.random()) ** (-1 / 1.2) if rng.random() < 0.1 else t

    true_p95 = sorted(draw() for _ in range(50_000))[47_500]
    tracker = TailTracker(0.95)
    sketch = WindowedSketch(10_000, 1, ManualClock())
    for _ in range(20):  # the first attempts, before any hedge: the sketch seeds the tracker
        sketch.add(draw())
    hedged = []
    delay = 0.0
    for _ in range(6000):
        tracker.at_least(sketch.quantile(0.95) or 0.0)
        delay = (tracker.value if use_tracker else sketch.quantile(0.95)) or 0.0
        t, backup = draw(), draw()
        hedged.append(t > delay)
        if t <= delay or t < delay + backup:  # answered before the hedge, or won the race anyway
            tracker.observe(t)
            sketch.add(t)
        else:
            tracker.exceeded()
            sketch.add(delay + backup)
    return true_p95, delay, sum(hedged[-3000:]) / 3000


def test_the_tail_tracker_finds_the_p95_when_every_attempt_beyond_it_is_cut_short() -> None:
    true_p95, delay, share = _hedged_deployment(use_tracker=True)
    # A heavy tail is thin around its p95, so the delay wanders more than the share it yields.
    assert delay == pytest.approx(true_p95, rel=0.4)
    assert 0.035 <= share <= 0.065, "about one attempt in twenty is hedged"
    # Hedging at the sketch's p95 (winners and lower bounds) hedges far too soon and too often.
    _, sketch_delay, sketch_share = _hedged_deployment(use_tracker=False)
    assert sketch_delay < 0.7 * true_p95
    assert sketch_share > 0.08


def test_the_tail_tracker_never_stays_below_the_sketch() -> None:
    tracker = TailTracker(0.95)
    tracker.exceeded()  # nothing to move yet
    tracker.observe(1.0)
    seen: list[float | None] = [tracker.value]
    tracker.at_least(0.2)
    seen.append(tracker.value)
    tracker.at_least(0.1)  # a lower sketch value does not pull it down
    seen.append(tracker.value)
    tracker.observe(0.01)
    seen.append(tracker.value)
    tracker.exceeded()
    seen.append(tracker.value)
    assert seen[:3] == [None, pytest.approx(0.2), pytest.approx(0.2)]
    below, above = seen[3], seen[4]
    assert below is not None
    assert above is not None
    assert below < 0.2 < above


def test_runtimes_with_more_slots_keep_the_whole_duration() -> None:
    clock = ManualClock()
    for stats in (
        DeploymentStats(prior("local", concurrency=2, prefill_tokens_per_s=1e9), clock=clock, min_samples=2),
        DeploymentStats(prior("cloud", prefill_tokens_per_s=1e9), clock=clock, min_samples=2),
    ):
        for _ in range(2):
            stats.started()
        for i in (1, 2):
            clock.advance(1.0)
            stats.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=None, duration_s=float(i))
            stats.finished()
        assert stats.estimate().service_s == pytest.approx(1.5)
    # A runtime that reports its own slots is believed over the prior.
    polled = DeploymentStats(ONE_SLOT, clock=clock, min_samples=2)
    polled.runtime = LoadReading(running=2, waiting=0, slots=2)
    for _ in range(2):
        polled.started()
    for i in (1, 2):
        clock.advance(1.0)
        polled.record_success(prompt_tokens=1, completion_tokens=11, ttft_s=None, duration_s=float(i))
        polled.finished()
    assert polled.estimate().service_s == pytest.approx(1.5)


def test_the_estimate_follows_the_latest_samples_under_load() -> None:
    stats = DeploymentStats(prior("local", prefill_tokens_per_s=1e9), clock=ManualClock(), min_samples=5)
    for _ in range(200):
        stats.record_success(prompt_tokens=1, completion_tokens=2, ttft_s=0.1, duration_s=0.2)
    assert stats.estimate().ttft_p50_s == pytest.approx(0.1, rel=0.01)
    for _ in range(400):
        stats.record_success(prompt_tokens=1, completion_tokens=2, ttft_s=1.0, duration_s=1.1)
    assert stats.estimate().ttft_p50_s == pytest.approx(1.0, rel=0.01)


def test_errors_by_kind_and_error_rate_are_windowed() -> None:
    clock = ManualClock()
    stats = DeploymentStats(prior("cloud"), clock=clock, window_s=60, slots=6)
    stats.record_success(prompt_tokens=1, completion_tokens=1, ttft_s=None, duration_s=0.5)
    stats.record_error("timeout")
    stats.record_error("timeout")
    stats.record_error("server_error")
    assert stats.errors == {"timeout": 2, "server_error": 1}
    assert stats.error_rate() == pytest.approx(0.75)
    clock.advance(61)
    assert stats.errors == {}
    assert stats.error_rate() == 0.0


def test_queue_depth_is_the_larger_of_our_own_and_the_runtimes() -> None:
    stats = DeploymentStats(prior("local", concurrency=2), clock=ManualClock())
    for _ in range(3):
        stats.started()
    assert stats.queue_depth == 1  # three in flight on two slots
    stats.runtime = LoadReading(running=2, waiting=5)  # other clients queue there too
    assert stats.queue_depth == 5
    est = stats.estimate()
    assert (est.in_flight, est.concurrency, est.queued) == (7, 2, 5)
    stats.runtime = LoadReading(running=4, waiting=0, slots=4)  # it has four slots, not two
    assert stats.queue_depth == 0
    assert stats.estimate().concurrency == 4
    stats.runtime = LoadReading(ok=False, detail="connection refused")
    assert stats.queue_depth == 1, "a failed poll's numbers are not used"


def test_an_unbounded_runtime_that_queues_gets_a_concurrency() -> None:
    stats = DeploymentStats(prior("cloud"), clock=ManualClock())  # concurrency None (vLLM, unconfigured)
    stats.runtime = LoadReading(running=8, waiting=4, loaded=True)
    est = stats.estimate()
    assert (est.concurrency, est.queued) == (8, 4)
    assert stats.loaded is True


# ---------------------------------------------------------------------------- LiveHealth


def live(clock: ManualClock, **breaker: float) -> LiveHealth:
    health = LiveHealth(
        {"local": prior("local"), "cloud-a": prior("cloud"), "cloud-b": prior("cloud")},
        clock=clock,
        placements={"local": "local", "cloud-a": "cloud", "cloud-b": "cloud"},
        breakers={name: BreakerConfig(**breaker) for name in ("local", "cloud-a", "cloud-b")},
        offline=OfflineConfig(after_failures=3),
    )
    for name in ("local", "cloud-a", "cloud-b"):
        health.set_state(name, DeploymentState.READY)
    return health


def test_in_flight_is_reflected_in_snapshots() -> None:
    health = LiveHealth({"a": prior("local")})
    health.set_state("a", DeploymentState.READY)
    health.started("a")
    health.started("a")
    snapshot = health.snapshot().of("a")
    assert snapshot.perf is not None
    assert snapshot.perf.in_flight == 2
    assert snapshot.perf.queued == 1
    assert snapshot.queue_depth == 1
    health.succeeded("a", usage=Usage(5, 5), ttft_s=0.1, duration_s=0.3)
    health.finished("a")
    health.failed("a", "timeout")
    health.finished("a")
    assert health.stats["a"].in_flight == 0
    assert health.stats["a"].errors["timeout"] == 1


def test_snapshots_are_reused_until_something_changes() -> None:
    clock = ManualClock()
    health = live(clock)
    first = health.snapshot()
    assert health.snapshot() is first
    health.started("local")
    second = health.snapshot()
    assert second is not first
    assert second.deployments["cloud-a"] is first.deployments["cloud-a"], "only what changed is rebuilt"
    assert second.deployments["local"] != first.deployments["local"]
    assert health.snapshot() is second


def test_an_unchanged_snapshot_costs_under_a_microsecond() -> None:
    health = LiveHealth({f"d{i}": prior("local") for i in range(20)}, clock=SystemClock())
    health.snapshot()
    per_call = min(timeit.repeat(health.snapshot, number=20_000, repeat=5)) / 20_000
    assert per_call < 2e-6, f"{per_call * 1e9:.0f} ns per snapshot"  # ~0.2 µs here; slack for CI noise


def test_an_open_breaker_makes_the_deployment_unroutable_until_it_half_opens() -> None:
    clock = ManualClock()
    health = live(clock, consecutive_failures=2, open_s=5)
    health.failed("local", "crashed")
    assert health.snapshot().of("local").routable
    health.failed("local", "crashed")
    entry = health.snapshot().of("local")
    assert entry.state is DeploymentState.CIRCUIT_OPEN
    assert entry.breaker is BreakerState.OPEN
    assert not entry.routable
    assert entry.detail.startswith("until ")
    assert entry.detail.endswith(" after 2 failures in a row (last: crashed)")
    assert health.state("local") == (DeploymentState.READY, ""), "the lifecycle state is unchanged"
    assert not health.admit("local")
    clock.advance(5)
    entry = health.snapshot().of("local")  # time alone changed it: no event in between
    assert (entry.state, entry.breaker) == (DeploymentState.READY, BreakerState.HALF_OPEN)
    assert entry.routable
    assert health.admit("local"), "the one trial"
    assert not health.admit("local"), "only one"
    health.started("local")
    health.succeeded("local", usage=Usage(1, 1), ttft_s=None, duration_s=0.1)
    health.finished("local")
    assert health.snapshot().of("local").breaker is BreakerState.CLOSED
    assert health.admit("local")


def test_a_trial_that_ends_without_a_verdict_is_handed_back() -> None:
    clock = ManualClock()
    health = live(clock, consecutive_failures=1, open_s=1)
    health.started("local")
    health.failed("local", "timeout")
    health.finished("local")
    clock.advance(1)
    changes: list[str] = []
    health.on_breaker_change(lambda: changes.append("changed"))
    assert health.admit("local")
    health.started("local")
    health.finished("local")  # cancelled: no succeeded, no failed
    assert changes == ["changed"]
    assert health.admit("local"), "the next caller gets the trial"


def test_failures_that_are_not_the_deployments_fault_never_open_it() -> None:
    health = live(ManualClock(), consecutive_failures=1)
    for kind in ("rejected", "context_length", "content_policy"):
        health.failed("cloud-a", kind)
    assert health.snapshot().of("cloud-a").breaker is BreakerState.CLOSED
    assert health.stats["cloud-a"].errors == {"rejected": 1, "context_length": 1, "content_policy": 1}


def test_retry_after_sets_how_long_the_breaker_stays_open() -> None:
    clock = ManualClock()
    health = live(clock, consecutive_failures=2, max_open_s=60)
    health.failed("cloud-a", "rate_limited", 20.0)  # the executor's positional use
    assert health.snapshot().of("cloud-a").routable, "one 429 alone does not open it"
    health.failed("cloud-a", "rate_limited", retry_after=20.0)
    entry = health.snapshot().of("cloud-a")
    assert entry.state is DeploymentState.CIRCUIT_OPEN
    assert entry.detail.endswith("2 failures in a row (last: rate_limited); Retry-After 20s")
    clock.advance(19.9)
    assert not health.admit("cloud-a")
    clock.advance(0.1)
    assert health.admit("cloud-a")


def test_describe_is_json_ready() -> None:
    clock = ManualClock()
    health = live(clock)
    health.succeeded("local", usage=Usage(3, 3), ttft_s=0.05, duration_s=0.2)
    health.failed("local", "timeout")
    health.record_load("local", LoadReading(running=1, waiting=2, slots=1))
    info = health.describe("local")
    assert info["state"] == "ready"
    assert info["queue_depth"] == 2
    assert info["errors"] == {"timeout": 1}
    assert info["breaker"] == {
        "state": "closed",
        "reason": "",
        "open_until": None,
        "consecutive_failures": 1,
        "window_requests": 2,
        "window_failures": 1,
        "failed_trials": 0,
        "trial_out": False,
    }
    assert info["runtime"] == {
        "ok": True,
        "running": 1,
        "waiting": 2,
        "slots": 1,
        "loaded": None,
        "detail": "",
    }


# ---------------------------------------------------------------------------- offline


def test_connection_failures_in_a_row_across_cloud_deployments_mean_offline() -> None:
    clock = ManualClock()
    health = live(clock)
    health.failed("cloud-a", "connection")
    health.failed("cloud-b", "connection")
    health.failed("local", "connection")  # a local failure says nothing about the uplink
    health.failed("cloud-a", "timeout")  # nor does a timeout
    assert not health.snapshot().offline
    health.failed("cloud-b", "connection")
    snapshot = health.snapshot()
    assert snapshot.offline
    assert snapshot.offline_since == clock.wall()
    assert snapshot.offline_reason == (
        "3 connection failures in a row across cloud deployments (last: cloud-b)"
    )
    health.succeeded("cloud-a", usage=Usage(1, 1), ttft_s=None, duration_s=0.3)
    snapshot = health.snapshot()
    assert (snapshot.offline, snapshot.offline_since, snapshot.offline_reason) == (False, None, "")


def test_an_answer_from_a_provider_starts_the_count_again() -> None:
    health = live(ManualClock())
    health.failed("cloud-a", "connection")
    health.failed("cloud-a", "connection")
    health.failed("cloud-b", "server_error")  # it answered: the network works
    health.failed("cloud-a", "connection")
    health.failed("cloud-a", "connection")
    assert not health.offline


def test_offline_when_every_cloud_breaker_is_open_and_its_trials_failed() -> None:
    clock = ManualClock()
    health = live(clock, consecutive_failures=1, open_s=1)
    health.failed("cloud-a", "server_error")
    health.failed("cloud-b", "server_error")
    assert not health.snapshot().offline, "open, but no trial has failed yet"
    clock.advance(1)
    for name in ("cloud-a", "cloud-b"):
        assert health.admit(name)
        health.failed(name, "server_error")
    assert health.snapshot().offline
    assert "every cloud deployment's circuit is open" in health.snapshot().offline_reason
    clock.advance(2)
    assert health.admit("cloud-b")  # the prober's trial probe
    health.probed("cloud-b", ProbeResult(ok=True, latency_s=0.05))
    assert not health.snapshot().offline
    assert health.snapshot().of("cloud-b").breaker is BreakerState.CLOSED


def test_offline_mode_can_be_disabled() -> None:
    health = LiveHealth({"c": prior("cloud")}, clock=ManualClock(), offline=OfflineConfig(enabled=False))
    health.set_state("c", DeploymentState.READY)
    for _ in range(10):
        health.failed("c", "connection")
    assert not health.snapshot().offline


def test_routable_treats_an_open_breaker_as_down() -> None:
    entry = DeploymentHealth(DeploymentState.READY, breaker=BreakerState.OPEN)
    assert not entry.routable
    assert DeploymentHealth(DeploymentState.READY, breaker=BreakerState.HALF_OPEN).routable

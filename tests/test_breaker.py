"""The circuit breaker, on a ManualClock: opening rules, half-open single trial, backoff, Retry-After."""

from __future__ import annotations

import pytest

from hybridgate.clock import ManualClock
from hybridgate.config.resilience import BreakerConfig
from hybridgate.errors import ErrorKind
from hybridgate.health.breaker import (
    NOT_AN_OUTCOME,
    NOT_THE_DEPLOYMENTS_FAULT,
    BreakerState,
    CircuitBreaker,
    is_fault,
)

CONFIG = BreakerConfig(
    consecutive_failures=3, error_rate=0.5, min_requests=6, window_s=30, open_s=5, max_open_s=40
)


def breaker(clock: ManualClock, config: BreakerConfig = CONFIG) -> CircuitBreaker:
    return CircuitBreaker(config, clock)


def state(b: CircuitBreaker) -> BreakerState:
    """The breaker's state now (a call, so the type checker does not narrow it across calls)."""
    return b.state


def open_it(b: CircuitBreaker) -> None:
    for _ in range(CONFIG.consecutive_failures):
        b.record_failure("server_error")
    assert state(b) is BreakerState.OPEN


def test_opens_after_consecutive_failures_and_says_why() -> None:
    clock = ManualClock()
    b = breaker(clock)
    b.record_failure("timeout")
    b.record_failure("connection")
    assert state(b) is BreakerState.CLOSED
    assert b.try_acquire()
    b.record_failure("server_error")
    assert state(b) is BreakerState.OPEN
    assert not b.try_acquire()
    status = b.describe()
    assert status.reason == "3 failures in a row (last: server_error)"
    assert status.open_until == clock.monotonic() + 5
    assert status.open_until_wall == pytest.approx(clock.wall() + 5)
    assert b.open_detail() == "until 22:30:05Z after 3 failures in a row (last: server_error)"


def test_a_success_breaks_the_run() -> None:
    b = breaker(ManualClock(), CONFIG.model_copy(update={"error_rate": 0.9}))
    for _ in range(5):
        b.record_failure("timeout")
        b.record_failure("timeout")
        b.record_success()
    assert state(b) is BreakerState.CLOSED, "never 3 in a row (and 67% < 90%)"
    assert b.describe().consecutive_failures == 0


def test_opens_on_the_error_rate_once_the_window_has_enough_requests() -> None:
    b = breaker(ManualClock())
    for _ in range(2):
        b.record_failure("server_error")
        b.record_success()
    assert state(b) is BreakerState.CLOSED, "50% but only 4 requests"
    b.record_failure("server_error")
    assert state(b) is BreakerState.CLOSED, "3 of 5: still under min_requests"
    b.record_success()
    b.record_failure("server_error")  # 4 of 7 failed, and 7 >= 6
    assert state(b) is BreakerState.OPEN
    assert b.reason == "4 of 7 attempts failed in 30s (last: server_error)"


def test_old_failures_leave_the_error_rate_window() -> None:
    clock = ManualClock()
    b = breaker(clock)
    for _ in range(2):
        b.record_failure("server_error")
        b.record_success()
    b.record_failure("server_error")
    b.record_success()
    clock.advance(31)  # all six fell out of the window
    b.record_failure("server_error")
    b.record_success()
    b.record_failure("server_error")
    assert state(b) is BreakerState.CLOSED
    assert b.describe().window_requests == 3


@pytest.mark.parametrize("kind", ["rejected", "context_length", "content_policy"])
def test_the_requests_own_faults_never_open_it(kind: str) -> None:
    b = breaker(ManualClock())
    for _ in range(20):
        b.record_failure(kind)
    assert state(b) is BreakerState.CLOSED
    assert not is_fault(kind)


def test_a_full_local_queue_is_admission_not_failure() -> None:
    """A burst that fills the local queue must not open the breaker (and shed every class)."""
    b = breaker(ManualClock())
    b.record_failure("server_error")
    b.record_failure("server_error")
    for _ in range(20):
        b.record_failure("overloaded", retry_after=30.0)
    assert state(b) is BreakerState.CLOSED
    assert b.describe().window_requests == 2, "neither a failure nor a success"
    b.record_failure("server_error")
    assert state(b) is BreakerState.OPEN
    assert "Retry-After" not in b.describe().reason, "the queue's hint is not the provider's"


@pytest.mark.parametrize("kind", sorted(set(ErrorKind) - NOT_THE_DEPLOYMENTS_FAULT - NOT_AN_OUTCOME))
def test_the_deployments_faults_count(kind: str) -> None:
    b = breaker(ManualClock())
    for _ in range(3):
        b.record_failure(kind)
    assert state(b) is BreakerState.OPEN


def test_half_open_lets_exactly_one_trial_through_until_it_reports() -> None:
    clock = ManualClock()
    b = breaker(clock)
    open_it(b)
    clock.advance(4.9)
    assert not b.try_acquire()
    clock.advance(0.1)
    assert state(b) is BreakerState.HALF_OPEN
    free_before = b.trial_available
    grants = [b.try_acquire() for _ in range(10)]
    assert grants == [True] + [False] * 9
    assert b.describe().trial_out
    assert (free_before, b.trial_available) == (True, False)
    b.record_success()
    assert state(b) is BreakerState.CLOSED
    assert all(b.try_acquire() for _ in range(10))


def test_closing_forgets_the_failures_that_opened_it() -> None:
    clock = ManualClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_success()
        b.record_failure("server_error")
    b.record_failure("server_error")
    b.record_failure("server_error")
    assert state(b) is BreakerState.OPEN
    clock.advance(5)
    assert b.try_acquire()
    b.record_success()
    b.record_failure("timeout")  # one failure after recovery is not a 5-of-9 error rate
    assert state(b) is BreakerState.CLOSED


def test_failed_trials_double_the_open_period_up_to_the_maximum() -> None:
    clock = ManualClock()
    b = breaker(clock)
    open_it(b)
    periods = []
    for _ in range(6):
        until = b.open_until
        assert until is not None
        periods.append(until - clock.monotonic())
        clock.advance(periods[-1])
        assert b.try_acquire()
        b.record_failure("connection")
    assert periods == [5, 10, 20, 40, 40, 40]
    assert b.failed_trials == 6
    assert b.reason == "trial failed (connection), 6 in a row"
    clock.advance(40)
    assert b.try_acquire()
    b.record_success()
    assert b.failed_trials == 0
    open_it(b)
    assert b.open_until == clock.monotonic() + 5, "a recovered deployment starts over at open_s"


def test_retry_after_sets_the_open_time_capped_by_the_maximum() -> None:
    clock = ManualClock()
    b = breaker(clock)
    b.record_failure("rate_limited", retry_after=12)
    assert state(b) is BreakerState.CLOSED, "one 429 is not yet evidence enough to open"
    clock.advance(2)
    b.record_failure("timeout")
    b.record_failure("rate_limited")
    assert state(b) is BreakerState.OPEN
    assert b.open_until == clock.monotonic() + 10, "until the time the provider gave, not open_s"
    assert b.reason == "3 failures in a row (last: rate_limited); Retry-After 10s"
    clock.advance(10)
    assert b.try_acquire()
    b.record_failure("rate_limited", retry_after=3600)
    assert b.open_until == clock.monotonic() + 40, "capped by max_open_s"
    assert b.reason == "trial failed (rate_limited), 1 in a row; Retry-After 40s"


def test_retry_after_is_forgotten_after_a_success() -> None:
    clock = ManualClock()
    b = breaker(clock)
    b.record_failure("rate_limited", retry_after=30)
    b.record_success()
    open_it(b)
    assert b.open_until == clock.monotonic() + 5


def test_a_retry_after_shorter_than_open_s_shortens_the_open_time() -> None:
    clock = ManualClock()
    b = breaker(clock)
    b.record_failure("rate_limited", retry_after=1)
    b.record_failure("rate_limited", retry_after=1)
    b.record_failure("rate_limited", retry_after=1)
    assert b.open_until == clock.monotonic() + 1


def test_a_zero_retry_after_is_no_instruction() -> None:
    clock = ManualClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure("rate_limited", retry_after=0)
    assert b.open_until == clock.monotonic() + 5


def test_stragglers_do_not_close_an_open_breaker_but_may_extend_it() -> None:
    clock = ManualClock()
    b = breaker(clock)
    open_it(b)
    b.record_success()  # an attempt sent before it opened
    assert state(b) is BreakerState.OPEN
    b.record_failure("rate_limited", retry_after=30)
    assert b.open_until == clock.monotonic() + 30
    b.record_failure("rate_limited", retry_after=1)
    assert b.open_until == clock.monotonic() + 30, "never shortened"


def test_a_released_trial_goes_to_the_next_caller() -> None:
    clock = ManualClock()
    b = breaker(clock)
    open_it(b)
    clock.advance(5)
    assert b.try_acquire()
    assert b.release()
    assert not b.release()
    assert b.try_acquire()


def test_a_trial_that_never_reports_is_forfeited() -> None:
    clock = ManualClock()
    b = breaker(clock)
    open_it(b)
    clock.advance(5)
    assert b.try_acquire()
    assert b.next_change_at() == clock.monotonic() + 40
    clock.advance(39)
    assert not b.try_acquire()
    clock.advance(1)
    assert b.try_acquire()


def test_next_change_at_tells_when_time_alone_changes_the_answer() -> None:
    clock = ManualClock()
    b = breaker(clock)
    assert b.next_change_at() is None
    open_it(b)
    assert b.next_change_at() == clock.monotonic() + 5
    clock.advance(5)
    assert b.next_change_at() is None, "half-open with the trial free: nothing to wait for"


def test_describe_is_an_immutable_value() -> None:
    clock = ManualClock()
    b = breaker(clock)
    b.record_failure("timeout")
    status = b.describe()
    assert isinstance(hash(status), int), "frozen: a value, hashable"
    b.record_failure("timeout")
    assert status.consecutive_failures == 1, "a later failure does not change what was described"
    assert status.to_dict() == {
        "state": "closed",
        "reason": "",
        "open_until": None,
        "consecutive_failures": 1,
        "window_requests": 1,
        "window_failures": 1,
        "failed_trials": 0,
        "trial_out": False,
    }

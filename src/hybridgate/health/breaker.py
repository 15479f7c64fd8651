"""Circuit breakers: stop sending to a deployment that keeps failing, and find out when it is back.

    CLOSED ──(N failures in a row, or the error rate over the window)──> OPEN
    OPEN ──(open period over)──> HALF_OPEN ──(the one trial succeeds)──> CLOSED
                                  HALF_OPEN ──(the trial fails)──> OPEN, for twice as long

- **Opens** on ``consecutive_failures`` failures in a row, or when at least ``min_requests``
  attempts in the last ``window_s`` seconds failed at ``error_rate`` or more.
- **Open** for ``open_s``, doubled after each failed trial, never longer than ``max_open_s`` —
  unless the provider said when to come back: the latest ``Retry-After`` among the failures
  since the last success sets the open time instead (capped by ``max_open_s`` too), and one that
  arrives while open extends the period (never shortens it).
- **Half-open** once the period is over: :meth:`CircuitBreaker.try_acquire` lets exactly one
  caller through (a request or a probe) until that one reports; success closes the breaker
  (and clears the window), failure opens it again with the longer period. A trial that never
  reports (its caller vanished) is forfeited after ``max_open_s`` so the breaker cannot stay
  stuck.
- Only failures that are the deployment's fault count. A request the provider rejected as
  invalid, too long for its context, or against its content policy says the deployment is up:
  it counts as a success.

Time is the injected clock; the transition from open to half-open happens when the breaker is
next looked at. Owned by one event loop: no locks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from hybridgate.clock import Clock
from hybridgate.config.resilience import BreakerConfig
from hybridgate.errors import ErrorKind
from hybridgate.health.sketch import WindowedTally

# The request's own fault: another attempt at the same deployment would be answered the same.
NOT_THE_DEPLOYMENTS_FAULT = frozenset(
    {ErrorKind.REJECTED, ErrorKind.CONTEXT_LENGTH, ErrorKind.CONTENT_POLICY}
)

# Admission, not failure: the gateway's own bounded queue for a local runtime was full. The
# runtime is healthy and busy; the planner already sees its queue (predicted wait) and the
# request goes to the next candidate. Counting it would open the breaker on a burst and shed
# every class, the highest priority included, from a runtime that is working.
NOT_AN_OUTCOME = frozenset({ErrorKind.OVERLOADED})

_WINDOW_SLOTS = 10
_SUCCESS, _FAILURE = 0, 1  # the window's two tallies


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def is_fault(kind: str) -> bool:
    """Whether a failure of this :class:`~hybridgate.errors.ErrorKind` counts against the deployment."""
    return kind not in NOT_THE_DEPLOYMENTS_FAULT


def wall_clock_text(wall: float) -> str:
    """A wall-clock time as people read it in a reason: ``14:03:21Z``."""
    return time.strftime("%H:%M:%SZ", time.gmtime(wall))


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """What a breaker looks like at one moment (for /readyz, logs and tests); immutable."""

    state: BreakerState
    reason: str  # why it opened ("" when closed)
    open_until: float | None  # monotonic seconds; None unless open
    open_until_wall: float | None  # the same on the wall clock
    consecutive_failures: int
    window_requests: int
    window_failures: int
    failed_trials: int  # trials failed in a row: the open period is open_s * 2 ** failed_trials
    trial_out: bool  # half-open and its one trial is running

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "open_until": None if self.open_until_wall is None else round(self.open_until_wall, 3),
            "consecutive_failures": self.consecutive_failures,
            "window_requests": self.window_requests,
            "window_failures": self.window_failures,
            "failed_trials": self.failed_trials,
            "trial_out": self.trial_out,
        }


class CircuitBreaker:
    """One deployment's breaker. See the module docstring for the rules::

    breaker = CircuitBreaker(BreakerConfig(consecutive_failures=2, open_s=5), clock)
    breaker.record_failure("server_error")
    breaker.record_failure("timeout")
    breaker.try_acquire()   # False: open for 5 s
    clock.advance(5)
    breaker.try_acquire()   # True: half-open, this caller is the one trial
    breaker.try_acquire()   # False: the trial has not reported yet
    breaker.record_success()  # closed again
    """

    def __init__(self, config: BreakerConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._window = WindowedTally(config.window_s, _WINDOW_SLOTS, clock)
        self._open_until = 0.0
        self._failed_trials = 0
        self._trial_since: float | None = None
        self._retry_at = 0.0  # when the provider said to come back (monotonic); 0: it did not
        self._reason = ""

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock.monotonic() >= self._open_until:
            self._state = BreakerState.HALF_OPEN
            self._trial_since = None
        return self._state

    @property
    def open_until(self) -> float | None:
        """When the open period ends (monotonic), while open; else None."""
        return self._open_until if self.state is BreakerState.OPEN else None

    @property
    def failed_trials(self) -> int:
        return self._failed_trials

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def trial_available(self) -> bool:
        """Half-open with no trial running: the next :meth:`try_acquire` would succeed."""
        return self.state is BreakerState.HALF_OPEN and not self._trial_out()

    def describe(self) -> BreakerStatus:
        state = self.state
        until = self._open_until if state is BreakerState.OPEN else None
        wall = None if until is None else self._clock.wall() + (until - self._clock.monotonic())
        failures = self._window.get(_FAILURE)
        return BreakerStatus(
            state=state,
            reason=self._reason if state is not BreakerState.CLOSED else "",
            open_until=until,
            open_until_wall=wall,
            consecutive_failures=self._consecutive,
            window_requests=failures + self._window.get(_SUCCESS),
            window_failures=failures,
            failed_trials=self._failed_trials,
            trial_out=state is BreakerState.HALF_OPEN and self._trial_out(),
        )

    def open_detail(self) -> str:
        """One line for a rejected candidate: until when, and why (only meaningful while open)."""
        status = self.describe()
        if status.open_until_wall is None:
            return self._reason
        return f"until {wall_clock_text(status.open_until_wall)} after {self._reason}"

    # ------------------------------------------------------------------ admitting

    def try_acquire(self) -> bool:
        """May one request (or probe) go to the deployment now?

        Closed: yes. Open: no. Half-open: yes for exactly one caller until that one reports
        through :meth:`record_success`, :meth:`record_failure` or :meth:`release`.
        """
        if self._state is BreakerState.CLOSED:
            return True
        if self.state is not BreakerState.HALF_OPEN or self._trial_out():
            return False
        self._trial_since = self._clock.monotonic()
        return True

    def release(self) -> bool:
        """The trial ended without a verdict (cancelled): let the next caller try. Returns whether
        a trial was out."""
        out = self._trial_since is not None
        self._trial_since = None
        return out

    def next_change_at(self) -> float | None:
        """When time alone changes what :meth:`try_acquire` answers (monotonic), if it will: the end
        of the open period, or the forfeit of a half-open trial that never reported."""
        state = self.state
        if state is BreakerState.OPEN:
            return self._open_until
        if state is BreakerState.HALF_OPEN and self._trial_since is not None:
            return self._trial_since + self.config.max_open_s
        return None

    def _trial_out(self) -> bool:
        since = self._trial_since
        return since is not None and self._clock.monotonic() - since < self.config.max_open_s

    # ------------------------------------------------------------------ outcomes

    def record_success(self) -> None:
        """The deployment answered. Closes a half-open breaker; an open one ignores stragglers."""
        state = self.state
        if state is BreakerState.OPEN:
            return  # an attempt from before it opened: the open period stands
        if state is BreakerState.HALF_OPEN:
            self._close()
        self._consecutive = 0
        self._retry_at = 0.0
        self._window.add(_SUCCESS)

    def record_failure(self, kind: str = ErrorKind.SERVER_ERROR, retry_after: float | None = None) -> None:
        """An attempt (or probe) failed with ``kind``; ``retry_after`` is the provider's, if any."""
        if kind in NOT_AN_OUTCOME:
            return
        if not is_fault(kind):
            self.record_success()
            return
        state = self.state
        if retry_after is not None and retry_after > 0:
            come_back = self._clock.monotonic() + min(retry_after, self.config.max_open_s)
            self._retry_at = max(self._retry_at, come_back)
            if state is BreakerState.OPEN:  # a straggler that knows better: extend, never shorten
                self._open_until = max(self._open_until, come_back)
        if state is BreakerState.OPEN:
            return
        if state is BreakerState.HALF_OPEN:
            self._failed_trials += 1
            period = min(self.config.open_s * 2**self._failed_trials, self.config.max_open_s)
            self._open(period, f"trial failed ({kind}), {self._failed_trials} in a row")
            return
        self._consecutive += 1
        self._window.add(_FAILURE)
        config = self.config
        if self._consecutive >= config.consecutive_failures:
            self._open(config.open_s, f"{self._consecutive} failures in a row (last: {kind})")
            return
        failures = self._window.get(_FAILURE)
        requests = failures + self._window.get(_SUCCESS)
        if requests >= config.min_requests and failures >= config.error_rate * requests:
            self._open(
                config.open_s,
                f"{failures} of {requests} attempts failed in {config.window_s:g}s (last: {kind})",
            )

    def _open(self, seconds: float, reason: str) -> None:
        now = self._clock.monotonic()
        if self._retry_at > now:  # the provider said when to come back: that is the open time
            seconds = self._retry_at - now
            reason = f"{reason}; Retry-After {round(seconds, 1):g}s"
        self._state = BreakerState.OPEN
        self._open_until = now + seconds
        self._trial_since = None
        self._reason = reason

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._failed_trials = 0
        self._trial_since = None
        self._reason = ""
        # The failures that opened it are history now; keeping them would re-open it at once.
        self._window = WindowedTally(self.config.window_s, _WINDOW_SLOTS, self._clock)

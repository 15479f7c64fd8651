"""One deployment's live measurements, over a sliding window of time.

Kept per deployment (``window_s``, default two minutes, in ``slots`` slots):

- time to first token, with the prompt's prefill taken out (a quantile sketch);
- decode time per output token (a quantile sketch; its median gives tokens per second);
- service time (how long an attempt holds the deployment; its mean feeds the queue model);
- errors by kind; attempts in flight; the runtime's own running/waiting counts when polled;
  whether its model is loaded; the last probe.

Until ``min_samples`` measurements are in the window, the configured priors stand, so a
deployment that saw no traffic for a while is judged by its priors again (and gets tried).

On a runtime with one slot (the embedded llama.cpp runtime, a one-slot llama.cpp server) the
attempts the gateway times include their wait in its queue, which the planner predicts
separately (queue wait = in flight x service time). So that the wait is not counted twice, and
so that one burst does not inflate the predictions for the whole window, each completed attempt
is split with the one-server rule: its service began when it arrived or when the slot was last
freed, whichever is later; the time before that is queue wait, taken out of both its time to
first token and its service time.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from hybridgate.clock import Clock, SystemClock
from hybridgate.health.predictor import PerfEstimate
from hybridgate.health.sketch import WindowedCounter, WindowedMean, WindowedSketch
from hybridgate.health.snapshot import ProbeRecord
from hybridgate.health.tail import TailTracker

if TYPE_CHECKING:
    from hybridgate.health.load import LoadReading

WINDOW_S = 120.0
WINDOW_SLOTS = 12
# Failures that never held the runtime's slot (refused at once), or may not have (a deadline that
# passed in the queue): they do not mark the slot as freed. After a failure that did hold it, the
# next success then counts that failure's time as its own service: it errs towards predicting a
# longer queue, not a shorter one.
_SLOT_NOT_FREED = frozenset({"overloaded", "rate_limited", "unavailable", "timeout"})


class DeploymentStats:
    """One deployment's windowed measurements, turned into the planner's :class:`PerfEstimate`."""

    def __init__(
        self,
        prior: PerfEstimate,
        *,
        clock: Clock | None = None,
        window_s: float = WINDOW_S,
        slots: int = WINDOW_SLOTS,
        min_samples: int = 5,
    ) -> None:
        clock = clock or SystemClock()
        self._clock = clock
        self.prior = prior
        self.min_samples = min_samples
        self.in_flight = 0
        self.completed = 0
        self.failed_by_kind: Counter[str] = Counter()  # since start (the metrics' attempt counts)
        self.runtime: LoadReading | None = None  # the runtime's own account of its load
        self.last_probe: ProbeRecord | None = None
        self._ttft = WindowedSketch(window_s, slots, clock)  # base TTFT: prefill of the prompt removed
        self._decode = WindowedSketch(window_s, slots, clock)  # seconds per output token
        self._service = WindowedMean(window_s, slots, clock)  # seconds an attempt held the deployment
        self._errors = WindowedCounter(window_s, slots, clock)
        self._estimate = prior
        self._error_rate = 0.0
        self._recorded = 0  # outcomes recorded so far: the windowed values change with it (or time)
        self._measured = (-1, -1)  # (recorded, slot) the windowed values were last derived at
        self._measured_n = -1  # time-to-first-token samples when the quantiles were last read
        self._slot_freed_at = float("-inf")  # one-slot runtimes: when the last attempt left the slot
        self._tail = TailTracker(0.95)  # the time-to-first-token p95 that hedges wait for

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    def record_success(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
        duration_s: float,
        backup: bool = False,
        late: bool = False,
    ) -> None:
        """One completed attempt. ``ttft_s`` is None when not streamed (it is then inferred).

        ``ttft_s`` and ``duration_s`` count from when the attempt was sent; on a one-slot runtime
        its wait in the queue is taken out (see the module docstring). A ``backup`` (a hedge) is
        left out of the hedge's tracker: a backup that loses is cancelled, mostly while slow and
        before anything is known about it, so the backups that finish are the fast ones. A
        ``late`` stream (its hedge was sent) exceeded the first-token delay, whatever the
        tracker's value has become since. A late whole answer, or an attempt late after waiting
        for a one-slot runtime's slot, may have been late for its length or the queue (which the
        predictor models apart): the tracker hears its own first token instead.
        """
        self.completed += 1
        estimate = self._estimate
        prefill = prompt_tokens / estimate.prefill_tokens_per_s
        streamed = ttft_s is not None
        if ttft_s is not None and completion_tokens >= 2 and duration_s > ttft_s:
            self._decode.add((duration_s - ttft_s) / (completion_tokens - 1))
        if ttft_s is None:
            ttft_s = duration_s - completion_tokens / estimate.tokens_per_s
        wait = self._queue_wait(duration_s)
        first_token = max(0.0, ttft_s - wait - prefill)
        self._ttft.add(first_token)
        if late and streamed and wait <= 0.0:
            self._tail.exceeded()
        elif not backup:
            self._tail.observe(first_token)
        self._service.add(duration_s - wait)
        self._recorded += 1

    def record_cut_short(
        self,
        over_s: float,
        *,
        backup: bool = False,
        elapsed_s: float | None = None,
        predicted_wait_s: float = 0.0,
    ) -> None:
        """An attempt cancelled, unanswered, ``over_s`` after its predicted p95 time (negative if
        sooner; the prediction counts prefill and queue wait, so ``over_s`` is measured against
        the first-token p95 alone): its first token would have come after p95 + ``over_s``.

        A lower bound, kept in the sketch only when above its p95 (a bound below it would pull
        the p95 down). The race's first attempt is cut short only when its hedge was sent, that
        is when it had exceeded the hedge delay, which is what the hedge's tracker needs to know
        (comparing the bound with the tracker's value now could miss it: the value moves between
        the plan and the cut). Leaving such attempts out would teach both only the winners'
        times, and the p95 a hedge waits for would sink towards the fast requests' p95 (see
        :mod:`hybridgate.health.tail`). Backups never reach the tracker (see
        :meth:`record_success`).

        On a one-slot runtime, ``elapsed_s`` (since the attempt was sent) splits off its wait for
        the slot by the one-server rule, and ``over_s`` is taken against the first-token part of
        the prediction alone (without the ``predicted_wait_s`` it included): the queue model
        predicts the wait on its own. Counted whole, a queue that outgrew its prediction would
        ratchet the hedge delay up by the tracker's step per cut attempt, to days (the simulator
        found 1.4 million seconds after a long burst). An attempt cut before its own part reached
        the prediction tells nothing of the tail. Nor does an attempt cut while others were in
        flight on the same single slot: it may never have held the slot, so neither its own time
        nor when the slot was freed is known (the next attempt's service then counts from the
        last known free slot, which errs towards predicting a longer queue).
        """
        if self.in_flight > 1 and self._slots() == 1:
            return
        wait = self._queue_wait(elapsed_s or 0.0)  # it held a one-slot runtime's slot until now
        over_s += predicted_wait_s - wait
        if over_s < 0 and (wait > 0 or predicted_wait_s > 0):
            return  # its own time was within the prediction when it was cut: nothing known
        self._refresh_if_due()
        p95 = self._estimate.ttft_p95_s
        bound = p95 + over_s
        if over_s >= 0:
            self._ttft.add(bound)
            self._recorded += 1
        if not backup:
            self._tail.exceeded()

    def record_error(self, kind: str) -> None:
        if kind not in _SLOT_NOT_FREED:
            self._queue_wait(0.0)  # it held the slot until now
        self._errors.add(kind)
        self.failed_by_kind[kind] += 1
        self._recorded += 1

    def _queue_wait(self, duration_s: float) -> float:
        """How long the attempt ending now (sent ``duration_s`` ago) waited for a one-slot runtime.

        0 on a runtime with more slots (or unbounded), and for an attempt the gateway did not see
        start (``in_flight`` counts it until it is finished): the split needs both.
        """
        if self.in_flight < 1 or self._slots() != 1:
            return 0.0
        now = self._clock.monotonic()
        sent = now - duration_s
        began = max(sent, self._slot_freed_at)
        self._slot_freed_at = now
        return min(duration_s, began - sent)

    def _slots(self) -> int | None:
        """How many requests the runtime serves at once: its own word when polled, else the prior."""
        reading = self.runtime
        if reading is not None and reading.ok and reading.slots:
            return reading.slots
        return self.prior.concurrency

    @property
    def errors(self) -> Counter[str]:
        """Failed attempts in the window, by :class:`~hybridgate.errors.ErrorKind`."""
        return Counter(self._errors.counts())

    def error_rate(self) -> float:
        """The failed share of the window's attempts (0 when there were none)."""
        self._refresh_if_due()
        return self._error_rate

    def quantiles(self) -> dict[str, float | None]:
        """Measured quantiles in seconds (None where the window holds nothing): for /readyz."""
        return {
            "ttft_p50_s": self._ttft.quantile(0.5),
            "ttft_p95_s": self._ttft.quantile(0.95),
            "decode_per_token_p50_s": self._decode.quantile(0.5),
            "decode_per_token_p95_s": self._decode.quantile(0.95),
            "service_mean_s": self._service.mean(),
        }

    @property
    def loaded(self) -> bool | None:
        return self.current()[2]

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a slot: the gateway's own in-flight beyond the runtime's concurrency,
        or the runtime's own queue when polled, whichever is larger."""
        return self.current()[1]

    def estimate(self) -> PerfEstimate:
        """The current estimate, with the current load (the gateway's in-flight, or the runtime's)."""
        return self.current()[0]

    def current(self) -> tuple[PerfEstimate, int, bool | None, float]:
        """(estimate, queue depth, loaded, error rate) now, in one pass: what a snapshot holds."""
        self._refresh_if_due()
        est = self._estimate
        reading = self.runtime
        concurrency = self.prior.concurrency
        in_flight = self.in_flight
        own_in_flight = in_flight
        reported = 0
        loaded = None
        if reading is not None and reading.ok:
            running, reported = reading.running or 0, reading.waiting or 0
            if reading.slots:
                concurrency = reading.slots
            elif concurrency is None and reported:
                concurrency = max(1, running)  # an unbounded runtime that queues: it runs this many at once
            in_flight = max(in_flight, running + reported)
            loaded = reading.loaded
        queue = max(own_in_flight - concurrency, reported, 0) if concurrency is not None else reported
        hedge_after = self._tail.value
        if est.in_flight != in_flight or est.concurrency != concurrency or est.hedge_ttft_s != hedge_after:
            # The constructor, not _replace: this runs for every snapshot of a busy deployment.
            ttft_p50, ttft_p95, tps, prefill, _, _, service, samples, _ = est
            est = PerfEstimate(
                ttft_p50, ttft_p95, tps, prefill, concurrency, in_flight, service, samples, hedge_after
            )
        return est, queue, loaded, self._error_rate

    def _refresh_if_due(self) -> None:
        # The windowed values change only when an outcome is recorded or the window turns a slot.
        # Quantile reads walk the sketch (~10 µs each), so under load the quantiles are re-read
        # when the window has grown by ~6% (or turned a slot), not on every completed attempt.
        epoch = self._service.epoch  # every window here has the same slots
        key = (self._recorded, epoch)
        if key == self._measured:
            return
        rotated = epoch != self._measured[1]
        self._measured = key
        n = self._service.count
        failed = self._errors.total()
        self._error_rate = failed / (failed + n) if failed + n else 0.0
        last = self._measured_n
        seen = self._ttft.count  # successes and attempts cut short
        if not rotated and (seen == last or (last >= self.min_samples and seen - last < last // 16)):
            return
        self._measured_n = seen
        est = self.prior
        enough = self.min_samples
        ttft_n = self._ttft.count
        if ttft_n >= enough:
            p50, p95 = self._ttft.quantile(0.5), self._ttft.quantile(0.95)
            if p50 is not None and p95 is not None:
                est = est._replace(ttft_p50_s=p50, ttft_p95_s=p95)
                self._tail.at_least(p95)
        if self._decode.count >= enough:
            per_token = self._decode.quantile(0.5)
            if per_token:
                est = est._replace(tokens_per_s=1.0 / per_token)
        if n >= enough:
            mean = self._service.mean()
            if mean is not None:
                est = est._replace(service_s=mean)
        self._estimate = est._replace(samples=ttft_n if ttft_n >= enough else 0)

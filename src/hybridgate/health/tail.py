"""A running estimate of a high quantile that stays right when the slowest samples are cut short.

The hedge delay must be a deployment's time-to-first-token p95. An attempt that loses to its hedge is
cancelled, so its latency is never measured, only known to exceed the delay; a quantile sketch
fed with the winners (or with that lower bound) then learns too low a p95 and hedges ever sooner
and more often. This tracker needs, from every attempt, only whether it exceeded the current
estimate, which a cancelled attempt still tells: the estimate rises by a step when it was
exceeded and falls by a twentieth of that step when not, so it settles where one attempt in
twenty exceeds it (the Robbins-Monro quantile recursion, in log space so the step is relative).
The step shrinks as ``3/sqrt(n)`` (at most 0.5) down to ``min_step``, so that it starts fast
(between the bulk of a heavy-tailed distribution and its tail one attempt in ten exceeds the
estimate, and the drift there is only a twentieth of a step per attempt) and then keeps
following a deployment whose latency changes; and it never stays below the sketch's quantile of
the same attempts (lower bounds included), which can be too low but not too high.
"""

from __future__ import annotations

import math

_MAX_STEP = 0.5  # a factor of e^0.475 = 1.6 up per exceedance at most
_STEP_SCALE = 3.0


class TailTracker:
    """The ``q``-quantile of a stream of positive values, some of them known only as "above"."""

    __slots__ = ("_log", "_n", "min_step", "q")

    def __init__(self, q: float = 0.95, min_step: float = 0.03) -> None:
        self.q = q
        self.min_step = min_step
        self._log: float | None = None
        self._n = 0

    @property
    def value(self) -> float | None:
        """The estimate in seconds; None until seeded."""
        return None if self._log is None else math.exp(self._log)

    def at_least(self, value: float) -> None:
        """Start from, or rise to, ``value``: a quantile sketch's estimate from the same attempts.

        Attempts cut short are recorded in the sketch as lower bounds, so its quantile can be too
        low but not too high; where the tracker is still below it (it starts slowly), the sketch
        is the better estimate.
        """
        if value > 0 and (self._log is None or value > math.exp(self._log)):
            self._log = math.log(value)

    def observe(self, value: float) -> None:
        """An attempt whose time is known."""
        if self._log is not None:
            self._step(value > math.exp(self._log))

    def exceeded(self) -> None:
        """An attempt known only to have taken longer than the current estimate."""
        if self._log is not None:
            self._step(True)

    def _step(self, above: bool) -> None:
        assert self._log is not None
        self._n += 1
        step = min(_MAX_STEP, max(self.min_step, _STEP_SCALE / math.sqrt(self._n)))
        self._log += step * ((1.0 if above else 0.0) - (1.0 - self.q))

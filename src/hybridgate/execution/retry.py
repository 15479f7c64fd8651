"""What to do after a failed attempt, and how many extra attempts the gateway may make at all.

:class:`RetryPolicy` is pure: given the error and the attempt's history it returns a
:class:`Decision` (tenacity's idea: strategies decide, the runner only carries out). By error kind:

==================  ====================================================================
rate limited (429)  another deployment now; if none is left, wait its Retry-After (or a
                    jittered backoff) once, bounded by the deadline — never hammer
server error (5xx)  once more on the same deployment, then the next one
connection          (refused/reset before any byte) once more on the same, then the next
timeout             the next deployment: a silent deployment is not asked again
context length      the next deployment with a larger context window; never the same model
content policy,     returned to the client as they are: another provider must not be asked
rejected (4xx)      to do what one refused, and a bad request is bad everywhere
anything else       the next deployment
==================  ====================================================================

:class:`RetryBudget` caps extra load: retries on the same deployment and hedged requests may
add at most ``ratio`` of the requests seen over the last ``window_s`` (plus a small floor for
quiet periods), so a flapping provider cannot multiply traffic. Failing over to a *different*
deployment is not budgeted — that is what keeps answers flowing — but ``max_attempts`` bounds it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

from hybridgate.clock import Clock
from hybridgate.config.resilience import RetryConfig
from hybridgate.errors import ErrorKind, UpstreamError


class Action(StrEnum):
    RETRY_SAME = "retry_same"
    NEXT = "next"
    NEXT_LARGER_CONTEXT = "next_larger_context"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay_s: float = 0.0
    reason: str = ""


_RETURN_AS_IS = frozenset({ErrorKind.REJECTED, ErrorKind.CONTENT_POLICY})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The per-error-kind rules above. ``rng`` draws backoff jitter (seeded in tests)."""

    config: RetryConfig
    rng: random.Random

    def decide(
        self, error: UpstreamError, *, same_tries: int, others_left: bool, time_left_s: float
    ) -> Decision:
        """After ``error`` on a deployment already tried ``same_tries`` times (this one included)."""
        kind = error.kind
        if kind in _RETURN_AS_IS:
            return Decision(Action.STOP, reason=f"{kind.value}: returned as is")
        if kind is ErrorKind.CONTEXT_LENGTH:
            return Decision(Action.NEXT_LARGER_CONTEXT, reason="context length: a larger window")
        if kind is ErrorKind.RATE_LIMITED:
            if others_left:
                return Decision(Action.NEXT, reason="rate limited: another deployment")
            wait = error.retry_after if error.retry_after is not None else self.backoff(same_tries)
            if same_tries >= 2 or wait > min(time_left_s, self.config.backoff_max_s):
                return Decision(Action.STOP, reason="rate limited: no time to wait for it")
            return Decision(Action.RETRY_SAME, wait, "rate limited: waiting as asked")
        if kind in (ErrorKind.SERVER_ERROR, ErrorKind.CONNECTION) and same_tries < 2:
            return Decision(Action.RETRY_SAME, self.backoff(same_tries) / 4, f"{kind.value}: once more")
        return Decision(Action.NEXT, reason=f"{kind.value}: next deployment")

    def backoff(self, tries: int) -> float:
        """Full-jitter exponential backoff (AWS architecture blog): uniform in [0, base * 2^tries]."""
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * math.pow(2, tries))
        return self.rng.uniform(0, ceiling)


class RetryBudget:
    """Extra attempts allowed as a share of recent requests, over a sliding window of slots."""

    def __init__(self, config: RetryConfig, clock: Clock, slots: int = 10) -> None:
        self.ratio = config.retry_budget_ratio
        self.floor = config.retry_budget_min
        self._clock = clock
        self._slot_s = config.retry_budget_window_s / slots
        self._requests = [0] * slots
        self._extra = [0] * slots
        self._slot = self._index()
        self.denied = 0

    def _index(self) -> int:
        return int(self._clock.monotonic() // self._slot_s)

    def _advance(self) -> int:
        now = self._index()
        n = len(self._requests)
        if now != self._slot:
            for step in range(min(now - self._slot, n)):
                i = (self._slot + step + 1) % n
                self._requests[i] = self._extra[i] = 0
            self._slot = now
        return now % n

    def record_request(self) -> None:
        self._requests[self._advance()] += 1

    def try_spend(self) -> bool:
        """Take one extra attempt from the budget; False (and counted) when it is spent."""
        i = self._advance()
        allowed = self.floor + self.ratio * sum(self._requests)
        if sum(self._extra) + 1 > allowed:
            self.denied += 1
            return False
        self._extra[i] += 1
        return True

    @property
    def spent(self) -> int:
        self._advance()
        return sum(self._extra)

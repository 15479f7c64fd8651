"""Requests and tokens per minute per key: GCRA on the injected clock.

The generic cell rate algorithm keeps one number per key and limit, the *theoretical arrival
time* (TAT): each unit of cost pushes it ``period / limit`` further; a hit is allowed while the
TAT stays within one period of now (so a full period's worth may arrive as a burst). A refused
hit gets the exact wait until it would be allowed (``Retry-After``). Both limits are checked
before either is charged, so a request refused on tokens does not use up a request slot.

Why not the ``limits`` library: its storages read ``time.time()`` themselves (and the memory
storage runs a timer thread), so windows could not be tested on a manual clock without patching
its internals; this is ~80 lines with the clock injected (aiolimiter's approach).

Tokens are charged before the call from the estimate (prompt + max_tokens, or the class's
expected output) and corrected by the actual usage afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridgate.clock import Clock
from hybridgate.errors import RateLimited

PERIOD_S = 60.0
_MAX_KEYS = 100_000


@dataclass(slots=True)
class Admission:
    key: str
    tpm: int | None
    tokens: int


class KeyRateLimiter:
    """GCRA per (key, limit) on ``clock.monotonic()``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._tat: dict[tuple[str, str], float] = {}
        self.refused = 0

    def _next_tat(self, slot: tuple[str, str], limit: int, cost: int, now: float) -> tuple[float, float]:
        """(the TAT after charging ``cost``, seconds to wait before that is allowed)."""
        interval = PERIOD_S / limit
        tat = max(self._tat.get(slot, now), now) + cost * interval
        return tat, max(0.0, tat - now - PERIOD_S)

    def admit(self, key: str, rpm: int | None, tpm: int | None, tokens: int) -> Admission:
        """Charge one request and ``tokens``; 429 with the wait when either limit is reached."""
        now = self.clock.monotonic()
        plan: list[tuple[tuple[str, str], float]] = []
        for kind, limit, cost in (("rpm", rpm, 1), ("tpm", tpm, tokens)):
            if limit is None:
                continue
            if cost > limit:
                self.refused += 1
                raise RateLimited(
                    f"this request's {cost} tokens exceed the key's limit of {limit} tokens per minute"
                )
            tat, wait = self._next_tat((key, kind), limit, cost, now)
            if wait > 0:
                self.refused += 1
                what = "requests" if kind == "rpm" else "tokens"
                raise RateLimited(
                    f"rate limit of {limit} {what} per minute reached for this key; "
                    f"retry in {math.ceil(wait)} s",
                    retry_after=wait,
                )
            plan.append(((key, kind), tat))
        if len(self._tat) > _MAX_KEYS:
            self._tat = {slot: tat for slot, tat in self._tat.items() if tat > now}
        for slot, tat in plan:
            self._tat[slot] = tat
        return Admission(key, tpm, tokens)

    def settle(self, admission: Admission, actual_tokens: int) -> None:
        """Correct the tokens charged by the actual usage (a refund when the estimate was high)."""
        if admission.tpm is None or actual_tokens == admission.tokens:
            return
        slot = (admission.key, "tpm")
        if slot in self._tat:
            self._tat[slot] += (actual_tokens - admission.tokens) * PERIOD_S / admission.tpm

"""Fault rules of the SANDBOX: what goes wrong, to which requests, and when.

A rule names a ``kind`` and says which requests it hits. Rules come from the profile and from
``POST /sandbox/faults`` at run time; for each request the first rule that *fires* applies (one
fault per request). Each rule counts the requests it matches (by model pattern, and only
streamed requests for the stream kinds) whether or not an earlier rule fired first, so windows
mean what they say::

    {"kind": "server_error", "status": 503, "next": 3}        # the next 3 requests fail
    {"kind": "rate_limit", "every": 4, "retry_after_s": 0.2}   # every 4th: 429 + Retry-After
    {"kind": "stream_cut", "after_tokens": 5, "probability": 0.1, "model": "sandbox-*"}
    {"kind": "flapping", "down_s": 2, "up_s": 8}               # down 2 s, up 8 s, repeating

Fault durations (``delay_s``, ``down_s``...) are wall-clock seconds as written: the profile's
``time_scale`` shrinks the latency model, not the faults a test sets against its own timeouts.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "reset",
    "hang",
    "slow_first_token",
    "stream_cut",
    "stream_stall",
    "malformed_chunk",
    "missing_done",
    "context_length",
    "content_policy",
    "flapping",
]

STREAM_KINDS: frozenset[str] = frozenset({"stream_cut", "stream_stall", "malformed_chunk", "missing_done"})
"""Kinds that act inside a stream; they match streamed requests only."""


class FaultRule(BaseModel):
    """One fault rule. With no probability or window it hits every matching request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    probability: float = Field(1.0, ge=0, le=1, description="Chance of firing when the window allows.")
    every: int | None = Field(None, ge=1, description="Fire on every Nth matching request (N, 2N, ...).")
    next: int | None = Field(None, ge=1, description="Only the next N matching requests.")
    after: int | None = Field(None, ge=0, description="Only after the first N matching requests.")
    model: str | None = Field(None, description="Model name pattern (fnmatch, e.g. 'sandbox-*').")
    status: int | None = Field(None, description="server_error: 5xx (default 500); flapping: default 503.")
    retry_after_s: float | None = Field(None, ge=0, description="rate_limit/server_error: Retry-After.")
    delay_s: float = Field(1.0, ge=0, description="slow_first_token: extra TTFT; stream_stall: pause.")
    after_tokens: int = Field(3, ge=0, description="Stream kinds: act after this many tokens.")
    down_s: float = Field(5.0, gt=0, description="flapping: length of each outage.")
    up_s: float = Field(5.0, gt=0, description="flapping: length of each healthy period.")

    @model_validator(mode="after")
    def _status_fits(self) -> Self:
        if self.status is not None:
            if self.kind not in ("server_error", "flapping"):
                raise ValueError(f"'status' applies to server_error and flapping, not {self.kind}")
            if not 500 <= self.status <= 599:
                raise ValueError("status must be a 5xx code")
        return self

    @property
    def stream_only(self) -> bool:
        return self.kind in STREAM_KINDS

    @property
    def error_status(self) -> int:
        """The HTTP status of an error-reply kind."""
        if self.status is not None:
            return self.status
        return 503 if self.kind == "flapping" else 500


@dataclass(slots=True)
class InstalledRule:
    """A rule plus its counters since it was installed."""

    rule: FaultRule
    installed_at: float
    matched: int = 0
    fired: int = 0

    def is_down(self, now: float) -> bool:
        """For flapping rules: whether ``now`` falls in an outage window (outage first)."""
        period = self.rule.down_s + self.rule.up_s
        return (now - self.installed_at) % period < self.rule.down_s

    def window_allows(self) -> bool:
        """Whether the request just counted in ``matched`` falls in the rule's window."""
        rule, n = self.rule, self.matched
        if rule.next is not None and n > rule.next:
            return False
        if rule.after is not None and n <= rule.after:
            return False
        return rule.every is None or n % rule.every == 0


class FaultBook:
    """The installed rules and the choice of the fault for each request.

    ``rng`` is the sandbox's seeded random source and ``clock`` its monotonic clock (injected so
    the flapping windows can be tested without waiting).
    """

    def __init__(self, rng: random.Random, clock: Callable[[], float]) -> None:
        self._rng = rng
        self._clock = clock
        self._rules: list[InstalledRule] = []

    def add(self, rules: Iterable[FaultRule]) -> None:
        now = self._clock()
        self._rules.extend(InstalledRule(rule, now) for rule in rules)

    def clear(self) -> None:
        self._rules.clear()

    @property
    def rules(self) -> list[InstalledRule]:
        return list(self._rules)

    def select(self, model: str, stream: bool) -> FaultRule | None:
        """The fault for one inference request, or None; counts the request in every matching rule."""
        if not self._rules:
            return None
        chosen: FaultRule | None = None
        now = self._clock()
        for installed in self._rules:
            rule = installed.rule
            if (rule.stream_only and not stream) or (
                rule.model is not None and not fnmatchcase(model, rule.model)
            ):
                continue
            installed.matched += 1
            if not installed.window_allows():
                continue
            if rule.kind == "flapping" and not installed.is_down(now):
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            if chosen is None:
                installed.fired += 1
                chosen = rule
        return chosen

    def outage(self) -> FaultRule | None:
        """A flapping rule in its outage window, for endpoints outside inference (``/v1/models``).

        An outage takes the whole service down, so health probes see it too; nothing is counted.
        """
        now = self._clock()
        for installed in self._rules:
            if installed.rule.kind == "flapping" and installed.is_down(now):
                return installed.rule
        return None

"""Backend models: how a modelled deployment serves attempts in virtual time.

A profile (YAML, validated by :class:`BackendProfile`) gives capacity (``slots`` served at once,
``max_queue`` waiting beyond them), the latency of one attempt once it holds a slot (time to
first token: a lognormal draw plus prefill per prompt token, multiplied by a Pareto factor for the
heavy-tailed share; decode: a lognormal tokens-per-second draw), a standing error rate, and cold
starts (a model unloaded after ``idle_unload_s`` idle seconds costs ``cold_start_s`` again). The
distributions are the SANDBOX provider's own (:mod:`hybridgate.sandbox.profile`), so a profile
calibrated for one reads the same in the other. Price and region are not here: they come from the
gateway configuration, through the real cost model.

:class:`BackendModel` is the running state: busy slots, the queue (ordered by the class's
priority, then arrival, as the gateway's admission queue for local runtimes is:
docs/resilience.md), when the model was last used. It knows nothing of routing; the engine
submits attempts and hears back when they end.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from hybridgate.errors import ErrorKind
from hybridgate.sandbox.profile import HeavyTail, LogNormal
from hybridgate.sim.files import load_model


class BackendProfile(BaseModel):
    """How one deployment behaves in time (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., min_length=1)
    description: str = ""
    sources: list[str] = Field(default_factory=list, description="Public figures it was calibrated from.")
    slots: int | None = Field(None, gt=0, description="Attempts served at once; null = unbounded (cloud).")
    max_queue: int | None = Field(None, ge=0, description="Attempts waiting for a slot; beyond: overloaded.")
    ttft: LogNormal = Field(..., description="Seconds to the first token once served, short prompt.")
    prefill_tokens_per_s: float = Field(5000.0, gt=0, description="Prompt tokens processed per second.")
    decode_tps: LogNormal = Field(..., description="Output tokens per second, drawn per attempt.")
    heavy_tail: HeavyTail = Field(default_factory=HeavyTail)
    error_rate: float = Field(0.0, ge=0, le=1, description="Share of attempts failing with a server error.")
    cold_start_s: float = Field(0.0, ge=0, description="Load time of the model when it is not resident.")
    idle_unload_s: float | None = Field(None, gt=0, description="Idle seconds after which it is unloaded.")


def load_profile(path: Path) -> BackendProfile:
    return load_model(path, BackendProfile, "backend profile")


@dataclass(slots=True)
class Timing:
    """One attempt's draw: seconds to the first token and to the end, once it holds a slot."""

    ttft_s: float
    total_s: float
    error: bool


class Attempt:
    """One attempt of one simulated request on one deployment."""

    __slots__ = (
        "backup",
        "deadline",
        "deployment",
        "done",
        "fail_kind",
        "first_deadline",
        "index",
        "late",
        "queued",
        "request",
        "retry_after",
        "served_at",
        "started",
        "timing",
    )

    def __init__(
        self, request: object, deployment: str, index: int, started: float, deadline: float, backup: bool
    ) -> None:
        self.request = request
        self.deployment = deployment
        self.index = index  # the candidate's position in the route
        self.started = started
        self.deadline = deadline
        self.first_deadline = deadline  # its first token's, where the gateway can see one (the engine)
        self.backup = backup  # a hedge
        self.late = False  # a hedge was sent because this attempt was slow
        self.done = False
        self.queued = False  # waiting in its backend's queue
        self.served_at = -1.0  # when it got a slot (-1: waiting or refused)
        self.timing: Timing | None = None
        self.fail_kind: ErrorKind | None = None  # how it ends when its END event comes (None: success)
        self.retry_after: float | None = None


class LogNormalDraw:
    """A :class:`LogNormal` drawn with ``exp(mu + sigma * gauss())``: the same distribution as
    ``LogNormal.draw`` (which uses ``lognormvariate``), a third of the cost."""

    __slots__ = ("high", "low", "mu", "sigma")

    def __init__(self, spec: LogNormal) -> None:
        self.mu = math.log(spec.median)
        self.sigma = spec.spread
        self.low = spec.min if spec.min is not None else 0.0
        self.high = spec.max if spec.max is not None else math.inf

    def __call__(self, rng: random.Random) -> float:
        value = math.exp(self.mu + self.sigma * rng.gauss()) if self.sigma else math.exp(self.mu)
        return self.low if value < self.low else self.high if value > self.high else value


class BackendModel:
    """Slots, queue and warmth of one modelled deployment."""

    def __init__(self, name: str, profile: BackendProfile) -> None:
        self.name = name
        self.profile = profile
        self._ttft = LogNormalDraw(profile.ttft)
        self._tps = LogNormalDraw(profile.decode_tps)
        self._tail = profile.heavy_tail
        self._prefill = profile.prefill_tokens_per_s
        self._error_rate = profile.error_rate
        self.slots = profile.slots
        self.busy = 0
        self._queue: list[tuple[int, int, Attempt]] = []  # (-priority, arrival order, attempt)
        self._pushed = 0
        self.queued = 0  # attempts waiting (the heap may still hold ones that left: lazily dropped)
        self.last_active = 0.0
        # Attempts holding a slot, in the order they got it (a dict: a set's order would depend
        # on object addresses, and the order of a crash's failures must not).
        self.running: dict[Attempt, None] = {}

    def draw(self, rng: random.Random, prompt_tokens: int, output_tokens: int, slow_factor: float) -> Timing:
        tail = self._tail
        factor = slow_factor if tail.probability == 0 else tail.draw(rng) * slow_factor
        ttft = (self._ttft(rng) + prompt_tokens / self._prefill) * factor
        decode = max(0, output_tokens - 1) / self._tps(rng)
        error = self._error_rate > 0 and rng.random() < self._error_rate
        return Timing(ttft, ttft + decode, error)

    def has_slot(self) -> bool:
        return self.slots is None or self.busy < self.slots

    def queue_full(self) -> bool:
        limit = self.profile.max_queue
        return limit is not None and self.queued >= limit

    def push(self, att: Attempt, priority: int) -> None:
        self._pushed += 1
        heapq.heappush(self._queue, (-priority, self._pushed, att))
        att.queued = True
        self.queued += 1

    def pop(self) -> Attempt | None:
        """The first waiting attempt by priority, then arrival (None when none waits)."""
        while self._queue:
            att = heapq.heappop(self._queue)[2]
            if att.queued:
                att.queued = False
                self.queued -= 1
                return att
        return None

    def drop(self, att: Attempt) -> None:
        """``att`` leaves the queue without being served (a deadline, a crash, displaced)."""
        if att.queued:
            att.queued = False
            self.queued -= 1

    def last_waiting(self) -> tuple[int, Attempt] | None:
        """The attempt that would be served last, and its priority: the one a higher-priority
        arrival displaces when the queue is full."""
        live = [entry for entry in self._queue if entry[2].queued]
        if not live:
            return None
        negative, _, att = max(live, key=lambda e: (e[0], e[1]))
        return -negative, att

    def waiting_in_order(self) -> list[Attempt]:
        return [entry[2] for entry in sorted(self._queue, key=lambda e: (e[0], e[1])) if entry[2].queued]

    def cold_start(self, now: float) -> float:
        """Extra seconds before serving at ``now``: the model's load time if it was unloaded."""
        p = self.profile
        idle = p.idle_unload_s
        if idle is not None and self.busy == 0 and now - self.last_active > idle:
            return p.cold_start_s
        return 0.0

    def waiting(self) -> int:
        return self.queued

    def start_after(self, now: float) -> float:
        """When an attempt submitted now would get a slot (for the oracle, which knows the draws
        of everything already queued)."""
        if self.slots is None:
            return now
        frees = sorted(
            a.served_at + (a.timing.total_s if a.timing else 0.0) for a in self.running if not a.done
        )
        frees += [now] * (self.slots - len(frees))
        heapq.heapify(frees)
        for queued in self.waiting_in_order():
            at = max(now, heapq.heappop(frees))
            heapq.heappush(frees, at + (queued.timing.total_s if queued.timing else 0.0))
        return max(now, frees[0])

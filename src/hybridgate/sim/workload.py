"""Workloads: classes of requests with arrival processes, sizes and data mixes (YAML).

    model: hybrid                          # the logical model every request asks for
    backends:                              # deployment -> backend profile (relative to this file)
      local-a: profiles/local-1b-cpu.yaml
    classes:
      - class: interactive                 # a workload class of the gateway configuration
        rate_per_s: 2.0
        arrival: {kind: poisson}           # or bursts / diurnal (below)
        prompt_tokens: {median: 400, p95: 2000, min: 1, max: 8000}
        output_tokens: {median: 150, p95: 600, min: 1, max: 2000}
        sensitive_share: 0.1               # share whose content scan finds personal data
        declared: {public: 0.95, confidential: 0.05}
        regions: {us: 0.7, eu: 0.3}
        tenants: {default: 1.0}

Arrivals: ``poisson`` at ``rate_per_s``; ``bursts``: the rate times ``factor`` for ``length_s``
every ``every_s``; ``diurnal``: the rate times ``1 + amplitude * sin(2 pi t / period_s)``. The
time-varying ones are drawn by thinning (Lewis & Shedler), so every process is exact.

``trace: decisions.jsonl`` replays a decision log the gateway wrote (see
:mod:`hybridgate.sim.trace`), alone or on top of the classes.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from itertools import accumulate
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybridgate.config.governance import Sensitivity
from hybridgate.sandbox.profile import LogNormal
from hybridgate.sim.files import load_model


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arrival(_Spec):
    kind: Literal["poisson", "bursts", "diurnal"] = "poisson"
    every_s: float = Field(60.0, gt=0, description="bursts: seconds between burst starts.")
    length_s: float = Field(10.0, gt=0, description="bursts: seconds a burst lasts.")
    factor: float = Field(5.0, ge=1, description="bursts: rate multiplier during a burst.")
    period_s: float = Field(86_400.0, gt=0, description="diurnal: seconds of one cycle.")
    amplitude: float = Field(0.5, ge=0, le=1, description="diurnal: relative swing of the rate.")

    def rate_at(self, base: float, t: float) -> float:
        if self.kind == "bursts":
            return base * self.factor if t % self.every_s < self.length_s else base
        if self.kind == "diurnal":
            return base * (1.0 + self.amplitude * math.sin(2 * math.pi * t / self.period_s))
        return base

    def peak(self, base: float) -> float:
        if self.kind == "bursts":
            return base * self.factor
        if self.kind == "diurnal":
            return base * (1.0 + self.amplitude)
        return base


def _mix_ok(mix: dict[str, float], what: str) -> None:
    if not mix or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"{what} must give non-negative weights with a positive sum")


def _all_public() -> dict[Sensitivity, float]:
    return {"public": 1.0}


class ClassLoad(_Spec):
    """One class of traffic."""

    workload_class: str = Field(..., alias="class", min_length=1)
    rate_per_s: float = Field(..., gt=0)
    arrival: Arrival = Field(default_factory=Arrival)
    prompt_tokens: LogNormal = Field(default_factory=lambda: LogNormal(median=400, p95=2000, min=1, max=8000))
    output_tokens: LogNormal = Field(default_factory=lambda: LogNormal(median=150, p95=600, min=1, max=2000))
    stream: bool = False
    sensitive_share: float = Field(0.0, ge=0, le=1)
    sensitive_kinds: list[str] = Field(default_factory=lambda: ["email"], min_length=1)
    declared: dict[Sensitivity, float] = Field(default_factory=_all_public)
    regions: dict[str, float] = Field(default_factory=lambda: {"default": 1.0})
    tenants: dict[str, float] = Field(default_factory=lambda: {"default": 1.0})

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _mixes(self) -> Self:
        _mix_ok({str(k): v for k, v in self.declared.items()}, "declared")
        _mix_ok(self.regions, "regions")
        _mix_ok(self.tenants, "tenants")
        return self


class Workload(_Spec):
    model: str = Field(..., min_length=1, description="Logical model every request asks for.")
    backends: dict[str, str] = Field(..., min_length=1, description="Deployment -> backend profile file.")
    classes: list[ClassLoad] = Field(default_factory=list)
    trace: str | None = Field(
        None, description="A decision log (JSON lines) to replay, relative to this file."
    )
    trace_speed: float = Field(1.0, gt=0, description="Replay this many times faster than recorded.")
    duration_s: float | None = Field(None, gt=0, description="Simulated seconds (or --requests).")
    queue_sample_s: float = Field(1.0, gt=0, description="Seconds between queue-depth samples.")

    @model_validator(mode="after")
    def _some_traffic(self) -> Self:
        if not self.classes and self.trace is None:
            raise ValueError("give classes, a trace, or both")
        return self


def load_workload(path: Path) -> Workload:
    return load_model(path, Workload, "workload")


class Mix:
    """Weighted choice in O(log n) from one uniform draw."""

    __slots__ = ("_cum", "_total", "values")

    def __init__(self, weights: dict[str, float]) -> None:
        self.values = list(weights)
        self._cum = list(accumulate(weights.values()))
        self._total = self._cum[-1]

    def pick(self, rng: random.Random) -> str:
        return self.values[min(len(self.values) - 1, bisect(self._cum, rng.random() * self._total))]


class Arrivals:
    """Arrival times of one class, drawn on demand from its own random stream."""

    def __init__(self, load: ClassLoad, rng: random.Random) -> None:
        self._load = load
        self._rng = rng
        self._peak = load.arrival.peak(load.rate_per_s)
        self._poisson = load.arrival.kind == "poisson"
        self.t = 0.0

    def next(self) -> float:
        rng, arrival, base = self._rng, self._load.arrival, self._load.rate_per_s
        while True:
            self.t += rng.expovariate(self._peak)
            if self._poisson or rng.random() * self._peak <= arrival.rate_at(base, self.t):
                return self.t

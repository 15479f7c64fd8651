"""Fault schedules: what goes wrong, where, and when (YAML).

    faults:
      - kind: outage           # attempts fail at once (server error, as a 503 would)
        deployments: [cloud-us]
        start_s: 120
        end_s: 300
      - kind: partition        # the uplink is lost: every cloud attempt fails to connect
        start_s: 400
        end_s: 460
      - kind: latency_spike    # time to first token multiplied by `factor`
        deployments: [cloud-eu]
        factor: 8
        start_s: 500
        end_s: 600
      - kind: rate_limit       # share `probability` of attempts answered 429 with Retry-After
        deployments: [cloud-us]
        probability: 0.5
        retry_after_s: 2
        start_s: 700
        end_s: 800
      - kind: node_down        # a local runtime dies: running attempts crash, new ones are refused
        deployments: [local-a]
        start_s: 900
        end_s: 960

An empty ``deployments`` means every deployment (``partition``: every cloud deployment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybridgate.errors import ErrorKind
from hybridgate.sim.files import load_model

FaultKind = Literal["outage", "partition", "latency_spike", "rate_limit", "node_down"]


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    deployments: list[str] = Field(default_factory=list)
    start_s: float = Field(..., ge=0)
    end_s: float = Field(..., gt=0)
    factor: float = Field(5.0, ge=1, description="latency_spike: TTFT multiplier.")
    probability: float = Field(1.0, ge=0, le=1, description="rate_limit: share of attempts refused.")
    retry_after_s: float | None = Field(1.0, ge=0, description="rate_limit: the Retry-After sent.")

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.end_s <= self.start_s:
            raise ValueError("end_s must be after start_s")
        return self


class FaultSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    faults: list[Fault] = Field(default_factory=list)


def load_faults(path: Path) -> FaultSchedule:
    return load_model(path, FaultSchedule, "fault schedule")


class Effect(NamedTuple):
    """What the faults active at one moment do to an attempt on one deployment."""

    fail: ErrorKind | None = None  # fail at once with this kind
    fail_after_s: float = 0.0
    retry_after_s: float | None = None
    rate_limit_probability: float = 0.0
    slow_factor: float = 1.0


NO_EFFECT = Effect()


class FaultIndex:
    """The schedule, per deployment, for a quick look-up on every attempt."""

    def __init__(self, schedule: FaultSchedule, deployments: dict[str, bool]) -> None:
        """``deployments``: name -> is it a cloud deployment."""
        self.by_deployment: dict[str, list[Fault]] = {name: [] for name in deployments}
        for fault in schedule.faults:
            if fault.kind == "partition" and not fault.deployments:
                targets = [n for n, cloud in deployments.items() if cloud]
            else:
                targets = fault.deployments or list(deployments)
            for name in targets:
                if name in self.by_deployment:
                    self.by_deployment[name].append(fault)
        self.unknown = sorted({n for f in schedule.faults for n in f.deployments} - set(deployments))
        self.node_downs = [f for f in schedule.faults if f.kind == "node_down"]

    def effect(self, name: str, now: float) -> Effect:
        faults = self.by_deployment.get(name)
        if not faults:
            return NO_EFFECT
        slow, limited, retry_after = 1.0, 0.0, None
        for f in faults:
            if not f.start_s <= now < f.end_s:
                continue
            if f.kind == "outage":
                return Effect(ErrorKind.SERVER_ERROR, 0.05)
            if f.kind == "partition":
                return Effect(ErrorKind.CONNECTION, 0.2)  # a connect that fails after its retries
            if f.kind == "node_down":
                return Effect(ErrorKind.UNAVAILABLE, 0.0)
            if f.kind == "latency_spike":
                slow *= f.factor
            else:
                limited, retry_after = max(limited, f.probability), f.retry_after_s
        return Effect(None, 0.0, retry_after, limited, slow)

"""The immutable health snapshot the planner reads.

Health flows one way: executors, probes and load pollers record observations, and the planner
sees only a snapshot taken for its request. Snapshots are cheap (a dict of small immutable
tuples) and never change after they are taken, so a plan is a pure function of its inputs.

A deployment's ``state`` is what routing needs to know in one word: its lifecycle (starting,
ready, failed, unconfigured), except that a ready deployment whose circuit breaker is open is
``circuit_open`` (its ``detail`` says until when and why). A half-open breaker leaves the
deployment ``ready``: the executor's ``admit`` lets its one trial request through.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from hybridgate.health.breaker import BreakerState
from hybridgate.health.predictor import PerfEstimate


class DeploymentState(StrEnum):
    READY = "ready"
    STARTING = "starting"
    FAILED = "failed"
    UNCONFIGURED = "unconfigured"
    CIRCUIT_OPEN = "circuit_open"  # ready, but its breaker is open: not routable until it half-opens


class ProbeRecord(NamedTuple):
    """The last active probe of a deployment."""

    at: float  # wall-clock seconds
    ok: bool
    latency_s: float
    detail: str = ""


class DeploymentHealth(NamedTuple):
    """What the planner may know of one deployment, at one moment."""

    state: DeploymentState
    detail: str = ""
    perf: PerfEstimate | None = None  # None: nothing known (the predictor's priors apply)
    breaker: BreakerState = BreakerState.CLOSED
    queue_depth: int = 0  # requests waiting for a slot (the gateway's own, or the runtime's)
    loaded: bool | None = None  # model resident in memory (warm); None = not known
    error_rate: float = 0.0  # failed share of the attempts in the statistics window
    last_probe: ProbeRecord | None = None

    @property
    def routable(self) -> bool:
        return self.state is DeploymentState.READY and self.breaker is not BreakerState.OPEN


class HealthSnapshot(NamedTuple):
    """Every deployment's health, and whether the cloud path as a whole is lost (offline)."""

    deployments: Mapping[str, DeploymentHealth] = MappingProxyType({})
    offline: bool = False  # the cloud is unreachable: plan local deployments only
    offline_since: float | None = None  # wall-clock seconds
    offline_reason: str = ""

    def of(self, name: str) -> DeploymentHealth:
        return self.deployments.get(name, _UNKNOWN)


_UNKNOWN = DeploymentHealth(DeploymentState.FAILED, "unknown deployment")

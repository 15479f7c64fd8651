"""The immutable health snapshot the planner reads.

Health flows one way: executors and probes record observations, and the planner sees only a
snapshot taken for its request. Snapshots are cheap (a dict of small frozen objects) and never
change after they are taken, so a plan is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from hybridgate.health.predictor import PerfEstimate


class DeploymentState(StrEnum):
    READY = "ready"
    STARTING = "starting"
    FAILED = "failed"
    UNCONFIGURED = "unconfigured"


class DeploymentHealth(NamedTuple):
    state: DeploymentState
    detail: str = ""
    perf: PerfEstimate | None = None  # None: nothing known (the predictor's priors apply)

    @property
    def routable(self) -> bool:
        return self.state is DeploymentState.READY


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    deployments: Mapping[str, DeploymentHealth] = field(default_factory=dict)

    def of(self, name: str) -> DeploymentHealth:
        return self.deployments.get(name, _UNKNOWN)


_UNKNOWN = DeploymentHealth(DeploymentState.FAILED, "unknown deployment")

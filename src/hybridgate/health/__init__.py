"""Live health of deployments, read by the planner as an immutable snapshot (docs/health.md)."""

from hybridgate.health.breaker import BreakerState
from hybridgate.health.snapshot import DeploymentHealth, DeploymentState, HealthSnapshot, ProbeRecord

__all__ = ["BreakerState", "DeploymentHealth", "DeploymentState", "HealthSnapshot", "ProbeRecord"]

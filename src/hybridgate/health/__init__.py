"""Live health of deployments, read by the planner as an immutable snapshot."""

from hybridgate.health.snapshot import DeploymentHealth, DeploymentState, HealthSnapshot

__all__ = ["DeploymentHealth", "DeploymentState", "HealthSnapshot"]

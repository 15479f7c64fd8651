"""The larger routing example (examples/routing.yaml: 20 deployments, six workload classes),
compiled for planner tests without starting anything."""

from __future__ import annotations

from pathlib import Path

from hybridgate.backends.base import capabilities_of
from hybridgate.config import load_config
from hybridgate.config.loader import LoadedConfig
from hybridgate.policy.table import Policy, compile_policy

ROUTING_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "routing.yaml"


def load_routing_config() -> LoadedConfig:
    return load_config(ROUTING_EXAMPLE, env={})


def routing_policy() -> Policy:
    loaded = load_routing_config()
    caps = {name: capabilities_of(dep) for name, dep in loaded.config.deployments.items()}
    return compile_policy(loaded.config, caps)

"""The live dashboard: a static page shipped in the package, and the facts it needs from config.

The page (``index.html``, ``prometheus.js``, ``dashboard.js``, ``dashboard.css`` beside this
module) is vanilla
HTML/JS/CSS with no build step and no external reference: it polls ``GET /metrics`` with the
client key and parses the Prometheus text itself, so what it shows is what ``/metrics`` says,
and a metric family added later is picked up without a server change. What the metrics cannot
say (each class's budgets, each deployment's placement) comes from :func:`dashboard_config`,
built once at start-up: names, placements and budgets only, never a URL or a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from hybridgate.config.schema import GatewayConfig, effective_placement

# Objectives the burn rates are measured against: the share of requests a class may spend
# beyond its p95 and p99 budgets (documented in docs/operations.md#dashboard).
OBJECTIVES = {"p95": 0.05, "p99": 0.01}


@dataclass(frozen=True, slots=True)
class DashboardAsset:
    body: bytes
    content_type: str


ASSET_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "prometheus.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


def load_assets() -> dict[str, DashboardAsset]:
    """The page's files, read from the package once (served from memory afterwards)."""
    folder = resources.files(__name__)
    return {
        name: DashboardAsset((folder / name).read_bytes(), content_type)
        for name, content_type in ASSET_TYPES.items()
    }


def dashboard_config(config: GatewayConfig) -> dict[str, Any]:
    """What the page needs to know beyond /metrics: classes with their budgets, deployments with
    their placement, models with their deployments. Contains no URL, key or header value."""
    return {
        "default_class": config.default_class,
        "objectives": OBJECTIVES,
        "classes": {
            name: {
                "description": cls.description,
                "priority": cls.priority,
                "placement": cls.placement,
                "p95_ms": cls.latency.p95_ms,
                "p99_ms": cls.latency.p99_ms,
                "ttft_ms": cls.latency.ttft_ms,
            }
            for name, cls in config.classes.items()
        },
        "deployments": {
            name: {"type": dep.type, "placement": effective_placement(dep), "region": dep.region}
            for name, dep in config.deployments.items()
        },
        "models": {name: list(model.deployments) for name, model in config.models.items()},
    }

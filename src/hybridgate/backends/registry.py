"""Backend types, registered by name through one entry-point group.

Built-in adapters register exactly the way a third-party package does, in its pyproject::

    [project.entry-points."hybridgate.backends"]
    mytype = "mypackage.backend:create"

``create(name, config, context)`` receives the deployment's validated config section and returns
an object satisfying :class:`~hybridgate.backends.base.Backend`. A third-party type declares its
config model by accepting ``config`` as a mapping (its own validation is its own business); the
built-ins receive their pydantic model from :mod:`hybridgate.config.schema`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from hybridgate.backends.base import Backend
from hybridgate.clock import Clock, SystemClock
from hybridgate.errors import ConfigError

ENTRY_POINT_GROUP = "hybridgate.backends"


@dataclass(frozen=True)
class BackendContext:
    """What every adapter may use besides its own config."""

    clock: Clock = field(default_factory=SystemClock)


BackendFactory = Callable[[str, Any, BackendContext], Backend]


def backend_types() -> dict[str, str]:
    """Registered type names and where each lives (``module:attr``)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def backend_factory(type_name: str) -> BackendFactory:
    """The factory registered for ``type_name`` (built-ins are registered like any plugin)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == type_name:
            try:
                factory: BackendFactory = ep.load()
            except ImportError as exc:
                raise ConfigError(
                    [("", f"backend type {type_name!r} cannot be loaded ({ep.value}): {exc}")]
                ) from exc
            return factory
    known = ", ".join(sorted(backend_types()))
    raise ConfigError([("", f"unknown backend type {type_name!r} (registered: {known})")])


def create_backend(name: str, config: Any, context: BackendContext) -> Backend:
    return backend_factory(config.type)(name, config, context)

"""The Gateway: the assembled data plane, independent of HTTP.

It owns the backends (started and closed with it), the compiled routing table, the executor and
the live state the planner reads. The ASGI app (:mod:`hybridgate.api`) is a thin shell over it,
which keeps everything here usable from the CLI (``explain``), the simulator and tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from hybridgate.backends.base import Backend, Capabilities, Describable, capabilities_of
from hybridgate.backends.registry import BackendContext, create_backend
from hybridgate.clock import Clock, SystemClock
from hybridgate.config.loader import LoadedConfig
from hybridgate.errors import HybridgateError
from hybridgate.execution.executor import Answer, Executor, OpenStream
from hybridgate.health.snapshot import DeploymentHealth, DeploymentState, HealthSnapshot
from hybridgate.policy.planner import (
    DeploymentSpec,
    RoutePlan,
    RoutingTable,
    build_table,
    plan_chat,
    plan_embeddings,
)
from hybridgate.types import Completion, EmbeddingRequest, EmbeddingResult, InferenceRequest, Timeouts

log = logging.getLogger("hybridgate")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A logical model as listed by GET /v1/models."""

    name: str
    description: str
    context_window: int
    capabilities: Capabilities
    placements: tuple[str, ...]
    regions: tuple[str, ...]
    deployments: tuple[tuple[str, str], ...]  # (name, state)


@dataclass
class _Live:
    states: dict[str, DeploymentHealth] = field(default_factory=dict)
    snapshot: HealthSnapshot = field(default_factory=HealthSnapshot)


class Gateway:
    """Backends + routing + execution for one configuration."""

    def __init__(self, loaded: LoadedConfig, *, clock: Clock | None = None) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.clock: Clock = clock or SystemClock()
        context = BackendContext(clock=self.clock)
        self.backends: dict[str, Backend] = {
            name: create_backend(name, dep, context)
            for name, dep in self.config.deployments.items()
            if loaded.is_configured(name)
        }
        specs = {name: self._spec(name) for name in self.config.deployments}
        self.table: RoutingTable = build_table(
            {
                n: (tuple(m.deployments), m.description, tuple(m.aliases))
                for n, m in self.config.models.items()
            },
            specs,
        )
        self.executor = Executor(self.backends, self.clock)
        self._live = _Live()
        for name in self.config.deployments:
            reason = loaded.unconfigured.get(name)
            state = DeploymentState.UNCONFIGURED if reason else DeploymentState.STARTING
            self._set_state(name, DeploymentHealth(state, reason or ""))
        self.started_at = self.clock.wall()

    def _spec(self, name: str) -> DeploymentSpec:
        dep = self.config.deployments[name]
        backend = self.backends.get(name)
        # An unconfigured deployment is described from its config, so /v1/models still lists it.
        caps = backend.capabilities if backend is not None else capabilities_of(dep)
        return DeploymentSpec(name, caps, Timeouts(**dep.timeouts.model_dump()))

    def _set_state(self, name: str, health: DeploymentHealth) -> None:
        self._live.states[name] = health
        self._live.snapshot = HealthSnapshot(dict(self._live.states))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start every configured backend concurrently; a failure degrades, it does not abort."""
        names = list(self.backends)
        results = await asyncio.gather(*(self.backends[n].start() for n in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, HybridgateError | OSError):
                    raise result
                log.error("deployment %s failed to start: %s", name, result)
                self._set_state(name, DeploymentHealth(DeploymentState.FAILED, str(result)))
            else:
                self._set_state(name, DeploymentHealth(DeploymentState.READY))
        for name, reason in self.loaded.unconfigured.items():
            log.warning("deployment %s is unconfigured (%s); it will not be routed to", name, reason)

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends.values()), return_exceptions=True)

    # ------------------------------------------------------------------ data plane

    def snapshot(self) -> HealthSnapshot:
        return self._live.snapshot

    def plan(self, request: InferenceRequest) -> RoutePlan:
        return plan_chat(request, self.table, self._live.snapshot)

    async def complete(self, request: InferenceRequest) -> tuple[RoutePlan, Answer[Completion]]:
        plan = self.plan(request)
        return plan, await self.executor.complete(plan, request)

    async def open_stream(self, request: InferenceRequest) -> tuple[RoutePlan, OpenStream]:
        plan = self.plan(request)
        return plan, await self.executor.open_stream(plan, request)

    async def embed(self, request: EmbeddingRequest) -> tuple[RoutePlan, Answer[EmbeddingResult]]:
        plan = plan_embeddings(request.model, self.table, self._live.snapshot)
        return plan, await self.executor.embed(plan, request)

    # ------------------------------------------------------------------ introspection

    def models(self) -> list[ModelInfo]:
        out: list[ModelInfo] = []
        states = self._live.states
        for name, model in self.config.models.items():
            specs = [self.table.deployments[d] for d in model.deployments]
            caps = [s.capabilities for s in specs]
            merged = Capabilities(
                placement=caps[0].placement,
                region=caps[0].region,
                context_window=max(c.context_window for c in caps),
                chat=any(c.chat for c in caps),
                streaming=any(c.streaming for c in caps),
                tools=any(c.tools for c in caps),
                vision=any(c.vision for c in caps),
                embeddings=any(c.embeddings for c in caps),
            )
            out.append(
                ModelInfo(
                    name=name,
                    description=model.description,
                    context_window=merged.context_window,
                    capabilities=merged,
                    placements=tuple(sorted({c.placement for c in caps})),
                    regions=tuple(sorted({c.region for c in caps})),
                    deployments=tuple((d, states[d].state.value) for d in model.deployments),
                )
            )
        return out

    def readiness(self) -> tuple[bool, Mapping[str, object]]:
        """(ready, detail): ready when every model has at least one ready deployment."""
        states = self._live.states
        models: dict[str, object] = {}
        ready = True
        for name, model in self.config.models.items():
            usable = [d for d in model.deployments if states[d].routable]
            if all(states[d].state is DeploymentState.UNCONFIGURED for d in model.deployments):
                # Reported, not an error: e.g. a cloud model whose API key is not set.
                models[name] = {"ready": False, "unconfigured": True, "deployments": []}
                continue
            models[name] = {"ready": bool(usable), "deployments": usable}
            ready = ready and bool(usable)
        deployments: dict[str, dict[str, object]] = {
            n: {"state": h.state.value, "detail": h.detail} for n, h in states.items()
        }
        for name, backend in self.backends.items():
            if isinstance(backend, Describable):
                deployments[name]["runtime"] = dict(backend.describe())
        degraded = any(h.state is DeploymentState.FAILED for h in states.values())
        status = "ready" if ready and not degraded else ("degraded" if ready else "not_ready")
        return ready, {"status": status, "models": models, "deployments": deployments}

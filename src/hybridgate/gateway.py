"""The Gateway: the assembled data plane, independent of HTTP.

It owns the backends (started and closed with it), the compiled policy, the live health, the
data guard (content scan and redaction), the executor, the cost models and the decision log.
For one request it runs, in order: scan -> plan (pure) -> redact if the plan says so ->
execute -> account. The ASGI app (:mod:`hybridgate.api`) is a thin shell over it; ``hybridgate
explain`` uses :meth:`Gateway.explain` without starting anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hybridgate.backends.base import Backend, Capabilities, Describable, capabilities_of
from hybridgate.backends.registry import BackendContext, create_backend
from hybridgate.clock import Clock, SystemClock
from hybridgate.config.loader import LoadedConfig
from hybridgate.cost.ledger import Ledger
from hybridgate.errors import HybridgateError
from hybridgate.execution.executor import Answer, Attempt, Executor, OpenStream, Payload, Restoring
from hybridgate.health.live import LiveHealth
from hybridgate.health.snapshot import DeploymentState, HealthSnapshot
from hybridgate.policy.context import ClientIdentity, RequestContext, build_context
from hybridgate.policy.explain import Explanation
from hybridgate.policy.governance import DataProfile
from hybridgate.policy.planner import RoutePlan, estimate_prompt_tokens, plan_chat, plan_embeddings
from hybridgate.policy.table import Policy, compile_policy
from hybridgate.privacy.redaction import RedactionError
from hybridgate.telemetry.decision_log import DecisionLog
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    StreamEnd,
    StreamEvent,
    Usage,
)

log = logging.getLogger("hybridgate")


class Screening(Protocol):
    """One request's content scan: what the planner may know, and how to redact the request."""

    @property
    def profile(self) -> DataProfile: ...

    def redact(self) -> tuple[InferenceRequest, Restoring]: ...


class DataGuard(Protocol):
    """Content scanning and reversible redaction (see :mod:`hybridgate.privacy`)."""

    def screen(self, request: InferenceRequest) -> Screening: ...

    def profile_texts(self, texts: Sequence[str]) -> DataProfile: ...


# Requests with more text than this are scanned on a worker thread (the event loop stays free).
SCAN_OFF_LOOP_CHARS = 256 * 1024


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


@dataclass(slots=True)
class Served:
    """How one request was served: the plan, the attempts, and the gateway's own overhead."""

    plan: RoutePlan
    deployment: str
    attempts: list[Attempt]
    overhead_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        return {
            **self.plan.explanation.headers(),
            "x-hybridgate-deployment": self.deployment,
            "x-hybridgate-attempts": str(len(self.attempts)),
            "x-hybridgate-overhead-ms": f"{self.overhead_ms:.3f}",
        }


class Gateway:
    """Backends + policy + execution + accounting for one configuration."""

    def __init__(self, loaded: LoadedConfig, *, guard: DataGuard, clock: Clock | None = None) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.clock: Clock = clock or SystemClock()
        self.guard = guard
        context = BackendContext(clock=self.clock)
        self.backends: dict[str, Backend] = {
            name: create_backend(name, dep, context)
            for name, dep in self.config.deployments.items()
            if loaded.is_configured(name)
        }
        capabilities = {
            name: self.backends[name].capabilities if name in self.backends else capabilities_of(dep)
            for name, dep in self.config.deployments.items()
        }
        self.policy: Policy = compile_policy(self.config, capabilities)
        self.health = LiveHealth({name: spec.prior for name, spec in self.policy.deployments.items()})
        for name, reason in loaded.unconfigured.items():
            self.health.set_state(name, DeploymentState.UNCONFIGURED, reason)
        self.executor = Executor(self.backends, self.clock, observer=self.health)
        self.ledger = Ledger()
        self.decision_log = self._decision_log()
        self.started_at = self.clock.wall()

    def _decision_log(self) -> DecisionLog | None:
        path = self.config.decision_log.path
        if path is None:
            return None
        base = self.loaded.source.parent if self.loaded.source is not None else Path.cwd()
        return DecisionLog((base / path).resolve())

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
                self.health.set_state(name, DeploymentState.FAILED, str(result))
            else:
                self.health.set_state(name, DeploymentState.READY)
        for name, reason in self.loaded.unconfigured.items():
            log.warning("deployment %s is unconfigured (%s); it will not be routed to", name, reason)
        if self.decision_log is not None:
            self.decision_log.start()

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends.values()), return_exceptions=True)
        if self.decision_log is not None:
            self.decision_log.close()

    def mark_all_ready(self) -> None:
        """Treat every configured deployment as ready without starting it (offline explain)."""
        for name in self.config.deployments:
            if name not in self.loaded.unconfigured:
                self.health.set_state(name, DeploymentState.READY)

    # ------------------------------------------------------------------ planning

    def context(
        self, identity: ClientIdentity, headers: Mapping[str, str], metadata: Mapping[str, Any]
    ) -> RequestContext:
        return build_context(
            identity,
            headers,
            metadata,
            classes=self.policy.classes,
            default_class=self.policy.default_class,
            default_region=self.config.governance.default_region,
            tenants=self.config.governance.tenants,
        )

    def snapshot(self) -> HealthSnapshot:
        return self.health.snapshot()

    async def screen(self, request: InferenceRequest) -> Screening:
        """The content scan, on a worker thread when the request is large."""
        if estimate_prompt_tokens(request) * 4 > SCAN_OFF_LOOP_CHARS:
            return await asyncio.to_thread(self.guard.screen, request)
        return self.guard.screen(request)

    def plan(self, request: InferenceRequest, ctx: RequestContext, screening: Screening) -> RoutePlan:
        return plan_chat(request, ctx, screening.profile, self.health.snapshot(), self.policy)

    def explain(self, request: InferenceRequest, ctx: RequestContext) -> Explanation:
        """The plan's explanation (the scan runs on this thread: for offline use and tests)."""
        return self.plan(request, ctx, self.guard.screen(request)).explanation

    async def _planned(self, request: InferenceRequest, ctx: RequestContext) -> tuple[RoutePlan, Payload]:
        screening = await self.screen(request)
        plan = self.plan(request, ctx, screening)
        if not plan.needs_redaction:
            return plan, Payload(request)
        try:
            redacted, restorer = screening.redact()
        except RedactionError as exc:
            # No redacted version can be vouched for: plan again as if the scan had failed, which
            # keeps the data local (or refuses), never sends it as it is.
            failed = DataProfile(scan_failed=True, reason=f"cannot redact: {exc}")
            replan = plan_chat(request, ctx, failed, self.health.snapshot(), self.policy)
            return replan, Payload(request)
        return plan, Payload(request, redacted, restorer)

    def _overhead_ms(self, arrived: float, attempts: list[Attempt]) -> float:
        spent_upstream = sum(a.duration for a in attempts)
        return max(0.0, (self.clock.monotonic() - arrived - spent_upstream) * 1000.0)

    # ------------------------------------------------------------------ serving

    async def complete(
        self, request: InferenceRequest, ctx: RequestContext, arrived: float
    ) -> tuple[Served, Completion]:
        plan, payload = await self._planned(request, ctx)
        answer = await self.executor.complete(plan, payload)
        served = Served(plan, answer.deployment, answer.attempts, self._overhead_ms(arrived, answer.attempts))
        self._account(served, ctx, answer.result.usage, arrived, stream=False)
        return served, answer.result

    async def open_stream(
        self, request: InferenceRequest, ctx: RequestContext, arrived: float
    ) -> tuple[Served, AsyncIterator[StreamEvent]]:
        """The plan's stream once its first event arrived; closing the iterator closes the upstream,
        and its end (or failure) is accounted."""
        plan, payload = await self._planned(request, ctx)
        stream = await self.executor.open_stream(plan, payload)
        served = Served(plan, stream.deployment, stream.attempts, self._overhead_ms(arrived, stream.attempts))
        return served, self._accounted(stream, served, ctx, arrived)

    async def _accounted(
        self, stream: OpenStream, served: Served, ctx: RequestContext, arrived: float
    ) -> AsyncIterator[StreamEvent]:
        usage: Usage | None = None
        error: str | None = None
        try:
            async for event in stream:
                if isinstance(event, StreamEnd):
                    usage = event.usage
                yield event
        except HybridgateError as exc:
            error = exc.code
            raise
        finally:
            await stream.aclose()
            outcome = error or ("" if usage is not None else "client_closed")
            self._account(served, ctx, usage or Usage(), arrived, stream=True, error=outcome)

    async def embed(
        self, request: EmbeddingRequest, ctx: RequestContext, arrived: float
    ) -> tuple[Served, EmbeddingResult]:
        plan = plan_embeddings(
            request, ctx, self.guard.profile_texts(request.inputs), self.health.snapshot(), self.policy
        )
        answer: Answer[EmbeddingResult] = await self.executor.embed(plan, request)
        served = Served(plan, answer.deployment, answer.attempts, self._overhead_ms(arrived, answer.attempts))
        self._account(served, ctx, answer.result.usage, arrived, stream=False)
        return served, answer.result

    # ------------------------------------------------------------------ accounting

    def _account(
        self,
        served: Served,
        ctx: RequestContext,
        usage: Usage,
        arrived: float,
        *,
        stream: bool,
        error: str = "",
    ) -> None:
        spec = self.policy.deployments[served.deployment]
        elapsed = self.clock.monotonic() - arrived
        n_bytes = 4 * (usage.prompt_tokens + usage.completion_tokens)
        cost = spec.cost.actual(
            usage.prompt_tokens,
            usage.cached_prompt_tokens,
            usage.completion_tokens,
            n_bytes,
            ctx.region,
            elapsed,
        )
        served.extra["cost_usd"] = cost.total
        if not error:
            self.ledger.record(
                tenant=ctx.tenant,
                workload_class=ctx.workload_class,
                placement=spec.capabilities.placement,
                deployment=served.deployment,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=cost.total,
            )
        if self.decision_log is None:
            return
        explanation = served.plan.explanation
        self.decision_log.write(
            {
                "ts": round(self.clock.wall(), 3),
                "tenant": ctx.tenant,
                "key": ctx.key_id,
                "class": ctx.workload_class,
                "model": served.plan.model,
                "region": ctx.region,
                "sensitivity": ctx.sensitivity,
                "stream": stream,
                "deployment": served.deployment,
                "placement": spec.capabilities.placement,
                "outcome": error or "ok",
                "attempts": [
                    {
                        "deployment": a.deployment,
                        "ms": round(a.duration * 1000, 2),
                        "error": a.error.kind.value if a.error else None,
                    }
                    for a in served.attempts
                ],
                "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
                "cost_usd": {
                    "total": cost.total,
                    "tokens": cost.tokens,
                    "egress": cost.egress,
                    "compute": cost.compute,
                },
                "latency_ms": round(elapsed * 1000, 2),
                "overhead_ms": round(served.overhead_ms, 3),
                "plan": explanation.to_dict(),
            }
        )

    # ------------------------------------------------------------------ introspection

    def models(self) -> list[ModelInfo]:
        out: list[ModelInfo] = []
        for name, model in self.config.models.items():
            caps = [self.policy.deployments[d].capabilities for d in model.deployments]
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
                    deployments=tuple((d, self.health.state(d)[0].value) for d in model.deployments),
                )
            )
        return out

    def readiness(self) -> tuple[bool, Mapping[str, object]]:
        """(ready, detail): ready when every configured model has at least one ready deployment."""
        states = {name: self.health.state(name) for name in self.config.deployments}
        models: dict[str, object] = {}
        ready = True
        for name, model in self.config.models.items():
            usable = [d for d in model.deployments if states[d][0] is DeploymentState.READY]
            if all(states[d][0] is DeploymentState.UNCONFIGURED for d in model.deployments):
                # Reported, not an error: e.g. a cloud model whose API key is not set.
                models[name] = {"ready": False, "unconfigured": True, "deployments": []}
                continue
            models[name] = {"ready": bool(usable), "deployments": usable}
            ready = ready and bool(usable)
        deployments: dict[str, dict[str, object]] = {
            n: {"state": s.value, "detail": d} for n, (s, d) in states.items()
        }
        for name, backend in self.backends.items():
            if isinstance(backend, Describable):
                deployments[name]["runtime"] = dict(backend.describe())
        degraded = any(s is DeploymentState.FAILED for s, _ in states.values())
        status = "ready" if ready and not degraded else ("degraded" if ready else "not_ready")
        return ready, {"status": status, "models": models, "deployments": deployments}

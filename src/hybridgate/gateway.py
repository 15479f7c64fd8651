"""The Gateway: the assembled data plane, independent of HTTP.

It owns the backends (started and closed with it), the compiled policy, the live health, the
data guard (content scan and redaction), the executor, the cost models and the decision log.
For one request it runs, in order: scan -> plan (pure) -> redact if the plan says so ->
execute -> account. The ASGI app (:mod:`hybridgate.api`) is a thin shell over it; ``hybridgate
explain`` uses :meth:`Gateway.explain` without starting anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hybridgate.backends.base import Backend, Capabilities, Describable, capabilities_of
from hybridgate.backends.registry import BackendContext, create_backend
from hybridgate.clock import Clock, SystemClock
from hybridgate.config.loader import LoadedConfig
from hybridgate.config.schema import ClientKey, GatewayConfig
from hybridgate.cost.ledger import Ledger
from hybridgate.errors import HybridgateError, InvalidRequest, NoRouteAvailable, SensitiveDataRefused
from hybridgate.execution.executor import Answer, Attempt, Executor, Payload, Restoring
from hybridgate.execution.memo import (
    CompletionBuilder,
    IdempotencyOwnerGone,
    IdempotencyStore,
    Remembered,
    ResponseCache,
    fingerprint,
    replay,
)
from hybridgate.execution.streams import OpenStream, StreamExecutor
from hybridgate.health.live import LiveHealth
from hybridgate.health.load import LoadPoller
from hybridgate.health.probes import Prober, probe_settings
from hybridgate.health.snapshot import DeploymentState, HealthSnapshot
from hybridgate.policy.context import ClientIdentity, RequestContext, build_context
from hybridgate.policy.explain import Explanation, header_safe
from hybridgate.policy.governance import DataProfile
from hybridgate.policy.planner import RoutePlan, estimate_prompt_tokens, plan_chat, plan_embeddings
from hybridgate.policy.table import Policy, compile_policy
from hybridgate.privacy.redaction import RedactionError
from hybridgate.telemetry.decision_log import DecisionLog
from hybridgate.telemetry.inflight import Inflight
from hybridgate.telemetry.metrics import CostRow, Metrics, Sources
from hybridgate.telemetry.records import decision_record
from hybridgate.telemetry.tracing import SENSITIVE_LEVELS, Tracing, deployment_traits, make_exporter
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
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


@dataclass(frozen=True, slots=True)
class Unrouted:
    """No route was available for ``model``; an answer from memory may still be given."""

    model: str
    error: NoRouteAvailable


Planned = tuple[RoutePlan, Payload] | Unrouted


@dataclass(slots=True)
class Served:
    """How one request was served: the plan, the attempts, and the gateway's own overhead.

    ``plan`` is None only for an answer from memory given when no route was available (every
    deployment down, or offline): ``unrouted`` then says why there was no plan.
    """

    plan: RoutePlan | None
    deployment: str
    attempts: list[Attempt]
    overhead_ms: float
    memory: str | None = None  # "hit", "stale" (cache) or "replay" (Idempotency-Key)
    extra: dict[str, Any] = field(default_factory=dict)
    response_id: str = ""  # the id the client is shown for a stream (a replay shows the first's)
    workload_class: str = ""
    unrouted: str = ""
    ttft_s: float | None = None  # streams: arrival to the first event

    def headers(self) -> dict[str, str]:
        if self.plan is not None:
            route = self.plan.explanation.headers()
        else:
            reason = f"no route available, answered from memory ({self.unrouted})"
            route = {"x-hybridgate-class": self.workload_class, "x-hybridgate-reason": header_safe(reason)}
        headers = {
            **route,
            "x-hybridgate-deployment": self.deployment,
            "x-hybridgate-attempts": str(len(self.attempts)),
            "x-hybridgate-overhead-ms": f"{self.overhead_ms:.3f}",
        }
        if self.memory is not None:
            headers["x-hybridgate-cache"] = self.memory
        if any(a.hedge for a in self.attempts):
            headers["x-hybridgate-hedged"] = "1"
        return headers


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
        self.health = LiveHealth.from_config(
            self.config,
            {name: spec.prior for name, spec in self.policy.deployments.items()},
            clock=self.clock,
            placements={name: caps.placement for name, caps in capabilities.items()},
        )
        self.prober = Prober(self.backends, self.health, probe_settings(self.config), self.clock)
        self.load_poller = LoadPoller.from_config(self.config, self.health, self.clock)
        self._health_tasks: list[asyncio.Task[None]] = []
        for name, reason in loaded.unconfigured.items():
            self.health.set_state(name, DeploymentState.UNCONFIGURED, reason)
        self.executor = Executor(
            self.backends, self.clock, observer=self.health, retry=self.config.resilience.retry
        )
        self.streams = StreamExecutor(self.executor)
        memo = self.config.resilience
        self.cache = ResponseCache(
            memo.cache.max_entries, memo.cache.ttl_s, memo.cache.stale_ttl_s, self.clock
        )
        self.idempotency = IdempotencyStore(memo.idempotency.max_entries, memo.idempotency.ttl_s, self.clock)
        self.ledger = Ledger()
        self.metrics = Metrics(
            Sources(
                executor=self._executor_counters,
                costs=self._cost_rows,
                deployments=self._deployment_gauges,
                cache=lambda: {
                    "cache_hit": self.cache.hits,
                    "cache_miss": self.cache.misses,
                    "cache_stale": self.cache.stale_served,
                    "idempotent_replay": self.idempotency.replayed,
                },
                offline=lambda: self.health.snapshot().offline,
                attempts=self._attempt_counts,
                breakers=lambda: [(n, b.state.value) for n, b in self.health.breakers.items()],
            ),
            classes=self.config.classes,
            tenants=_known_tenants(self.config),
        )
        self.decision_log = self._decision_log()
        self.tracing = self._tracing()
        # Request ids: random per gateway run, then a counter (cheap; unique within the run).
        self._id_prefix = os.urandom(6).hex()
        self._request_ids = itertools.count(1)
        self.started_at = self.clock.wall()

    def _base(self) -> Path:
        """Where relative paths of the configuration start."""
        return self.loaded.source.parent if self.loaded.source is not None else Path.cwd()

    def _decision_log(self) -> DecisionLog | None:
        cfg = self.config.decision_log
        if cfg.path is None:
            return None
        key = cfg.prompt_hash_key.get_secret_value().encode() if cfg.prompt_hash_key else os.urandom(32)
        return DecisionLog(
            (self._base() / cfg.path).resolve(),
            max_bytes=cfg.max_bytes,
            keep=cfg.keep,
            max_age_s=cfg.max_age_s,
            hash_key=key,
            clock=self.clock,
        )

    def _tracing(self) -> Tracing | None:
        cfg = self.config.tracing
        if not cfg.enabled:
            return None
        traits = {name: deployment_traits(dep) for name, dep in self.config.deployments.items()}
        return Tracing(cfg, clock=self.clock, deployments=traits, exporter=make_exporter(cfg, self._base()))

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

    def start_health(self) -> None:
        """Start the background probes and load polling (the server does; offline tools do not)."""
        if not self._health_tasks:
            self._health_tasks = [
                asyncio.create_task(self.prober.run(), name="hybridgate-prober"),
                asyncio.create_task(self.load_poller.run(), name="hybridgate-load-poller"),
            ]

    async def close(self) -> None:
        for task in self._health_tasks:
            task.cancel()
        await asyncio.gather(*self._health_tasks, return_exceptions=True)
        self._health_tasks = []
        await asyncio.gather(*(b.close() for b in self.backends.values()), return_exceptions=True)
        if self.decision_log is not None:
            await asyncio.to_thread(self.decision_log.close)
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # exports what is pending

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

    async def _planned(self, inflight: Inflight) -> tuple[RoutePlan, Payload]:
        request, ctx = inflight.request, inflight.ctx
        assert isinstance(request, InferenceRequest)
        screening = await self.screen(request)
        plan = self._traced_plan(inflight, self.plan(request, ctx, screening))
        if plan.priority != request.priority:  # local runtimes order their queues by it
            request = dataclasses.replace(request, priority=plan.priority)
        if not plan.needs_redaction:
            return plan, Payload(request, tracer=inflight)
        try:
            redacted, restorer = screening.redact()
        except RedactionError as exc:
            # No redacted version can be vouched for: plan again as if the scan had failed, which
            # keeps the data local (or refuses), never sends it as it is.
            failed = DataProfile(scan_failed=True, reason=f"cannot redact: {exc}")
            replan = plan_chat(request, ctx, failed, self.health.snapshot(), self.policy)
            return self._traced_plan(inflight, replan), Payload(request, tracer=inflight)
        return plan, Payload(request, redacted, restorer, tracer=inflight)

    def _traced_plan(self, inflight: Inflight, plan: RoutePlan) -> RoutePlan:
        inflight.plan = plan
        trace = inflight.trace
        if trace is not None:
            data = plan.explanation.data
            sensitive = data.sensitive or bool(data.kinds) or inflight.ctx.sensitivity in SENSITIVE_LEVELS
            messages = inflight.request.messages if isinstance(inflight.request, InferenceRequest) else ()
            trace.planned(
                plan,
                sensitive=sensitive,
                record_content=self.config.tracing.record_content,
                messages=messages,
            )
        return plan

    def _begin(
        self,
        request: InferenceRequest | EmbeddingRequest,
        ctx: RequestContext,
        arrived: float,
        operation: str,
    ) -> Inflight:
        """The request's record from now to its end (and its trace span, when tracing is on)."""
        inflight = Inflight(
            request, ctx, arrived, f"{self._id_prefix}{next(self._request_ids):08x}", operation
        )
        if self.tracing is not None:
            inflight.trace = self.tracing.begin(
                operation,
                request.model,
                arrived=arrived,
                traceparent=ctx.traceparent,
                tracestate=ctx.tracestate,
                attributes={"hybridgate.request_id": inflight.id, "hybridgate.tenant": ctx.tenant},
            )
        return inflight

    def _overhead_ms(self, arrived: float, attempts: list[Attempt]) -> float:
        spent_upstream = sum(a.duration for a in attempts)
        return max(0.0, (self.clock.monotonic() - arrived - spent_upstream) * 1000.0)

    # ------------------------------------------------------------------ serving

    def _memo_key(
        self, request: InferenceRequest, ctx: RequestContext, idempotency_key: str | None
    ) -> str | None:
        """The request's fingerprint when memory may answer it; checks the Idempotency-Key."""
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= _MAX_IDEMPOTENCY_KEY:
                raise InvalidRequest(
                    f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY} characters", param="idempotency-key"
                )
            return fingerprint(request, ctx.tenant)
        if self.policy.classes[ctx.workload_class].idempotent:
            raise InvalidRequest(
                f"workload class {ctx.workload_class!r} serves actions that must not run twice: "
                "send an Idempotency-Key header (the same one when retrying)",
                param="idempotency-key",
            )
        if self._cacheable(ctx):
            return fingerprint(request, ctx.tenant)
        return None

    def _cacheable(self, ctx: RequestContext) -> bool:
        return self.config.resilience.cache.enabled and self.policy.classes[ctx.workload_class].cache

    async def _planned_or_unrouted(self, inflight: Inflight, key: str | None) -> Planned:
        """The plan; or, when no route is available but an answer may be remembered (cache,
        Idempotency-Key), why not: memory can still answer then."""
        try:
            return await self._planned(inflight)
        except NoRouteAvailable as exc:
            if key is None:
                raise
            return Unrouted(inflight.request.model, exc)

    def _remembered(self, planned: Planned, inflight: Inflight, memory: Remembered, kind: str) -> Served:
        if isinstance(planned, Unrouted):
            plan, model, unrouted = None, planned.model, planned.error.message
        else:
            plan, model, unrouted = planned[0], planned[0].model, ""
        served = Served(
            plan,
            memory.deployment,
            [],
            self._overhead_ms(inflight.arrived, []),
            memory=kind,
            response_id=memory.completion.id,
            workload_class=inflight.ctx.workload_class,
            unrouted=unrouted,
        )
        self._account_memory(served, model, inflight)
        return served

    async def _claimed(self, tenant: str, idempotency_key: str, key: str) -> Remembered | None:
        """None: this request owns the key. Otherwise the first request's result (after waiting
        for it if it is in flight); its failure is raised. If the first request went away
        without an outcome, the key is claimed again."""
        while True:
            first = self.idempotency.claim(tenant, idempotency_key, key)
            if first is None:
                return None
            try:
                return await asyncio.shield(first)
            except IdempotencyOwnerGone:
                continue

    def _owner_failed(self, tenant: str, idempotency_key: str, exc: BaseException) -> None:
        """The request owning ``idempotency_key`` ended without an answer: waiters get its error;
        if it was cancelled (its client went away), the key is free for them to claim."""
        if isinstance(exc, Exception):
            self.idempotency.abandon(tenant, idempotency_key, exc)
        else:
            self.idempotency.release(tenant, idempotency_key)

    async def complete(
        self,
        request: InferenceRequest,
        ctx: RequestContext,
        arrived: float,
        idempotency_key: str | None = None,
    ) -> tuple[Served, Completion]:
        """One whole answer: from the cache or an earlier identical Idempotency-Key, else executed."""
        inflight = self._begin(request, ctx, arrived, "chat")
        try:
            return await self._complete_request(inflight, idempotency_key)
        except BaseException as exc:
            self._account_failure(inflight, exc, stream=False)
            raise

    async def _complete_request(
        self, inflight: Inflight, idempotency_key: str | None
    ) -> tuple[Served, Completion]:
        request, ctx = inflight.request, inflight.ctx
        assert isinstance(request, InferenceRequest)
        key = self._memo_key(request, ctx, idempotency_key)
        planned = await self._planned_or_unrouted(inflight, key)
        if idempotency_key is not None and key is not None:
            first = await self._claimed(ctx.tenant, idempotency_key, key)
            if first is not None:
                return self._remembered(planned, inflight, first, "replay"), first.completion
        cache_key = key if key is not None and self._cacheable(ctx) else None
        try:
            served, completion = await self._complete(planned, inflight, cache_key)
        except BaseException as exc:
            if idempotency_key is not None:
                self._owner_failed(ctx.tenant, idempotency_key, exc)
            raise
        if idempotency_key is not None:
            remembered = Remembered(completion, served.deployment, self.clock.monotonic())
            self.idempotency.complete(ctx.tenant, idempotency_key, remembered)
        return served, completion

    async def _complete(
        self, planned: Planned, inflight: Inflight, cache_key: str | None
    ) -> tuple[Served, Completion]:
        if cache_key is not None and (hit := self.cache.get(cache_key)) is not None:
            return self._remembered(planned, inflight, hit, "hit"), hit.completion
        try:
            plan, payload = _routed(planned)
            answer = await self.executor.complete(plan, payload)
        except NoRouteAvailable:
            if cache_key is not None and (stale := self.cache.get(cache_key, stale=True)) is not None:
                return self._remembered(planned, inflight, stale, "stale"), stale.completion
            raise
        if cache_key is not None:
            self.cache.put(cache_key, answer.result, answer.deployment)
        overhead = self._overhead_ms(inflight.arrived, answer.attempts)
        served = Served(plan, answer.deployment, answer.attempts, overhead)
        result = answer.result
        self._account(
            served,
            inflight,
            result.usage,
            stream=False,
            finish_reason=result.finish_reason,
            response_model=result.model,
            output_text=result.text,
        )
        return served, result

    async def open_stream(
        self,
        request: InferenceRequest,
        ctx: RequestContext,
        arrived: float,
        idempotency_key: str | None = None,
    ) -> tuple[Served, AsyncIterator[StreamEvent]]:
        """The plan's stream once its first event arrived; closing the iterator closes the upstream,
        and its end (or failure) is accounted. Remembered answers are replayed as streams."""
        inflight = self._begin(request, ctx, arrived, "chat")
        try:
            return await self._open_request(inflight, idempotency_key)
        except BaseException as exc:
            self._account_failure(inflight, exc, stream=True)
            raise

    async def _open_request(
        self, inflight: Inflight, idempotency_key: str | None
    ) -> tuple[Served, AsyncIterator[StreamEvent]]:
        request, ctx = inflight.request, inflight.ctx
        assert isinstance(request, InferenceRequest)
        key = self._memo_key(request, ctx, idempotency_key)
        planned = await self._planned_or_unrouted(inflight, key)
        if idempotency_key is not None and key is not None:
            first = await self._claimed(ctx.tenant, idempotency_key, key)
            if first is not None:
                served = self._remembered(planned, inflight, first, "replay")
                return served, _replayed(first.completion)
        cache_key = key if key is not None and self._cacheable(ctx) else None
        try:
            served, opened = await self._open(planned, inflight, cache_key)
        except BaseException as exc:
            if idempotency_key is not None:
                self._owner_failed(ctx.tenant, idempotency_key, exc)
            raise
        if isinstance(opened, Remembered):  # from the cache: it is this key's answer too
            if idempotency_key is not None:
                self.idempotency.complete(ctx.tenant, idempotency_key, opened)
            return served, _replayed(opened.completion)
        memo = _StreamMemo(self, ctx.tenant, cache_key, idempotency_key)
        return served, self._accounted(opened, served, inflight, memo)

    async def _open(
        self, planned: Planned, inflight: Inflight, cache_key: str | None
    ) -> tuple[Served, OpenStream | Remembered]:
        if cache_key is not None and (hit := self.cache.get(cache_key)) is not None:
            return self._remembered(planned, inflight, hit, "hit"), hit
        try:
            plan, payload = _routed(planned)
            stream = await self.streams.open(plan, payload)
        except NoRouteAvailable:
            if cache_key is not None and (stale := self.cache.get(cache_key, stale=True)) is not None:
                return self._remembered(planned, inflight, stale, "stale"), stale
            raise
        overhead = self._overhead_ms(inflight.arrived, stream.attempts)
        served = Served(plan, stream.deployment, stream.attempts, overhead, response_id=uuid.uuid4().hex[:24])
        served.ttft_s = self.clock.monotonic() - inflight.arrived
        return served, stream

    async def _accounted(
        self, stream: OpenStream, served: Served, inflight: Inflight, memo: _StreamMemo
    ) -> AsyncIterator[StreamEvent]:
        end: StreamEnd | None = None
        error: HybridgateError | None = None
        assembled = (
            CompletionBuilder(served.response_id, created=int(self.clock.wall())) if memo.wanted else None
        )
        text: list[str] | None = [] if inflight.trace is not None and inflight.trace.content else None
        try:
            async for event in stream:
                if assembled is not None:
                    assembled.add(event)
                if isinstance(event, StreamEnd):
                    end = event
                elif text is not None and isinstance(event, TextDelta):
                    text.append(event.text)
                yield event
        except HybridgateError as exc:
            error = exc
            raise
        finally:
            try:
                await stream.aclose()
            finally:  # even if closing was itself cancelled: an Idempotency-Key must not stay claimed
                outcome = error.code if error is not None else ("" if end is not None else "client_closed")
                status = error.status if error is not None else (200 if end is not None else 499)
                self._account(
                    served,
                    inflight,
                    end.usage if end is not None else Usage(),
                    stream=True,
                    error=outcome,
                    status=status,
                    finish_reason=end.finish_reason if end is not None else None,
                    output_text="".join(text) if text is not None else None,
                )
                memo.settle(
                    assembled.build() if assembled is not None and end is not None else None, served, error
                )

    async def embed(
        self, request: EmbeddingRequest, ctx: RequestContext, arrived: float
    ) -> tuple[Served, EmbeddingResult]:
        inflight = self._begin(request, ctx, arrived, "embeddings")
        try:
            plan = plan_embeddings(
                request, ctx, self.guard.profile_texts(request.inputs), self.health.snapshot(), self.policy
            )
            inflight.plan = plan
            answer: Answer[EmbeddingResult] = await self.executor.embed(plan, request, inflight)
        except BaseException as exc:
            self._account_failure(inflight, exc, stream=False)
            raise
        served = Served(plan, answer.deployment, answer.attempts, self._overhead_ms(arrived, answer.attempts))
        self._account(served, inflight, answer.result.usage, stream=False, response_model=answer.result.model)
        return served, answer.result

    # ------------------------------------------------------------------ accounting

    def _account(
        self,
        served: Served,
        inflight: Inflight,
        usage: Usage,
        *,
        stream: bool,
        error: str = "",
        status: int = 200,
        finish_reason: str | None = None,
        response_model: str | None = None,
        output_text: str | None = None,
    ) -> None:
        plan = served.plan
        assert plan is not None  # only executed answers are accounted
        ctx = inflight.ctx
        spec = self.policy.deployments[served.deployment]
        elapsed = self.clock.monotonic() - inflight.arrived
        placement = spec.capabilities.placement
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
        self.metrics.request(
            plan.model,
            ctx.workload_class,
            served.deployment,
            placement,
            error or "ok",
            elapsed,
            status=status,
            ttft_s=served.ttft_s,
            overhead_s=served.overhead_ms / 1000.0,
            completion_tokens=usage.completion_tokens,
        )
        if plan.explanation.data.sensitive:
            self.metrics.sensitive(ctx.workload_class, "redacted" if placement == "cloud" else "kept_local")
        if not error:
            self.ledger.record(
                tenant=ctx.tenant,
                workload_class=ctx.workload_class,
                placement=placement,
                deployment=served.deployment,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=cost.total,
                egress_bytes=n_bytes if placement == "cloud" else 0,
            )
        outcome = error or "ok"
        if inflight.trace is not None:
            inflight.trace.finish(
                outcome=outcome,
                latency_s=elapsed,
                deployment=served.deployment,
                attempts=served.attempts,
                plan=plan,
                usage=usage,
                finish_reason=finish_reason,
                response_model=response_model,
                output_text=output_text,
                extra={"hybridgate.cost_usd": cost.total, "hybridgate.overhead_ms": served.overhead_ms},
            )
        if self.decision_log is None:
            return
        record = decision_record(
            inflight,
            ts=self.clock.wall(),
            outcome=outcome,
            latency_s=elapsed,
            overhead_ms=served.overhead_ms,
            stream=stream,
            model=plan.model,
            deployment=served.deployment,
            placement=placement,
            deployment_region=spec.capabilities.region,
            usage=usage,
            cost=cost,
            egress_bytes=n_bytes if placement == "cloud" else 0,
        )
        self.decision_log.write(record, explanation=plan.explanation, messages=_messages(inflight))

    def _account_memory(self, served: Served, model: str, inflight: Inflight) -> None:
        """An answer from memory: counted and logged like any request, billed nothing (no
        upstream was called; the deployment named is the one that produced it first)."""
        ctx = inflight.ctx
        elapsed = self.clock.monotonic() - inflight.arrived
        outcome = _MEMORY_OUTCOMES[served.memory or ""]
        placement = self.policy.deployments[served.deployment].capabilities.placement
        self.metrics.request(
            model, ctx.workload_class, served.deployment, placement, outcome, elapsed,
            overhead_s=served.overhead_ms / 1000.0,
        )  # fmt: skip
        explanation = served.plan.explanation if served.plan is not None else None
        if inflight.trace is not None:
            inflight.trace.finish(
                outcome=outcome,
                latency_s=elapsed,
                deployment=served.deployment,
                extra={"hybridgate.cache": served.memory or ""},
            )
        if self.decision_log is None:
            return
        record = decision_record(
            inflight,
            ts=self.clock.wall(),
            outcome=outcome,
            latency_s=elapsed,
            overhead_ms=served.overhead_ms,
            stream=False,
            model=model,
            deployment=served.deployment,
            memory=served.memory,
        )
        record["unrouted"] = served.unrouted or None
        self.decision_log.write(record, explanation=explanation, messages=_messages(inflight))

    def _account_failure(self, inflight: Inflight, exc: BaseException, *, stream: bool) -> None:
        """A request that ended without an answer: counted (no deployment served it), traced and
        logged with every attempt made."""
        ctx = inflight.ctx
        elapsed = self.clock.monotonic() - inflight.arrived
        if isinstance(exc, HybridgateError):
            outcome = exc.code
            model = inflight.request.model
            if model not in self.config.models:
                model = "unknown"  # a client-supplied name: not a label value
            self.metrics.request(
                model, ctx.workload_class, "none", "none", exc.code, elapsed, status=exc.status
            )
            if isinstance(exc, SensitiveDataRefused):
                self.metrics.sensitive(ctx.workload_class, "refused")
        elif isinstance(exc, asyncio.CancelledError):
            outcome = "client_closed"
        else:
            outcome = "internal_error"
        plan = inflight.plan
        explanation = plan.explanation if plan is not None else None
        if inflight.trace is not None:
            inflight.trace.finish(outcome=outcome, latency_s=elapsed, attempts=inflight.attempts, plan=plan)
        if self.decision_log is None:
            return
        record = decision_record(
            inflight,
            ts=self.clock.wall(),
            outcome=outcome,
            latency_s=elapsed,
            overhead_ms=self._overhead_ms(inflight.arrived, inflight.attempts),
            stream=stream,
            model=inflight.request.model,
            refused=isinstance(exc, SensitiveDataRefused),
        )
        self.decision_log.write(record, explanation=explanation, messages=_messages(inflight))

    def _cost_rows(self) -> list[CostRow]:
        deployments = self.policy.deployments
        return [
            ((tenant, cls, placement, deployments[name].capabilities.region), t.cost_usd, t.prompt_tokens,
             t.completion_tokens, t.egress_bytes)
            for (tenant, cls, placement, name), t in self.ledger.rows()
        ]  # fmt: skip

    def _attempt_counts(self) -> list[tuple[str, str, dict[str, int]]]:
        out: list[tuple[str, str, dict[str, int]]] = []
        for name, stats in self.health.stats.items():
            placement = self.policy.deployments[name].capabilities.placement
            out.append((name, placement, {"ok": stats.completed, **stats.failed_by_kind}))
        return out

    # ------------------------------------------------------------------ introspection

    def _executor_counters(self) -> dict[str, int]:
        c = self.executor.counters
        return {
            "retry": c.retries,
            "failover": c.failovers,
            "hedge": c.hedges,
            "hedge_won": c.hedges_won,
            "breaker_skip": c.breaker_skips,
            "continuation": c.continuations,
            "retry_budget_denied": self.executor.budget.denied,
        }

    def _deployment_gauges(self) -> list[tuple[str, dict[str, float]]]:
        snapshot = self.health.snapshot()
        out: list[tuple[str, dict[str, float]]] = []
        for name in self.config.deployments:
            health = snapshot.of(name)
            values: dict[str, float] = {"ready": float(health.routable)}
            if health.perf is not None:
                values["in_flight"] = float(health.perf.in_flight)
                values["queued"] = float(health.perf.queued)
                values["ttft_p95_seconds"] = health.perf.ttft_p95_s
                if health.perf.hedge_ttft_s is not None:
                    values["hedge_ttft_p95_seconds"] = health.perf.hedge_ttft_s
                values["tokens_per_second"] = health.perf.tokens_per_s
            stats = getattr(self.backends.get(name), "stats", None)
            for counter in ("malformed_chunks", "streams_without_done", "streams_without_stop"):
                if hasattr(stats, counter):
                    values[counter] = float(getattr(stats, counter))
            out.append((name, values))
        return out

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
        deployments: dict[str, dict[str, object]] = {}
        for name in states:
            health = self.health.describe(name)
            # The routing state: the lifecycle, or circuit_open while a ready one's breaker is open
            # (readiness above goes by the lifecycle alone: an open breaker closes by itself).
            deployments[name] = {"state": health["state"], "detail": health["detail"], "health": health}
        for name, backend in self.backends.items():
            if isinstance(backend, Describable):
                deployments[name]["runtime"] = dict(backend.describe())
        degraded = any(s is DeploymentState.FAILED for s, _ in states.values())
        status = "ready" if ready and not degraded else ("degraded" if ready else "not_ready")
        offline = self.health.offline_status()
        return ready, {"status": status, "offline": offline, "models": models, "deployments": deployments}


def _messages(inflight: Inflight) -> tuple[Message, ...]:
    """What the prompt hash covers: the messages (an embedding's inputs as user messages)."""
    request = inflight.request
    if isinstance(request, InferenceRequest):
        return request.messages
    return tuple(Message.of_text("user", text) for text in request.inputs)


def _known_tenants(config: GatewayConfig) -> set[str]:
    """Tenant names that may be label values: configured ones, and client keys' tenants."""
    tenants = set(config.governance.tenants) | {"default"}
    tenants |= {k.tenant for k in config.server.auth.api_keys if isinstance(k, ClientKey)}
    return tenants


def _routed(planned: Planned) -> tuple[RoutePlan, Payload]:
    if isinstance(planned, Unrouted):
        raise planned.error
    return planned


_MAX_IDEMPOTENCY_KEY = 255  # Stripe's limit; a key is an id, not a payload
_MEMORY_OUTCOMES = {"hit": "cache_hit", "stale": "cache_stale", "replay": "idempotent_replay", "": "memory"}


async def _replayed(completion: Completion) -> AsyncIterator[StreamEvent]:
    for event in replay(completion):
        yield event


@dataclass(slots=True)
class _StreamMemo:
    """Where a streamed answer is remembered once it has ended (cache, Idempotency-Key)."""

    gateway: Gateway
    tenant: str
    cache_key: str | None
    idempotency_key: str | None

    @property
    def wanted(self) -> bool:
        return self.cache_key is not None or self.idempotency_key is not None

    def settle(self, completion: Completion | None, served: Served, error: HybridgateError | None) -> None:
        gateway = self.gateway
        if completion is not None and self.cache_key is not None:
            gateway.cache.put(self.cache_key, completion, served.deployment)
        if self.idempotency_key is None:
            return
        if completion is not None:
            remembered = Remembered(completion, served.deployment, gateway.clock.monotonic())
            gateway.idempotency.complete(self.tenant, self.idempotency_key, remembered)
        elif error is not None:
            gateway.idempotency.abandon(self.tenant, self.idempotency_key, error)
        else:  # the client went away before the end: nobody has the answer, the key is free again
            gateway.idempotency.release(self.tenant, self.idempotency_key)

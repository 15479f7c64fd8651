"""The gateway as the API routes see it, with tenancy around each request.

:class:`GovernedGateway` has the methods the inference routes call (``context``, ``complete``,
``open_stream``, ``embed``) and adds, around the unchanged :class:`~hybridgate.gateway.Gateway`:
the key's model allow-list (403), budget admission (reserve the maximum cost; 402, or local-only),
settlement of the actual cost (persisted to the store with a usage row for ``cost report``),
and audit entries for every answer that left the device or its region and every sensitive-data
action. It never sees or records prompt content, only what the plan and the ledger say.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from hybridgate.errors import (
    BudgetExhausted,
    PermissionDenied,
    RateLimited,
    SensitiveDataRefused,
    StoreUnavailable,
)
from hybridgate.gateway import Gateway, Served
from hybridgate.policy.context import ClientIdentity, RequestContext
from hybridgate.policy.planner import estimate_prompt_tokens
from hybridgate.tenancy.audit import AuditLog
from hybridgate.tenancy.budgets import BudgetLedger, MaxCost, Reservation
from hybridgate.tenancy.ratelimit import Admission, KeyRateLimiter
from hybridgate.tenancy.store import AsyncStore, SpendDelta, UsageRow
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    StreamEnd,
    StreamEvent,
)

log = logging.getLogger("hybridgate.tenancy")

# Prompt tokens are estimated at ~4 characters each; reservations assume up to twice that.
PROMPT_MARGIN = 2


class SpendRecorder:
    """Writes spend and usage rows to the store in batches, off the event loop. A store that is
    locked or full is logged and retried with the next batch: enforcement goes on in memory."""

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self._deltas: list[SpendDelta] = []
        self._rows: list[UsageRow] = []
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def add(self, deltas: list[SpendDelta], row: UsageRow | None) -> None:
        self._deltas += deltas
        if row is not None:
            self._rows.append(row)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="hybridgate-spend")

    async def _flush(self) -> None:
        while self._deltas or self._rows:
            deltas, rows = self._deltas, self._rows
            self._deltas, self._rows = [], []
            try:
                await self.store.call(self.store.sync.record, deltas, rows)
            except StoreUnavailable as exc:
                self.failures += 1
                log.error("could not record spend (will retry with the next batch): %s", exc.message)
                self._deltas, self._rows = deltas + self._deltas, rows + self._rows
                return

    async def drain(self) -> None:
        if self._task is not None:
            await self._task
        if self._deltas or self._rows:
            await self._flush()


class GovernedGateway:
    """Tenancy around the gateway's inference calls (see the module docstring)."""

    def __init__(
        self,
        gateway: Gateway,
        budgets: BudgetLedger | None,
        recorder: SpendRecorder | None,
        audit: AuditLog | None,
        limiter: KeyRateLimiter | None = None,
    ) -> None:
        self.gateway = gateway
        self.limiter = limiter
        self.default_limits = gateway.config.tenancy.rate_limits
        self.budgets = budgets
        self.recorder = recorder
        self.audit = audit

    def context(
        self, identity: ClientIdentity, headers: Mapping[str, str], metadata: Mapping[str, Any]
    ) -> RequestContext:
        return self.gateway.context(identity, headers, metadata)

    # ------------------------------------------------------------------ admission

    def _check_model(self, model: str, ctx: RequestContext) -> None:
        if ctx.allowed_models is None:
            return
        resolved = self.gateway.policy.resolve(model).name
        if resolved not in ctx.allowed_models:
            raise PermissionDenied(f"this API key may not use model {resolved!r}")

    def _max_cost(
        self, model: str, prompt_tokens: int, max_tokens: int | None, ctx: RequestContext
    ) -> MaxCost:
        policy = self.gateway.policy
        logical = policy.resolve(model)
        prompt = prompt_tokens * PROMPT_MARGIN
        worst, worst_local, worst_tokens = 0.0, 0.0, 0
        for name in logical.deployments:
            spec = policy.deployments[name]
            caps = spec.capabilities
            output = max(0, caps.context_window - prompt)
            if max_tokens is not None:
                output = min(output, max_tokens)
            cost = spec.cost.estimate(
                prompt, output, 4 * (prompt + output), ctx.region, spec.timeouts.total
            ).total
            worst = max(worst, cost)
            worst_tokens = max(worst_tokens, prompt + output)
            if caps.placement == "local":
                worst_local = max(worst_local, cost)
        return MaxCost(worst, worst_local, worst_tokens)

    def _admit(self, model: str, prompt_tokens: int, max_tokens: int | None, ctx: RequestContext) -> _Ticket:
        """Model allow-list, rate limits, then budgets: 403, 429 or 402 before anything is sent
        (each refusal counted in ``hybridgate_admission_refused_total``)."""
        try:
            return self._admission(model, prompt_tokens, max_tokens, ctx)
        except PermissionDenied:
            self.gateway.metrics.refused(ctx.workload_class, "model_not_allowed")
            raise
        except RateLimited:
            self.gateway.metrics.refused(ctx.workload_class, "rate_limited")
            raise
        except BudgetExhausted:
            self.gateway.metrics.refused(ctx.workload_class, "budget")
            raise

    def _admission(
        self, model: str, prompt_tokens: int, max_tokens: int | None, ctx: RequestContext
    ) -> _Ticket:
        self._check_model(model, ctx)
        ticket = _Ticket(ctx)
        if self.limiter is not None:
            rpm = ctx.rpm or self.default_limits.rpm
            tpm = ctx.tpm or self.default_limits.tpm
            if rpm is not None or tpm is not None:
                expected = max_tokens
                if expected is None:
                    expected = self.gateway.policy.classes[ctx.workload_class].expected_output_tokens
                ticket.rate = self.limiter.admit(ctx.key_id, rpm, tpm, prompt_tokens + expected)
        if self.budgets is None or not self.budgets.applicable(ctx.tenant, ctx.key_id):
            return ticket
        cost = self._max_cost(model, prompt_tokens, max_tokens, ctx)
        may_go_local = self.gateway.policy.classes[ctx.workload_class].placement != "cloud-only"
        try:
            reservation = self.budgets.reserve(ctx.tenant, ctx.key_id, cost, may_go_local=may_go_local)
        except BudgetExhausted:
            self._refund(ticket)
            raise
        ticket.reservation = reservation
        if reservation.local_only is not None:
            ticket.ctx = dataclasses.replace(ctx, local_only=reservation.local_only)
            if self.audit is not None:
                self.audit.record(
                    "budget_local_only", tenant=ctx.tenant, key=ctx.key_id, reason=reservation.local_only
                )
        return ticket

    def _refund(self, ticket: _Ticket) -> None:
        if ticket.rate is not None and self.limiter is not None:
            self.limiter.settle(ticket.rate, 0)

    def _settle(self, ticket: _Ticket, served: Served, prompt: int, completion: int) -> None:
        ctx = ticket.ctx
        usd = float(served.extra.get("cost_usd", 0.0))
        if ticket.rate is not None and self.limiter is not None:
            self.limiter.settle(ticket.rate, prompt + completion)
        deltas: list[SpendDelta] = []
        if ticket.reservation is not None and self.budgets is not None:
            deltas = self.budgets.settle(ticket.reservation, usd, prompt + completion)
        if self.recorder is not None:
            row = None
            if served.memory is None:
                caps = self.gateway.policy.deployments[served.deployment].capabilities
                row = UsageRow(
                    self.gateway.clock.wall(), ctx.tenant, ctx.key_id, ctx.workload_class, caps.placement,
                    caps.region, served.deployment, prompt, completion, usd,
                )  # fmt: skip
            self.recorder.add(deltas, row)
        self._audit_route(served, ctx)

    def _release(self, ticket: _Ticket, exc: BaseException) -> None:
        """The request failed before an answer: give back its reservation and token charge."""
        self._refund(ticket)
        if ticket.reservation is not None and self.budgets is not None:
            self.budgets.release(ticket.reservation)
        ctx = ticket.ctx
        if isinstance(exc, SensitiveDataRefused) and self.audit is not None:
            self.audit.record(
                "sensitive_refused", tenant=ctx.tenant, key=ctx.key_id, workload_class=ctx.workload_class
            )

    def _audit_route(self, served: Served, ctx: RequestContext) -> None:
        if self.audit is None or served.plan is None or served.memory is not None:
            return
        caps = self.gateway.policy.deployments[served.deployment].capabilities
        data = served.plan.explanation.data
        left_device = caps.placement == "cloud"
        left_region = caps.region not in ("local", ctx.region)
        if not (left_device or left_region or data.sensitive):
            return
        self.audit.record(
            "route",
            tenant=ctx.tenant,
            key=ctx.key_id,
            workload_class=ctx.workload_class,
            deployment=served.deployment,
            placement=caps.placement,
            region=caps.region,
            origin_region=ctx.region,
            left_device=left_device,
            left_region=left_region,
            sensitive_kinds=sorted(data.kinds),
            sensitive_action=("redacted" if left_device else "kept_local") if data.sensitive else None,
        )

    # ------------------------------------------------------------------ the routes' calls

    async def complete(
        self,
        request: InferenceRequest,
        ctx: RequestContext,
        arrived: float,
        idempotency_key: str | None = None,
    ) -> tuple[Served, Completion]:
        prompt = estimate_prompt_tokens(request)
        ticket = self._admit(request.model, prompt, request.max_tokens, ctx)
        try:
            served, completion = await self.gateway.complete(request, ticket.ctx, arrived, idempotency_key)
        except BaseException as exc:
            self._release(ticket, exc)
            raise
        usage = completion.usage
        self._settle(ticket, served, usage.prompt_tokens, usage.completion_tokens)
        return served, completion

    async def open_stream(
        self,
        request: InferenceRequest,
        ctx: RequestContext,
        arrived: float,
        idempotency_key: str | None = None,
    ) -> tuple[Served, AsyncIterator[StreamEvent]]:
        prompt = estimate_prompt_tokens(request)
        ticket = self._admit(request.model, prompt, request.max_tokens, ctx)
        try:
            served, events = await self.gateway.open_stream(request, ticket.ctx, arrived, idempotency_key)
        except BaseException as exc:
            self._release(ticket, exc)
            raise
        return served, self._settled_stream(events, served, ticket)

    async def _settled_stream(
        self,
        events: AsyncIterator[StreamEvent],
        served: Served,
        ticket: _Ticket,
    ) -> AsyncIterator[StreamEvent]:
        end: StreamEnd | None = None
        try:
            async for event in events:
                if isinstance(event, StreamEnd):
                    end = event
                yield event
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
            # The gateway has accounted the stream by now: charge what it cost, even a stream cut short.
            usage = end.usage if end is not None and end.usage is not None else None
            self._settle(
                ticket,
                served,
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,
            )

    async def embed(
        self, request: EmbeddingRequest, ctx: RequestContext, arrived: float
    ) -> tuple[Served, EmbeddingResult]:
        prompt = sum(len(text) for text in request.inputs) // 4 + 1
        ticket = self._admit(request.model, prompt, 0, ctx)
        try:
            served, result = await self.gateway.embed(request, ticket.ctx, arrived)
        except BaseException as exc:
            self._release(ticket, exc)
            raise
        self._settle(ticket, served, result.usage.prompt_tokens, 0)
        return served, result

    async def close(self) -> None:
        if self.recorder is not None:
            await self.recorder.drain()


@dataclass(slots=True)
class _Ticket:
    """One admitted request: its context (local-only if a budget said so) and what it holds."""

    ctx: RequestContext
    reservation: Reservation | None = None
    rate: Admission | None = None

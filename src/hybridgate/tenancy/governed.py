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
from typing import Any

from hybridgate.errors import PermissionDenied, SensitiveDataRefused, StoreUnavailable
from hybridgate.gateway import Gateway, Served
from hybridgate.policy.context import ClientIdentity, RequestContext
from hybridgate.policy.planner import estimate_prompt_tokens
from hybridgate.tenancy.audit import AuditLog
from hybridgate.tenancy.budgets import BudgetLedger, MaxCost, Reservation
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
    ) -> None:
        self.gateway = gateway
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

    def _admit(
        self, model: str, prompt_tokens: int, max_tokens: int | None, ctx: RequestContext
    ) -> tuple[Reservation | None, RequestContext]:
        self._check_model(model, ctx)
        if self.budgets is None or not self.budgets.applicable(ctx.tenant, ctx.key_id):
            return None, ctx
        cost = self._max_cost(model, prompt_tokens, max_tokens, ctx)
        may_go_local = self.gateway.policy.classes[ctx.workload_class].placement != "cloud-only"
        reservation = self.budgets.reserve(ctx.tenant, ctx.key_id, cost, may_go_local=may_go_local)
        if reservation.local_only is not None:
            ctx = _with_local_only(ctx, reservation.local_only)
            if self.audit is not None:
                self.audit.record(
                    "budget_local_only", tenant=ctx.tenant, key=ctx.key_id, reason=reservation.local_only
                )
        return reservation, ctx

    def _settle(
        self,
        reservation: Reservation | None,
        served: Served,
        ctx: RequestContext,
        prompt: int,
        completion: int,
    ) -> None:
        usd = float(served.extra.get("cost_usd", 0.0))
        deltas = (
            self.budgets.settle(reservation, usd, prompt + completion) if reservation and self.budgets else []
        )
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

    def _release(self, reservation: Reservation | None, ctx: RequestContext, exc: BaseException) -> None:
        if reservation is not None and self.budgets is not None:
            self.budgets.release(reservation)
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
        reservation, ctx = self._admit(request.model, prompt, request.max_tokens, ctx)
        try:
            served, completion = await self.gateway.complete(request, ctx, arrived, idempotency_key)
        except BaseException as exc:
            self._release(reservation, ctx, exc)
            raise
        usage = completion.usage
        self._settle(reservation, served, ctx, usage.prompt_tokens, usage.completion_tokens)
        return served, completion

    async def open_stream(
        self,
        request: InferenceRequest,
        ctx: RequestContext,
        arrived: float,
        idempotency_key: str | None = None,
    ) -> tuple[Served, AsyncIterator[StreamEvent]]:
        prompt = estimate_prompt_tokens(request)
        reservation, ctx = self._admit(request.model, prompt, request.max_tokens, ctx)
        try:
            served, events = await self.gateway.open_stream(request, ctx, arrived, idempotency_key)
        except BaseException as exc:
            self._release(reservation, ctx, exc)
            raise
        return served, self._settled_stream(events, served, ctx, reservation)

    async def _settled_stream(
        self,
        events: AsyncIterator[StreamEvent],
        served: Served,
        ctx: RequestContext,
        reservation: Reservation | None,
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
                reservation,
                served,
                ctx,
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,
            )

    async def embed(
        self, request: EmbeddingRequest, ctx: RequestContext, arrived: float
    ) -> tuple[Served, EmbeddingResult]:
        prompt = sum(len(text) for text in request.inputs) // 4 + 1
        reservation, ctx = self._admit(request.model, prompt, 0, ctx)
        try:
            served, result = await self.gateway.embed(request, ctx, arrived)
        except BaseException as exc:
            self._release(reservation, ctx, exc)
            raise
        self._settle(reservation, served, ctx, result.usage.prompt_tokens, 0)
        return served, result

    async def close(self) -> None:
        if self.recorder is not None:
            await self.recorder.drain()


def _with_local_only(ctx: RequestContext, reason: str) -> RequestContext:
    return dataclasses.replace(ctx, local_only=reason)

"""The executor carries a RoutePlan out: the only place that waits on backends.

Send chain (httpx's shape: one concern per step)::

    complete(plan)  ->  _hedged / _attempts (retry policy, budget, breakers)  ->  _send_once

- candidates are tried in the plan's order; a deployment whose circuit breaker is open is skipped
  (a half-open one gets its single trial); what happens after a failure is the
  :class:`~hybridgate.execution.retry.RetryPolicy`'s decision; retries on the same deployment and
  hedges spend the :class:`~hybridgate.execution.retry.RetryBudget`;
- for classes that allow it, a hedge: if the first candidate has not answered after its predicted
  p95 answer time (streams: p95 time to first token), the same request goes to the next candidate
  as well; the first answer wins and the other attempt is cancelled;
- candidates the plan marks ``redact`` receive the redacted request, and their answers are
  restored before anyone sees them;
- every attempt is reported to an :class:`AttemptObserver` (live health, breakers), and, when the
  request is traced, to its :class:`AttemptTracer` (one span per attempt, current while the
  attempt's upstream call is made, so that HTTP adapters propagate it).

Streams (first-token failover, hedging, mid-stream continuation) live in
:mod:`hybridgate.execution.streams`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from hybridgate.backends.base import Backend
from hybridgate.clock import Clock
from hybridgate.config.resilience import RetryConfig
from hybridgate.errors import (
    AttemptFailure,
    BackendUnavailable,
    ErrorKind,
    HybridgateError,
    NoRouteAvailable,
    UpstreamError,
)
from hybridgate.execution.retry import Action, RetryBudget, RetryPolicy
from hybridgate.policy.planner import Candidate, RoutePlan
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    StreamEvent,
    Usage,
)

T = TypeVar("T")


class AttemptObserver(Protocol):
    """Receives every attempt's life: the live health statistics and breakers implement it."""

    def admit(self, deployment: str) -> bool: ...

    def started(self, deployment: str) -> None: ...

    def succeeded(
        self,
        deployment: str,
        *,
        usage: Usage,
        ttft_s: float | None,
        duration_s: float,
        backup: bool = False,
        late: bool = False,
    ) -> None:
        """An attempt answered in full. ``backup``: it was a hedge (sent because another attempt
        was late, so it is not a fair sample of how often attempts are late); ``late``: a hedge
        was sent because it had not answered by the hedge delay (and it won the race anyway)."""
        ...

    def failed(self, deployment: str, kind: str, retry_after: float | None = None) -> None: ...

    def cut_short(
        self,
        deployment: str,
        over_s: float,
        *,
        backup: bool = False,
        elapsed_s: float | None = None,
        predicted_wait_s: float = 0.0,
    ) -> None:
        """An attempt that lost a hedge race was cancelled before it answered (for a stream:
        before its first event), ``over_s`` after its predicted p95 time for that (negative if
        sooner; the prediction included ``predicted_wait_s`` of queue wait), ``elapsed_s`` after
        it was sent; ``backup`` when it was the hedge. Its latency is known only to be longer:
        recorded as that lower bound, so that the predictor does not learn from the winners
        alone (it would then hedge ever sooner)."""
        ...

    def finished(self, deployment: str) -> None: ...


class _NoObserver:
    def admit(self, deployment: str) -> bool:
        return True

    def started(self, deployment: str) -> None:
        pass

    def succeeded(
        self,
        deployment: str,
        *,
        usage: Usage,
        ttft_s: float | None,
        duration_s: float,
        backup: bool = False,
        late: bool = False,
    ) -> None:
        pass

    def failed(self, deployment: str, kind: str, retry_after: float | None = None) -> None:
        pass

    def cut_short(
        self,
        deployment: str,
        over_s: float,
        *,
        backup: bool = False,
        elapsed_s: float | None = None,
        predicted_wait_s: float = 0.0,
    ) -> None:
        pass

    def finished(self, deployment: str) -> None:
        pass


class StreamRestoring(Protocol):
    def feed(self, event: StreamEvent) -> list[StreamEvent]: ...

    def flush(self) -> list[StreamEvent]: ...


class Restoring(Protocol):
    """Turns a redacted answer back into the real one (placeholders replaced by their values)."""

    def restore_completion(self, completion: Completion) -> Completion: ...

    def stream_restorer(self) -> StreamRestoring: ...


class AttemptTrace(Protocol):
    """One attempt's span: made current around the upstream call, ended once with its outcome."""

    def active(self) -> AbstractContextManager[object]: ...

    def end(self, attempt: Attempt, usage: Usage | None = None, finish_reason: str | None = None) -> None: ...


class AttemptTracer(Protocol):
    """Makes the span of each attempt of one request (a child of the request's span)."""

    def attempt(self, attempt: Attempt) -> AttemptTrace: ...


@dataclass(frozen=True, slots=True)
class Payload:
    """What to send: the request, and its redacted form for candidates that must not see it all;
    ``tracer`` when the request is traced."""

    request: InferenceRequest
    redacted: InferenceRequest | None = None
    restorer: Restoring | None = None
    tracer: AttemptTracer | None = None

    def for_candidate(self, candidate: Candidate) -> InferenceRequest:
        if candidate.redact:
            if self.redacted is None:  # a plan that needs redaction without it: never send
                raise BackendUnavailable(
                    f"{candidate.deployment}: redaction required but unavailable",
                    deployment=candidate.deployment,
                )
            return self.redacted
        return self.request


@dataclass(slots=True)
class Attempt:
    deployment: str
    started: float
    duration: float = 0.0  # to the answer; for a stream, to its first event
    error: UpstreamError | None = None
    hedge: bool = False  # a backup request sent while the previous attempt was still running
    reason: str = ""  # why it was made: "" (the first), "retry", "failover", "hedge", "continuation"
    after: str = ""  # the error kind of the failure that led to it (retry, failover, continuation)
    cancelled: bool = False  # stopped before its outcome was known (a hedge lost, the client left)
    late: bool = False  # a backup was sent because this attempt had not answered in time

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def outcome(self) -> str:
        """``ok``, the error kind, or ``cancelled``."""
        if self.error is not None:
            return self.error.kind.value
        return "cancelled" if self.cancelled else "ok"


@dataclass(slots=True)
class Answer(Generic[T]):
    """The result of a plan, the deployment that produced it, and every attempt made."""

    result: T
    deployment: str
    attempts: list[Attempt]


@dataclass(slots=True)
class Counters:
    """What the executor did beyond one attempt per request (exposed as metrics)."""

    retries: int = 0
    failovers: int = 0
    hedges: int = 0
    hedges_won: int = 0
    breaker_skips: int = 0
    continuations: int = 0


# Errors that belong to the request, not the deployment: returned to the client as they are.
RETURNED_AS_IS = frozenset({ErrorKind.REJECTED, ErrorKind.CONTENT_POLICY})


def raise_returned_as_is(attempts: list[Attempt]) -> None:
    for attempt in attempts:
        if attempt.error is not None and attempt.error.kind in RETURNED_AS_IS:
            raise attempt.error


def all_failed(
    plan: RoutePlan, attempts: list[Attempt], skipped: list[str] | None = None
) -> NoRouteAvailable:
    failures = [
        AttemptFailure(a.deployment, a.error.kind.value, a.error.message) for a in attempts if a.error
    ]
    failures += [AttemptFailure(name, "circuit_open", "circuit breaker open") for name in skipped or ()]
    errors = [a.error for a in attempts if a.error is not None]
    detail = "; ".join(f"{f.deployment}: {f.kind}" for f in failures) or "nothing could be attempted"
    if errors and all(e.kind is ErrorKind.RATE_LIMITED or e.kind is ErrorKind.OVERLOADED for e in errors):
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        return NoRouteAvailable(
            f"every deployment of {plan.model!r} is rate limited or overloaded ({detail})",
            attempts=failures,
            status=429,
            retry_after=min(waits) if waits else 1.0,
        )
    if not errors:
        return NoRouteAvailable(f"no deployment of {plan.model!r} is available ({detail})", attempts=failures)
    status = 504 if all(e.kind is ErrorKind.TIMEOUT for e in errors) else 502
    return NoRouteAvailable(
        f"every deployment of {plan.model!r} failed ({detail})", attempts=failures, status=status
    )


class Executor:
    """Runs plans against the live backends."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        clock: Clock,
        observer: AttemptObserver | None = None,
        retry: RetryConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.backends = backends
        self.clock = clock
        self.observer: AttemptObserver = observer or _NoObserver()
        self.retry = retry or RetryConfig()
        self.policy = RetryPolicy(self.retry, rng or random.Random())
        self.budget = RetryBudget(self.retry, clock)
        self.counters = Counters()

    def backend(self, candidate: Candidate) -> Backend:
        backend = self.backends.get(candidate.deployment)
        if backend is None:
            raise BackendUnavailable(f"{candidate.deployment}: not running", deployment=candidate.deployment)
        return backend

    # ------------------------------------------------------------------ one attempt

    async def _send_once(
        self, attempt: Attempt, call: Callable[[], Awaitable[T]], tracer: AttemptTracer | None = None
    ) -> T:
        """One call, reported to the observer (and traced); a failure is recorded on ``attempt``."""
        observer = self.observer
        span = tracer.attempt(attempt) if tracer is not None else None
        observer.started(attempt.deployment)
        try:
            if span is None:
                result = await call()
            else:
                with span.active():
                    result = await call()
        except BaseException as exc:
            attempt.duration = self.clock.monotonic() - attempt.started
            if isinstance(exc, UpstreamError):
                attempt.error = exc
                observer.failed(attempt.deployment, exc.kind.value, exc.retry_after)
            elif isinstance(exc, asyncio.CancelledError):
                attempt.cancelled = True
            if span is not None:
                span.end(attempt)
            raise
        finally:
            observer.finished(attempt.deployment)
        attempt.duration = self.clock.monotonic() - attempt.started
        if span is not None:
            if isinstance(result, Completion):
                span.end(attempt, result.usage, result.finish_reason)
            else:
                span.end(attempt, getattr(result, "usage", None))
        return result

    # ------------------------------------------------------------------ the attempt loop

    async def walk(
        self,
        plan: RoutePlan,
        try_one: Callable[[Candidate, Attempt], Awaitable[T]],
        attempts: list[Attempt],
        start: int = 0,
    ) -> tuple[T, int]:
        """Candidates from ``start`` on, by the retry policy, until one succeeds.

        ``try_one`` makes one attempt and, when it fails, has recorded the error on the attempt
        and raised it. Returns the result and the index of the candidate that produced it.
        """
        candidates = plan.candidates
        deadline = self.clock.monotonic() + (candidates[0].timeouts.total if len(candidates) else 0.0)
        skipped: list[str] = []
        tries: dict[str, int] = {}
        min_window = 0
        i = start
        while i < len(candidates) and len(attempts) < self.retry.max_attempts:
            candidate = candidates[i]
            backend = self.backends.get(candidate.deployment)
            if backend is not None and backend.capabilities.context_window <= min_window:
                i += 1
                continue
            if not self.observer.admit(candidate.deployment):
                skipped.append(candidate.deployment)
                self.counters.breaker_skips += 1
                i += 1
                continue
            tries[candidate.deployment] = tries.get(candidate.deployment, 0) + 1
            attempt = Attempt(candidate.deployment, self.clock.monotonic())
            if attempts:
                last = attempts[-1]
                attempt.reason = "retry" if last.deployment == candidate.deployment else "failover"
                attempt.after = last.error.kind.value if last.error is not None else ""
            attempts.append(attempt)
            try:
                return await try_one(candidate, attempt), i
            except UpstreamError as exc:
                if exc.kind in RETURNED_AS_IS:
                    raise
                decision = self.policy.decide(
                    exc,
                    same_tries=tries[candidate.deployment],
                    others_left=i + 1 < len(candidates),
                    time_left_s=deadline - self.clock.monotonic(),
                )
            if decision.action is Action.STOP:
                break
            if decision.action is Action.RETRY_SAME and self.budget.try_spend():
                self.counters.retries += 1
                await self.clock.sleep(decision.delay_s)
                continue
            if decision.action is Action.NEXT_LARGER_CONTEXT and backend is not None:
                min_window = backend.capabilities.context_window
            self.counters.failovers += 1
            i += 1
        raise all_failed(plan, attempts, skipped)

    async def _attempts(
        self,
        plan: RoutePlan,
        call: Callable[[Candidate, Attempt], Awaitable[T]],
        attempts: list[Attempt],
        start: int = 0,
        tracer: AttemptTracer | None = None,
    ) -> Answer[T]:
        async def try_one(candidate: Candidate, attempt: Attempt) -> T:
            return await self._send_once(attempt, functools.partial(call, candidate, attempt), tracer)

        result, index = await self.walk(plan, try_one, attempts, start)
        return Answer(result, plan.candidates[index].deployment, attempts)

    # ------------------------------------------------------------------ hedging

    async def _hedged(
        self,
        plan: RoutePlan,
        call: Callable[[Candidate, Attempt], Awaitable[T]],
        tracer: AttemptTracer | None,
    ) -> Answer[T]:
        """First candidate, and after ``plan.hedge.answer_s`` without an answer the second as well."""
        assert plan.hedge is not None
        first, second = plan.candidates[0], plan.candidates[1]
        attempts: list[Attempt] = []
        if not self.observer.admit(first.deployment):
            self.counters.breaker_skips += 1
            return await self._attempts(plan, call, attempts, start=1, tracer=tracer)
        primary_attempt = Attempt(first.deployment, self.clock.monotonic())
        attempts.append(primary_attempt)
        primary = asyncio.ensure_future(
            self._send_once(primary_attempt, functools.partial(call, first, primary_attempt), tracer)
        )
        timer = asyncio.ensure_future(self.clock.sleep(plan.hedge.answer_s))
        racing: list[asyncio.Future[T]] = [primary]
        try:
            await asyncio.wait({primary, timer}, return_when=asyncio.FIRST_COMPLETED)
            # The budget first: an admitted half-open trial must be used, not held by nobody.
            if not primary.done() and self.budget.try_spend() and self.observer.admit(second.deployment):
                self.counters.hedges += 1
                primary_attempt.late = True
                backup_attempt = Attempt(
                    second.deployment, self.clock.monotonic(), hedge=True, reason="hedge"
                )
                attempts.append(backup_attempt)
                racing.append(
                    asyncio.ensure_future(
                        self._send_once(
                            backup_attempt, functools.partial(call, second, backup_attempt), tracer
                        )
                    )
                )
            winner = await _first_success(racing)
            if winner is not None:
                self.report_cut_short(racing, attempts, (first, second), streamed=False)
        finally:
            timer.cancel()
            for task in racing:
                task.cancel()
            for task in racing:
                with contextlib.suppress(asyncio.CancelledError, HybridgateError):
                    await task
        if winner is not None:
            result, index = winner
            if index == 1:
                self.counters.hedges_won += 1
            return Answer(result, (first, second)[index].deployment, attempts)
        raise_returned_as_is(attempts)
        return await self._attempts(plan, call, attempts, start=len(racing), tracer=tracer)

    def report_cut_short(
        self,
        racing: Sequence[asyncio.Future[Any]],
        attempts: Sequence[Attempt],
        pair: tuple[Candidate, Candidate],
        *,
        streamed: bool,
    ) -> None:
        """Report the attempts of a hedge race still running when the other won (before they are
        cancelled), with how far past their predicted p95 (first event, or answer) they were."""
        now = self.clock.monotonic()
        for task, attempt, candidate in zip(racing, attempts, pair, strict=False):
            predicted = candidate.predicted_ttft_p95_s if streamed else candidate.predicted_p95_s
            if not task.done() and predicted is not None:
                elapsed = now - attempt.started
                self.observer.cut_short(
                    attempt.deployment,
                    elapsed - predicted,
                    backup=attempt.hedge,
                    elapsed_s=elapsed,
                    predicted_wait_s=candidate.predicted_wait_s,
                )

    # ------------------------------------------------------------------ entry points

    async def complete(self, plan: RoutePlan, payload: Payload) -> Answer[Completion]:
        self.budget.record_request()

        async def call(candidate: Candidate, attempt: Attempt) -> Completion:
            started = self.clock.monotonic()
            completion = await self.backend(candidate).complete(
                payload.for_candidate(candidate), candidate.timeouts
            )
            self.observer.succeeded(
                candidate.deployment,
                usage=completion.usage,
                ttft_s=None,
                duration_s=self.clock.monotonic() - started,
                backup=attempt.hedge,
                late=attempt.late,
            )
            if candidate.redact and payload.restorer is not None:
                completion = payload.restorer.restore_completion(completion)
            return completion

        if plan.hedge is not None and len(plan.candidates) > 1:
            return await self._hedged(plan, call, payload.tracer)
        return await self._attempts(plan, call, [], tracer=payload.tracer)

    async def embed(
        self, plan: RoutePlan, request: EmbeddingRequest, tracer: AttemptTracer | None = None
    ) -> Answer[EmbeddingResult]:
        self.budget.record_request()
        return await self._attempts(
            plan, lambda c, _: self.backend(c).embed(request, c.timeouts), [], tracer=tracer
        )


async def _first_success(order: Sequence[asyncio.Future[T]]) -> tuple[T, int] | None:
    """The first task to succeed (its result and its position in ``order``), or None if all failed."""
    pending = set(order)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is None:
                return task.result(), order.index(task)
    return None


async def close_stream(stream: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    # The attempt already failed or finished; an error while closing it cannot make that worse.
    with contextlib.suppress(HybridgateError):
        await aclose()

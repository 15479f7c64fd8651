"""The executor carries a RoutePlan out: attempt each candidate in order, fail over on errors
that another deployment may not have, and report what happened.

It is the only place that waits on backends. Failover decisions come from one policy object,
:class:`FailoverPolicy`; streaming fails over transparently only before the first event (after
that the API layer ends the stream with an explicit error event).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from hybridgate.backends.base import Backend
from hybridgate.clock import Clock
from hybridgate.errors import (
    AttemptFailure,
    BackendUnavailable,
    ErrorKind,
    HybridgateError,
    NoRouteAvailable,
    UpstreamError,
)
from hybridgate.policy.planner import Candidate, RoutePlan
from hybridgate.types import Completion, EmbeddingRequest, EmbeddingResult, InferenceRequest, StreamEvent

T = TypeVar("T")

# Errors that belong to the request, not the deployment: another deployment would say the same.
_RETURN_AS_IS = frozenset({ErrorKind.REJECTED, ErrorKind.CONTENT_POLICY})


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    """Which failures move on to the next candidate."""

    def fails_over(self, error: UpstreamError) -> bool:
        return error.kind not in _RETURN_AS_IS


@dataclass(slots=True)
class Attempt:
    deployment: str
    started: float
    duration: float = 0.0
    error: UpstreamError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class Answer(Generic[T]):
    """The result of a plan, the deployment that produced it, and every attempt made."""

    result: T
    deployment: str
    attempts: list[Attempt]


@dataclass(slots=True)
class OpenStream:
    """A stream whose first event has arrived: the HTTP status can be committed now."""

    deployment: str
    attempts: list[Attempt]
    first: StreamEvent
    _rest: AsyncIterator[StreamEvent] = field(repr=False)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        yield self.first
        async for event in self._rest:
            yield event

    async def aclose(self) -> None:
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            await aclose()


def _all_failed(plan: RoutePlan, attempts: list[Attempt]) -> NoRouteAvailable:
    failures = [
        AttemptFailure(a.deployment, a.error.kind.value, a.error.message) for a in attempts if a.error
    ]
    errors = [a.error for a in attempts if a.error is not None]
    detail = "; ".join(f"{f.deployment}: {f.kind}" for f in failures)
    if errors and all(e.kind is ErrorKind.RATE_LIMITED or e.kind is ErrorKind.OVERLOADED for e in errors):
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        return NoRouteAvailable(
            f"every deployment of {plan.model!r} is rate limited or overloaded ({detail})",
            attempts=failures,
            status=429,
            retry_after=min(waits) if waits else 1.0,
        )
    status = 504 if errors and all(e.kind is ErrorKind.TIMEOUT for e in errors) else 502
    return NoRouteAvailable(
        f"every deployment of {plan.model!r} failed ({detail})", attempts=failures, status=status
    )


class Executor:
    """Runs plans against the live backends."""

    def __init__(
        self, backends: Mapping[str, Backend], clock: Clock, policy: FailoverPolicy | None = None
    ) -> None:
        self._backends = backends
        self._clock = clock
        self._policy = policy or FailoverPolicy()

    def _backend(self, candidate: Candidate) -> Backend:
        backend = self._backends.get(candidate.deployment)
        if backend is None:
            raise BackendUnavailable(f"{candidate.deployment}: not running", deployment=candidate.deployment)
        return backend

    def _failed(self, attempt: Attempt, error: UpstreamError) -> None:
        attempt.duration = self._clock.monotonic() - attempt.started
        attempt.error = error
        if not self._policy.fails_over(error):
            raise error

    async def _run(self, plan: RoutePlan, call: Callable[[Backend, Candidate], Awaitable[T]]) -> Answer[T]:
        attempts: list[Attempt] = []
        for candidate in plan.candidates:
            attempt = Attempt(candidate.deployment, self._clock.monotonic())
            attempts.append(attempt)
            try:
                result = await call(self._backend(candidate), candidate)
            except UpstreamError as exc:
                self._failed(attempt, exc)
                continue
            attempt.duration = self._clock.monotonic() - attempt.started
            return Answer(result, candidate.deployment, attempts)
        raise _all_failed(plan, attempts)

    async def complete(self, plan: RoutePlan, request: InferenceRequest) -> Answer[Completion]:
        return await self._run(plan, lambda backend, c: backend.complete(request, c.timeouts))

    async def embed(self, plan: RoutePlan, request: EmbeddingRequest) -> Answer[EmbeddingResult]:
        return await self._run(plan, lambda backend, c: backend.embed(request, c.timeouts))

    async def open_stream(self, plan: RoutePlan, request: InferenceRequest) -> OpenStream:
        attempts: list[Attempt] = []
        for candidate in plan.candidates:
            attempt = Attempt(candidate.deployment, self._clock.monotonic())
            attempts.append(attempt)
            stream: AsyncIterator[StreamEvent] | None = None
            try:
                stream = self._backend(candidate).stream(request, candidate.timeouts)
                first = await anext(stream)
            except UpstreamError as exc:
                if stream is not None:
                    await _close(stream)
                self._failed(attempt, exc)
                continue
            except StopAsyncIteration:
                self._failed(
                    attempt,
                    UpstreamError(f"{candidate.deployment}: empty stream", deployment=candidate.deployment),
                )
                continue
            return OpenStream(candidate.deployment, attempts, first, stream)
        raise _all_failed(plan, attempts)


async def _close(stream: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    # The attempt already failed; an error while closing it cannot make that worse.
    with contextlib.suppress(HybridgateError):
        await aclose()

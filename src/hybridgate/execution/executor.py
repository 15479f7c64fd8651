"""The executor carries a RoutePlan out: attempt each candidate in order, fail over on errors
that another deployment may not have, and report what happened.

It is the only place that waits on backends. Failover decisions come from one policy object,
:class:`FailoverPolicy`; streaming fails over transparently only before the first event (after
that the API layer ends the stream with an explicit error event). Candidates the plan marks
``redact`` receive the redacted request, and their answers are restored before anyone sees
them. Every attempt is reported to an :class:`AttemptObserver` (live health statistics).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

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
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    StreamEnd,
    StreamEvent,
    Usage,
)

T = TypeVar("T")

# Errors that belong to the request, not the deployment: another deployment would say the same.
_RETURN_AS_IS = frozenset({ErrorKind.REJECTED, ErrorKind.CONTENT_POLICY})


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    """Which failures move on to the next candidate."""

    def fails_over(self, error: UpstreamError) -> bool:
        return error.kind not in _RETURN_AS_IS


class AttemptObserver(Protocol):
    """Receives every attempt's life: the live health statistics implement it."""

    def started(self, deployment: str) -> None: ...

    def succeeded(
        self, deployment: str, *, usage: Usage, ttft_s: float | None, duration_s: float
    ) -> None: ...

    def failed(self, deployment: str, kind: str) -> None: ...

    def finished(self, deployment: str) -> None: ...


class _NoObserver:
    def started(self, deployment: str) -> None:
        pass

    def succeeded(self, deployment: str, *, usage: Usage, ttft_s: float | None, duration_s: float) -> None:
        pass

    def failed(self, deployment: str, kind: str) -> None:
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


@dataclass(frozen=True, slots=True)
class Payload:
    """What to send: the request, and its redacted form for candidates that must not see it all."""

    request: InferenceRequest
    redacted: InferenceRequest | None = None
    restorer: Restoring | None = None

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
        await _close(self._rest)


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
        self,
        backends: Mapping[str, Backend],
        clock: Clock,
        observer: AttemptObserver | None = None,
        policy: FailoverPolicy | None = None,
    ) -> None:
        self._backends = backends
        self._clock = clock
        self._observer: AttemptObserver = observer or _NoObserver()
        self._policy = policy or FailoverPolicy()

    def _backend(self, candidate: Candidate) -> Backend:
        backend = self._backends.get(candidate.deployment)
        if backend is None:
            raise BackendUnavailable(f"{candidate.deployment}: not running", deployment=candidate.deployment)
        return backend

    def _failed(self, attempt: Attempt, error: UpstreamError) -> None:
        attempt.duration = self._clock.monotonic() - attempt.started
        attempt.error = error
        self._observer.failed(attempt.deployment, error.kind.value)
        if not self._policy.fails_over(error):
            raise error

    async def _run(self, plan: RoutePlan, call: Callable[[Backend, Candidate], Awaitable[T]]) -> Answer[T]:
        attempts: list[Attempt] = []
        observer = self._observer
        for candidate in plan.candidates:
            attempt = Attempt(candidate.deployment, self._clock.monotonic())
            attempts.append(attempt)
            observer.started(candidate.deployment)
            try:
                result = await call(self._backend(candidate), candidate)
            except UpstreamError as exc:
                self._failed(attempt, exc)
                continue
            finally:
                observer.finished(candidate.deployment)
            attempt.duration = self._clock.monotonic() - attempt.started
            return Answer(result, candidate.deployment, attempts)
        raise _all_failed(plan, attempts)

    async def complete(self, plan: RoutePlan, payload: Payload) -> Answer[Completion]:
        async def call(backend: Backend, candidate: Candidate) -> Completion:
            started = self._clock.monotonic()
            completion = await backend.complete(payload.for_candidate(candidate), candidate.timeouts)
            self._observer.succeeded(
                candidate.deployment,
                usage=completion.usage,
                ttft_s=None,
                duration_s=self._clock.monotonic() - started,
            )
            if candidate.redact and payload.restorer is not None:
                completion = payload.restorer.restore_completion(completion)
            return completion

        return await self._run(plan, call)

    async def embed(self, plan: RoutePlan, request: EmbeddingRequest) -> Answer[EmbeddingResult]:
        return await self._run(plan, lambda backend, c: backend.embed(request, c.timeouts))

    async def open_stream(self, plan: RoutePlan, payload: Payload) -> OpenStream:
        attempts: list[Attempt] = []
        for candidate in plan.candidates:
            attempt = Attempt(candidate.deployment, self._clock.monotonic())
            attempts.append(attempt)
            stream: AsyncIterator[StreamEvent] | None = None
            try:
                stream = self._observed(candidate, payload, attempt.started)
                first = await anext(stream)
            except UpstreamError as exc:
                if stream is not None:
                    await _close(stream)
                self._failed(attempt, exc)
                continue
            except StopAsyncIteration:
                error = UpstreamError(
                    f"{candidate.deployment}: empty stream", deployment=candidate.deployment
                )
                self._failed(attempt, error)
                continue
            attempt.duration = self._clock.monotonic() - attempt.started
            return OpenStream(candidate.deployment, attempts, first, stream)
        raise _all_failed(plan, attempts)

    async def _observed(
        self, candidate: Candidate, payload: Payload, started: float
    ) -> AsyncIterator[StreamEvent]:
        """The candidate's stream, restored if it was redacted, with its life reported."""
        observer = self._observer
        deployment = candidate.deployment
        observer.started(deployment)
        restorer = payload.restorer.stream_restorer() if candidate.redact and payload.restorer else None
        ttft: float | None = None
        try:
            stream = self._backend(candidate).stream(payload.for_candidate(candidate), candidate.timeouts)
            try:
                async for event in stream:
                    if ttft is None:
                        ttft = self._clock.monotonic() - started
                    if isinstance(event, StreamEnd):
                        duration = self._clock.monotonic() - started
                        observer.succeeded(deployment, usage=event.usage, ttft_s=ttft, duration_s=duration)
                    if restorer is None:
                        yield event
                    else:
                        for restored in restorer.feed(event):
                            yield restored
            finally:
                await _close(stream)
        except UpstreamError as exc:
            observer.failed(deployment, exc.kind.value)
            if restorer is not None:
                # Release what the restorer holds (a partial placeholder) before the error event.
                for restored in restorer.flush():
                    yield restored
            raise
        finally:
            observer.finished(deployment)


async def _close(stream: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    # The attempt already failed or finished; an error while closing it cannot make that worse.
    with contextlib.suppress(HybridgateError):
        await aclose()

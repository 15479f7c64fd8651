"""Streamed requests: failover before the first token, hedging on the first token, and
continuation after a failure mid-answer.

- **Before the first event** the stream fails over exactly like a whole answer (the retry
  policy, the budget, breakers), so the client never sees an upstream that failed early.
- **Hedging**: for classes that allow it, if the first candidate has produced no event after its
  predicted p95 time to first token, the next candidate is asked too; the first to produce an
  event wins and the other stream is closed at once.
- **After tokens were sent** (a cut, a stall past the idle deadline, a broken event), the answer
  continues on the next candidate: the conversation plus the partial answer as an assistant
  prefix where the target continues a trailing assistant turn (``assistant_prefill``), else with
  a request to continue where it stopped. If no candidate can continue (none left, a tool call
  was being streamed, or the target would need the request redacted), the stream ends with the
  error: a truncated answer is never presented as complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

from hybridgate.errors import HybridgateError, UpstreamError
from hybridgate.execution.executor import (
    Attempt,
    AttemptTrace,
    Executor,
    Payload,
    close_stream,
    raise_returned_as_is,
)
from hybridgate.policy.planner import Candidate, RoutePlan
from hybridgate.types import (
    InferenceRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)

CONTINUE_PROMPT = "Continue exactly where your previous answer stopped. Do not repeat anything."


@dataclasses.dataclass(slots=True)
class OpenStream:
    """A stream whose first event has arrived: the HTTP status can be committed now."""

    deployment: str
    attempts: list[Attempt]
    first: StreamEvent
    _rest: AsyncIterator[StreamEvent] = dataclasses.field(repr=False)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        yield self.first
        async for event in self._rest:
            yield event

    async def aclose(self) -> None:
        await close_stream(self._rest)


def continuation_request(
    request: InferenceRequest, partial: str, *, prefill: bool, produced: int
) -> InferenceRequest:
    """``request`` continued after ``partial`` (the text the client already has)."""
    messages = (*request.messages, Message.of_text("assistant", partial))
    if not prefill:
        messages = (*messages, Message.of_text("user", CONTINUE_PROMPT))
    max_tokens = None if request.max_tokens is None else max(1, request.max_tokens - produced)
    return dataclasses.replace(request, messages=messages, max_tokens=max_tokens)


class StreamExecutor:
    """Opens and keeps alive the streams of plans, on an :class:`Executor`'s backends and policy."""

    def __init__(self, executor: Executor) -> None:
        self.ex = executor

    async def _observed(
        self,
        candidate: Candidate,
        request: InferenceRequest,
        payload: Payload,
        attempt: Attempt,
        span: AttemptTrace | None,
    ) -> AsyncIterator[StreamEvent]:
        """The candidate's stream, restored if it was redacted, with its life reported (and its
        span ended when it ends: completed, failed, or closed before its end)."""
        ex = self.ex
        started = attempt.started
        observer = ex.observer
        deployment = candidate.deployment
        observer.started(deployment)
        restorer = payload.restorer.stream_restorer() if candidate.redact and payload.restorer else None
        ttft: float | None = None
        end: StreamEnd | None = None
        try:
            stream = ex.backend(candidate).stream(request, candidate.timeouts)
            try:
                async for event in stream:
                    if ttft is None:
                        ttft = ex.clock.monotonic() - started
                    if isinstance(event, StreamEnd):
                        end = event
                        duration = ex.clock.monotonic() - started
                        observer.succeeded(
                            deployment,
                            usage=event.usage,
                            ttft_s=ttft,
                            duration_s=duration,
                            backup=attempt.hedge,
                            late=attempt.late,
                        )
                    if restorer is None:
                        yield event
                    else:
                        for restored in restorer.feed(event):
                            yield restored
            finally:
                await close_stream(stream)
        except UpstreamError as exc:
            if attempt.error is None:  # also a failure after the first event (the stream was cut)
                attempt.error = exc
            observer.failed(deployment, exc.kind.value, exc.retry_after)
            if restorer is not None:
                # Release what the restorer holds (a partial placeholder) before the error.
                for restored in restorer.flush():
                    yield restored
            raise
        finally:
            observer.finished(deployment)
            if end is None and attempt.error is None:
                attempt.cancelled = True  # closed before its end: a hedge lost, the client left
            if span is not None:
                span.end(attempt, end.usage if end else None, end.finish_reason if end else None)

    async def _first(
        self, candidate: Candidate, request: InferenceRequest, payload: Payload, attempt: Attempt
    ) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        """Start ``candidate``'s stream and wait for its first event (failure recorded on ``attempt``)."""
        tracer = payload.tracer
        span = tracer.attempt(attempt) if tracer is not None else None
        stream = self._observed(candidate, request, payload, attempt, span)
        try:
            if span is None:
                first = await anext(stream)
            else:
                with span.active():  # the upstream request is sent now: it carries this span
                    first = await anext(stream)
        except UpstreamError as exc:
            attempt.error = exc
            attempt.duration = self.ex.clock.monotonic() - attempt.started
            await close_stream(stream)
            raise
        except StopAsyncIteration:
            error = UpstreamError(f"{candidate.deployment}: empty stream", deployment=candidate.deployment)
            attempt.error = error
            raise error from None
        except asyncio.CancelledError:
            attempt.cancelled = True
            attempt.duration = self.ex.clock.monotonic() - attempt.started
            raise
        attempt.duration = self.ex.clock.monotonic() - attempt.started
        return stream, first

    async def open(self, plan: RoutePlan, payload: Payload) -> OpenStream:
        self.ex.budget.record_request()
        attempts: list[Attempt] = []
        start = 0
        if plan.hedge is not None and len(plan.candidates) > 1:
            opened = await self._hedged(plan, payload, attempts)
            if opened is not None:
                return opened
            start = len(attempts)
        stream, first, index = await self._failover(plan, payload, attempts, start)
        rest = self._continued(plan, payload, stream, index, attempts, first)
        return OpenStream(plan.candidates[index].deployment, attempts, first, rest)

    async def _failover(
        self, plan: RoutePlan, payload: Payload, attempts: list[Attempt], start: int
    ) -> tuple[AsyncIterator[StreamEvent], StreamEvent, int]:
        """Candidates from ``start`` until one produces a first event (the retry policy decides)."""

        async def try_one(
            candidate: Candidate, attempt: Attempt
        ) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
            return await self._first(candidate, payload.for_candidate(candidate), payload, attempt)

        (stream, first), index = await self.ex.walk(plan, try_one, attempts, start)
        return stream, first, index

    async def _hedged(self, plan: RoutePlan, payload: Payload, attempts: list[Attempt]) -> OpenStream | None:
        """The first two candidates raced on their first event; None when both failed."""
        ex = self.ex
        assert plan.hedge is not None
        pair = (plan.candidates[0], plan.candidates[1])
        if not ex.observer.admit(pair[0].deployment):
            ex.counters.breaker_skips += 1
            return None
        tasks: list[asyncio.Task[tuple[AsyncIterator[StreamEvent], StreamEvent]]] = []

        def launch(candidate: Candidate, hedge: bool) -> None:
            attempt = Attempt(
                candidate.deployment, ex.clock.monotonic(), hedge=hedge, reason="hedge" if hedge else ""
            )
            attempts.append(attempt)
            request = payload.for_candidate(candidate)
            tasks.append(asyncio.ensure_future(self._first(candidate, request, payload, attempt)))

        launch(pair[0], False)
        timer = asyncio.ensure_future(ex.clock.sleep(plan.hedge.first_token_s))
        try:
            await asyncio.wait({tasks[0], timer}, return_when=asyncio.FIRST_COMPLETED)
            # The budget first: an admitted half-open trial must be used, not held by nobody.
            if not tasks[0].done() and ex.budget.try_spend() and ex.observer.admit(pair[1].deployment):
                ex.counters.hedges += 1
                attempts[0].late = True
                launch(pair[1], True)
            winner = await _first_success(tasks)
            if winner is not None:
                ex.report_cut_short(tasks, attempts, pair, streamed=True)
        finally:
            timer.cancel()
        for index, task in enumerate(tasks):
            if winner is not None and index == winner:
                continue
            await _discard(task)
        if winner is None:
            raise_returned_as_is(attempts)
            return None
        if winner == 1:
            ex.counters.hedges_won += 1
        stream, first = tasks[winner].result()
        rest = self._continued(plan, payload, stream, winner, attempts, first)
        return OpenStream(pair[winner].deployment, attempts, first, rest)

    async def _continued(
        self,
        plan: RoutePlan,
        payload: Payload,
        stream: AsyncIterator[StreamEvent],
        index: int,
        attempts: list[Attempt],
        first: StreamEvent,
    ) -> AsyncIterator[StreamEvent]:
        """The rest of the answer; after a failure mid-answer, continued on the next candidate."""
        sent: list[str] = [first.text] if isinstance(first, TextDelta) else []
        tools = isinstance(first, ToolCallDelta)
        produced_before = 0
        current = stream
        try:
            while True:
                try:
                    async for event in current:
                        if isinstance(event, TextDelta):
                            sent.append(event.text)
                        elif isinstance(event, ToolCallDelta):
                            tools = True
                        elif produced_before:
                            usage = event.usage
                            event = StreamEnd(
                                event.finish_reason,
                                Usage(
                                    usage.prompt_tokens,
                                    usage.completion_tokens + produced_before,
                                    usage.cached_prompt_tokens,
                                ),
                            )
                        yield event
                    return
                except UpstreamError as exc:
                    await close_stream(current)
                    if tools or not "".join(sent):
                        raise
                    resumed = await self._resume(
                        plan, payload, index, "".join(sent), len(sent), attempts, exc.kind.value
                    )
                    if resumed is None:
                        raise exc from None
                    current, index, first_again = resumed
                    produced_before = len(sent)
                    self.ex.counters.continuations += 1
                    if isinstance(first_again, TextDelta):
                        sent.append(first_again.text)
                    yield first_again
        finally:
            await close_stream(current)

    async def _resume(
        self,
        plan: RoutePlan,
        payload: Payload,
        after: int,
        partial: str,
        produced: int,
        attempts: list[Attempt],
        cause: str,
    ) -> tuple[AsyncIterator[StreamEvent], int, StreamEvent] | None:
        """The next candidate that can continue the answer, with its first event; None if none can."""
        ex = self.ex
        for j in range(after + 1, len(plan.candidates)):
            if len(attempts) >= ex.retry.max_attempts:
                return None
            candidate = plan.candidates[j]
            backend = ex.backends.get(candidate.deployment)
            # A candidate that may only see the redacted request cannot be given the real partial.
            if backend is None or candidate.redact or not ex.observer.admit(candidate.deployment):
                continue
            request = continuation_request(
                payload.request, partial, prefill=backend.capabilities.assistant_prefill, produced=produced
            )
            attempt = Attempt(candidate.deployment, ex.clock.monotonic(), reason="continuation", after=cause)
            attempts.append(attempt)
            try:
                stream, first = await self._first(candidate, request, payload, attempt)
            except UpstreamError:
                continue
            return stream, j, first
        return None


async def _first_success(
    tasks: list[asyncio.Task[tuple[AsyncIterator[StreamEvent], StreamEvent]]],
) -> int | None:
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is None:
                return tasks.index(task)
    return None


async def _discard(task: asyncio.Task[tuple[AsyncIterator[StreamEvent], StreamEvent]]) -> None:
    """Cancel a losing hedge (or close its stream if it already started)."""
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, HybridgateError):
            await task
        return
    if not task.cancelled() and task.exception() is None:
        await close_stream(task.result()[0])

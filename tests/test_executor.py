"""The executor's decisions — retries, failover, budget, hedging, mid-stream continuation — on a
ManualClock with scripted backends (test doubles of the Backend protocol; the same behaviours
against real servers are in tests/test_resilience_e2e.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from hybridgate.backends.base import Capabilities, ProbeResult
from hybridgate.clock import ManualClock
from hybridgate.config.resilience import RetryConfig
from hybridgate.errors import (
    NoRouteAvailable,
    UpstreamConnectionError,
    UpstreamContentPolicy,
    UpstreamContextLength,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from hybridgate.execution.executor import Executor, Payload
from hybridgate.execution.retry import RetryBudget
from hybridgate.execution.streams import CONTINUE_PROMPT, StreamExecutor
from hybridgate.policy.explain import Budget, Explanation
from hybridgate.policy.governance import DataDecision
from hybridgate.policy.planner import Candidate, HedgeSpec, RoutePlan
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Timeouts,
    ToolCallDelta,
    Usage,
)

REQUEST = InferenceRequest(model="m", messages=(Message.of_text("user", "hi"),), max_tokens=20)


@dataclass
class Scripted:
    """A backend that answers from a script, one entry per call; records what it was sent."""

    name: str
    script: list[object] = field(default_factory=list)
    context_window: int = 8192
    prefill: bool = True
    calls: list[InferenceRequest] = field(default_factory=list)
    cancelled: int = 0

    def __post_init__(self) -> None:
        self.capabilities = Capabilities(
            placement="cloud", region="us", context_window=self.context_window, assistant_prefill=self.prefill
        )

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _next(self) -> object:
        return (
            self.script.pop(0)
            if self.script
            else Completion(id="x", model=self.name, text=f"from {self.name}")
        )

    async def complete(self, request: InferenceRequest, timeouts: Timeouts) -> Completion:
        self.calls.append(request)
        step = self._next()
        if isinstance(step, asyncio.Event):
            try:
                await step.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return Completion(id="x", model=self.name, text=f"late {self.name}")
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, Completion)
        return step

    async def stream(self, request: InferenceRequest, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        self.calls.append(request)
        step = self._next()
        try:
            if isinstance(step, BaseException):
                raise step
            events = (
                step
                if isinstance(step, list)
                else [TextDelta(f"{self.name} "), StreamEnd("stop", Usage(3, 1))]
            )
            for event in events:
                if isinstance(event, asyncio.Event):
                    await event.wait()
                elif isinstance(event, BaseException):
                    raise event
                else:
                    assert isinstance(event, TextDelta | ToolCallDelta | StreamEnd)
                    yield event
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def embed(self, request: EmbeddingRequest, timeouts: Timeouts) -> EmbeddingResult:
        raise NotImplementedError

    async def probe(self) -> ProbeResult:
        return ProbeResult(True, 0.0)


@dataclass
class Observer:
    closed: set[str] = field(default_factory=set)
    failures: list[tuple[str, str]] = field(default_factory=list)
    cut_short_by: list[tuple[str, float]] = field(default_factory=list)
    succeeded_by: list[tuple[str, bool, bool]] = field(default_factory=list)

    def admit(self, deployment: str) -> bool:
        return deployment not in self.closed

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
        self.succeeded_by.append((deployment, backup, late))

    def failed(self, deployment: str, kind: str, retry_after: float | None = None) -> None:
        self.failures.append((deployment, kind))

    def cut_short(
        self,
        deployment: str,
        over_s: float,
        *,
        backup: bool = False,
        elapsed_s: float | None = None,
        predicted_wait_s: float = 0.0,
    ) -> None:
        self.cut_short_by.append((deployment, over_s))
        assert elapsed_s is not None
        assert elapsed_s >= 0
        assert backup == (deployment == "b"), "in these tests b is the backup"

    def finished(self, deployment: str) -> None:
        pass


def plan(names: Sequence[str], hedge_after: float | None = None) -> RoutePlan:
    timeouts = Timeouts(connect=1, first_token=10, idle=10, total=30)
    explanation = Explanation(
        model="m",
        workload_class="c",
        placement="cloud-first",
        budget=Budget(1000, 2000, 500),
        data=DataDecision(False, True, False, "", None),
        verdicts=(),
        order=tuple(names),
        summary="",
    )
    # With a hedge, every candidate's predicted p95 (to its first event, and to its answer) is
    # the hedge delay.
    p95 = hedge_after
    candidates = [
        Candidate(n, "cloud", timeouts, predicted_p95_s=p95, predicted_ttft_p95_s=p95) for n in names
    ]
    hedge = HedgeSpec(hedge_after, hedge_after) if hedge_after is not None else None
    return RoutePlan("m", "c", 50, candidates, explanation, hedge)


def executor(
    clock: ManualClock,
    *backends: Scripted,
    observer: Observer | None = None,
    retry: RetryConfig | None = None,
) -> Executor:
    return Executor({b.name: b for b in backends}, clock, observer or Observer(), retry, random.Random(1))


async def drive(clock: ManualClock, task: asyncio.Future[Any], step: float = 0.05, limit: int = 400) -> None:
    """Advance the manual clock until ``task`` is done (each step lets the loop run)."""
    for _ in range(limit):
        for _ in range(5):
            await asyncio.sleep(0)
        if task.done():
            return
        clock.advance(step)
    raise AssertionError("the task did not finish")


# ----------------------------------------------------------------------------- whole answers


async def test_server_error_is_retried_once_on_the_same_deployment() -> None:
    clock = ManualClock()
    a, b = Scripted("a", [UpstreamServerError("500", deployment="a")]), Scripted("b")
    ex = executor(clock, a, b)
    task = asyncio.ensure_future(ex.complete(plan(["a", "b"]), Payload(REQUEST)))
    await drive(clock, task)
    answer = task.result()
    assert answer.deployment == "a"
    assert (len(a.calls), len(b.calls)) == (2, 0)
    assert ex.counters.retries == 1


async def test_a_second_server_error_fails_over() -> None:
    clock = ManualClock()
    errors = [UpstreamServerError("500", deployment="a"), UpstreamServerError("500", deployment="a")]
    a, b = Scripted("a", list(errors)), Scripted("b")
    task = asyncio.ensure_future(executor(clock, a, b).complete(plan(["a", "b"]), Payload(REQUEST)))
    await drive(clock, task)
    assert task.result().deployment == "b"
    assert len(a.calls) == 2


async def test_timeout_fails_over_without_asking_the_silent_deployment_again() -> None:
    clock = ManualClock()
    a, b = Scripted("a", [UpstreamTimeout("slow", deployment="a")]), Scripted("b")
    answer = await executor(clock, a, b).complete(plan(["a", "b"]), Payload(REQUEST))
    assert answer.deployment == "b"
    assert len(a.calls) == 1


async def test_connection_reset_is_retried_once() -> None:
    clock = ManualClock()
    a = Scripted("a", [UpstreamConnectionError("reset", deployment="a")])
    task = asyncio.ensure_future(executor(clock, a).complete(plan(["a"]), Payload(REQUEST)))
    await drive(clock, task)
    assert task.result().deployment == "a"
    assert len(a.calls) == 2


async def test_rate_limit_goes_elsewhere_at_once() -> None:
    clock = ManualClock()
    a, b = Scripted("a", [UpstreamRateLimited("429", deployment="a", retry_after=30)]), Scripted("b")
    answer = await executor(clock, a, b).complete(plan(["a", "b"]), Payload(REQUEST))
    assert answer.deployment == "b"
    assert clock.monotonic() == 1000.0, "no waiting when another deployment can answer"


async def test_rate_limit_on_the_last_deployment_waits_its_retry_after() -> None:
    clock = ManualClock()
    a = Scripted("a", [UpstreamRateLimited("429", deployment="a", retry_after=2.0)])
    task = asyncio.ensure_future(executor(clock, a).complete(plan(["a"]), Payload(REQUEST)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert clock.pending_sleepers == 1
    assert len(a.calls) == 1
    clock.advance(1.9)
    await asyncio.sleep(0)
    assert len(a.calls) == 1, "not before the Retry-After"
    clock.advance(0.2)
    await drive(clock, task)
    assert len(a.calls) == 2


async def test_rate_limit_longer_than_the_budget_is_a_429() -> None:
    clock = ManualClock()
    a = Scripted("a", [UpstreamRateLimited("429", deployment="a", retry_after=600)])
    with pytest.raises(NoRouteAvailable) as info:
        await executor(clock, a).complete(plan(["a"]), Payload(REQUEST))
    assert info.value.status == 429
    assert info.value.retry_after == 600
    assert len(a.calls) == 1, "never hammered"


async def test_context_length_skips_to_a_larger_window() -> None:
    clock = ManualClock()
    a = Scripted("a", [UpstreamContextLength("too long", deployment="a")], context_window=4096)
    b = Scripted("b", context_window=4096)
    c = Scripted("c", context_window=32768)
    answer = await executor(clock, a, b, c).complete(plan(["a", "b", "c"]), Payload(REQUEST))
    assert answer.deployment == "c"
    assert (len(a.calls), len(b.calls)) == (1, 0)


async def test_content_policy_is_returned_as_is() -> None:
    clock = ManualClock()
    a, b = Scripted("a", [UpstreamContentPolicy("refused", deployment="a")]), Scripted("b")
    with pytest.raises(UpstreamContentPolicy):
        await executor(clock, a, b).complete(plan(["a", "b"]), Payload(REQUEST))
    assert b.calls == []


async def test_open_breaker_is_skipped() -> None:
    clock = ManualClock()
    a, b = Scripted("a"), Scripted("b")
    ex = executor(clock, a, b, observer=Observer(closed={"a"}))
    answer = await ex.complete(plan(["a", "b"]), Payload(REQUEST))
    assert answer.deployment == "b"
    assert a.calls == []
    assert ex.counters.breaker_skips == 1


async def test_spent_retry_budget_fails_over_instead_of_retrying() -> None:
    clock = ManualClock()
    a, b = Scripted("a", [UpstreamServerError("500", deployment="a")]), Scripted("b")
    ex = executor(clock, a, b, retry=RetryConfig(retry_budget_ratio=0.0, retry_budget_min=0))
    answer = await ex.complete(plan(["a", "b"]), Payload(REQUEST))
    assert answer.deployment == "b"
    assert len(a.calls) == 1
    assert ex.budget.denied == 1


def test_retry_budget_is_a_share_of_recent_requests() -> None:
    clock = ManualClock()
    budget = RetryBudget(
        RetryConfig(retry_budget_ratio=0.1, retry_budget_window_s=10, retry_budget_min=0), clock
    )
    for _ in range(50):
        budget.record_request()
    assert sum(budget.try_spend() for _ in range(10)) == 5
    clock.advance(11)  # the window has passed: no recent requests, no budget
    assert not budget.try_spend()
    for _ in range(10):
        budget.record_request()
    assert budget.try_spend()


# ----------------------------------------------------------------------------- hedging


async def test_hedge_after_the_predicted_answer_time() -> None:
    clock = ManualClock()
    gate = asyncio.Event()
    a, b = Scripted("a", [gate]), Scripted("b")
    ex = executor(clock, a, b)
    task = asyncio.ensure_future(ex.complete(plan(["a", "b"], hedge_after=0.5), Payload(REQUEST)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert b.calls == [], "no hedge before its time"
    clock.advance(0.5)
    await drive(clock, task)
    answer = task.result()
    assert answer.deployment == "b"
    assert [x.hedge for x in answer.attempts] == [False, True]
    assert a.cancelled == 1, "the slower attempt is cancelled"
    assert (ex.counters.hedges, ex.counters.hedges_won) == (1, 1)


async def test_a_hedged_attempt_that_lost_is_reported_with_how_far_past_its_p95_it_was() -> None:
    """The loser's latency is censored, not dropped: the predictor must not learn only winners."""
    clock = ManualClock()
    slow, backup = asyncio.Event(), asyncio.Event()
    a, b = Scripted("a", [slow]), Scripted("b", [backup])
    observer = Observer()
    ex = executor(clock, a, b, observer=observer)
    task = asyncio.ensure_future(ex.complete(plan(["a", "b"], hedge_after=0.5), Payload(REQUEST)))
    for _ in range(5):
        await asyncio.sleep(0)
    clock.advance(0.5)
    for _ in range(5):
        await asyncio.sleep(0)
    assert b.calls, "hedged"
    clock.advance(0.25)
    backup.set()
    await drive(clock, task)
    assert task.result().deployment == "b"
    ((deployment, over_s),) = observer.cut_short_by
    assert deployment == "a"
    assert over_s == pytest.approx(0.25)
    assert observer.succeeded_by == [("b", True, False)], "the backup won"


async def test_a_backup_that_lost_is_reported_too() -> None:
    clock = ManualClock()
    slow, backup = asyncio.Event(), asyncio.Event()
    a, b = Scripted("a", [slow]), Scripted("b", [backup])
    observer = Observer()
    ex = executor(clock, a, b, observer=observer)
    task = asyncio.ensure_future(ex.complete(plan(["a", "b"], hedge_after=0.5), Payload(REQUEST)))
    for _ in range(5):
        await asyncio.sleep(0)
    clock.advance(0.5)
    for _ in range(5):
        await asyncio.sleep(0)
    clock.advance(0.1)
    slow.set()  # the first answers after all; the backup is cancelled 0.1 s after it was sent
    await drive(clock, task)
    assert task.result().deployment == "a"
    assert b.cancelled == 1
    assert observer.succeeded_by == [("a", False, True)], "a won, late: its hedge had been sent"
    ((deployment, over_s),) = observer.cut_short_by
    assert deployment == "b"
    assert over_s == pytest.approx(0.1 - 0.5), "0.4 s short of its p95: the stats will not count it"


async def test_no_hedge_when_the_first_answers_in_time() -> None:
    clock = ManualClock()
    a, b = Scripted("a"), Scripted("b")
    ex = executor(clock, a, b)
    answer = await ex.complete(plan(["a", "b"], hedge_after=0.5), Payload(REQUEST))
    assert answer.deployment == "a"
    assert b.calls == []
    assert ex.counters.hedges == 0


# ----------------------------------------------------------------------------- streams


async def collect(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in stream]


async def test_stream_fails_over_before_its_first_token() -> None:
    clock = ManualClock()
    a, b = Scripted("a", [UpstreamConnectionError("refused", deployment="a")] * 2), Scripted("b")
    task = asyncio.ensure_future(
        StreamExecutor(executor(clock, a, b)).open(plan(["a", "b"]), Payload(REQUEST))
    )
    await drive(clock, task)  # a connection error is retried once after a short backoff
    opened = task.result()
    assert opened.deployment == "b"
    assert len(a.calls) == 2
    events = await collect(opened.__aiter__())
    assert events[0] == TextDelta("b ")


async def test_stream_cut_mid_answer_continues_on_the_next_deployment() -> None:
    clock = ManualClock()
    cut = [TextDelta("The answer"), TextDelta(" is"), UpstreamConnectionError("cut", deployment="a")]
    a = Scripted("a", [cut])
    b = Scripted("b", [[TextDelta(" forty-two."), StreamEnd("stop", Usage(20, 3))]], prefill=True)
    ex = executor(clock, a, b)
    opened = await StreamExecutor(ex).open(plan(["a", "b"]), Payload(REQUEST))
    events = await collect(opened.__aiter__())
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "The answer is forty-two."
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.usage.completion_tokens == 3 + 2, "the tokens of both parts"
    continued = b.calls[0]
    assert continued.messages[-1].role == "assistant"
    assert continued.messages[-1].text == "The answer is"
    assert continued.max_tokens == 18
    assert ex.counters.continuations == 1


async def test_continuation_asks_to_continue_when_prefill_is_not_supported() -> None:
    clock = ManualClock()
    a = Scripted("a", [[TextDelta("Half"), UpstreamTimeout("stall", deployment="a")]])
    b = Scripted("b", prefill=False)
    opened = await StreamExecutor(executor(clock, a, b)).open(plan(["a", "b"]), Payload(REQUEST))
    await collect(opened.__aiter__())
    assert [m.role for m in b.calls[0].messages[-2:]] == ["assistant", "user"]
    assert b.calls[0].messages[-1].text == CONTINUE_PROMPT


async def test_no_continuation_ends_the_stream_with_the_error() -> None:
    clock = ManualClock()
    a = Scripted("a", [[TextDelta("Half"), UpstreamConnectionError("cut", deployment="a")]])
    opened = await StreamExecutor(executor(clock, a)).open(plan(["a"]), Payload(REQUEST))
    with pytest.raises(UpstreamConnectionError):
        await collect(opened.__aiter__())


async def test_a_cut_tool_call_is_not_continued() -> None:
    clock = ManualClock()
    a = Scripted(
        "a", [[ToolCallDelta(0, "call_1", "f", '{"x":'), UpstreamConnectionError("cut", deployment="a")]]
    )
    b = Scripted("b")
    opened = await StreamExecutor(executor(clock, a, b)).open(plan(["a", "b"]), Payload(REQUEST))
    with pytest.raises(UpstreamConnectionError):
        await collect(opened.__aiter__())
    assert b.calls == []


async def test_stream_hedge_takes_the_first_token_and_closes_the_other() -> None:
    clock = ManualClock()
    gate = asyncio.Event()
    a = Scripted("a", [[gate, TextDelta("slow"), StreamEnd("stop", Usage())]])
    b = Scripted("b")
    observer = Observer()
    ex = executor(clock, a, b, observer=observer)
    task = asyncio.ensure_future(StreamExecutor(ex).open(plan(["a", "b"], hedge_after=0.3), Payload(REQUEST)))
    for _ in range(5):
        await asyncio.sleep(0)
    clock.advance(0.3)
    await drive(clock, task)
    opened = task.result()
    assert opened.deployment == "b"
    assert a.cancelled == 1
    assert ex.counters.hedges_won == 1
    assert [d for d, _ in observer.cut_short_by] == ["a"]

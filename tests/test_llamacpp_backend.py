"""The llamacpp backend against real llama.cpp in a real worker process. Nothing is mocked.

Timers (deadlines, restart backoff) run on a ManualClock and are moved by hand; the only waits
are on real processes (loading a model, dying), polled with short awaits in bounded loops.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest

from hybridgate.backends.base import Backend
from hybridgate.backends.llamacpp import LlamaCppBackend
from hybridgate.backends.registry import BackendContext, backend_factory
from hybridgate.clock import ManualClock
from hybridgate.errors import (
    BackendCrashed,
    BackendOverloaded,
    BackendUnavailable,
    ErrorKind,
    UnsupportedFeature,
    UpstreamContextLength,
    UpstreamTimeout,
)
from hybridgate.localmodel.embedding import cosine
from hybridgate.types import (
    EmbeddingRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Timeouts,
    Tool,
    ToolChoice,
)
from tests.conftest_local import (
    LONG_CONTEXT,
    LONG_GENERATION,
    chat,
    deployment,
    process_exists,
    running_backend,
    wait_until,
    worker_children,
)

TIMEOUTS = Timeouts()


@pytest.fixture(scope="module")
async def backend(models_dir: Path) -> AsyncIterator[LlamaCppBackend]:
    """One shared chat backend for the tests that leave it idle."""
    async with running_backend(models_dir / "tiny.gguf", max_queue=4) as started:
        yield started


@pytest.fixture
async def busy_backend(models_dir: Path) -> AsyncIterator[tuple[LlamaCppBackend, ManualClock]]:
    """A backend with a one-place queue, a manual clock and room for long generations."""
    clock = ManualClock()
    async with running_backend(models_dir / "tiny.gguf", clock, max_queue=1, n_ctx=LONG_CONTEXT) as started:
        yield started, clock


async def long_running(
    backend: LlamaCppBackend, timeouts: Timeouts = TIMEOUTS
) -> AsyncGenerator[StreamEvent]:
    """A stream that is running in the worker (its first token has arrived) when this returns."""
    stream = backend.stream(chat("tell me everything", LONG_GENERATION), timeouts)
    assert isinstance(await anext(stream), TextDelta)
    return stream


async def next_event(stream: AsyncIterator[StreamEvent]) -> StreamEvent:
    return await anext(stream)


# --------------------------------------------------------------------------- basics


def test_factory_is_registered_and_satisfies_the_protocol(models_dir: Path) -> None:
    made = backend_factory("llamacpp")("tiny", deployment(models_dir / "tiny.gguf"), BackendContext())
    assert isinstance(made, LlamaCppBackend)
    assert isinstance(made, Backend)
    assert made.capabilities.placement == "local"
    assert made.capabilities.context_window == 1024
    assert made.stats.state == "stopped"


async def test_stream_yields_real_tokens_then_end_with_usage(backend: LlamaCppBackend) -> None:
    events = [event async for event in backend.stream(chat("Hello there", max_tokens=12), TIMEOUTS)]

    deltas, end = events[:-1], events[-1]
    assert len(deltas) == 12
    assert all(isinstance(d, TextDelta) and d.text for d in deltas)
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == "length"
    assert end.usage.completion_tokens == 12
    assert end.usage.prompt_tokens > 3
    assert backend.stats.warm
    assert backend.stats.load_time_s is not None


async def test_complete_returns_text_and_usage(backend: LlamaCppBackend) -> None:
    completion = await backend.complete(chat("Write a sentence", max_tokens=16), TIMEOUTS)

    assert completion.text.strip()
    assert completion.model == "tiny.gguf"
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 16


async def test_same_seed_same_answer(backend: LlamaCppBackend) -> None:
    request = chat("Say something", max_tokens=10, temperature=1.0, extra={"seed": 7})
    first = await backend.complete(request, TIMEOUTS)
    second = await backend.complete(request, TIMEOUTS)
    assert first.text == second.text


async def test_unicode_and_control_characters_do_not_crash_the_worker(backend: LlamaCppBackend) -> None:
    pid = backend.stats.pid
    prompt = "héllo 🎉🦙 日本語 עברית e\u0301 \x00\x07 \u200b\U0010ffff"

    completion = await backend.complete(chat(prompt, max_tokens=8), TIMEOUTS)

    assert completion.usage.completion_tokens == 8
    assert (backend.stats.pid, backend.stats.restarts) == (pid, 0)


async def test_prompt_longer_than_the_context_is_a_context_length_error(backend: LlamaCppBackend) -> None:
    with pytest.raises(UpstreamContextLength) as caught:
        await backend.complete(chat("word " * 2000), TIMEOUTS)
    assert caught.value.deployment == "tiny"
    # the worker survived it
    assert (await backend.complete(chat("again", max_tokens=2), TIMEOUTS)).usage.completion_tokens == 2


async def test_a_forced_tool_call_streams_as_tool_call_deltas(backend: LlamaCppBackend) -> None:
    weather = Tool(
        name="get_weather",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Berlin"]}},
            "required": ["city"],
        },
    )
    request = chat(
        "Weather?", max_tokens=64, tools=(weather,), tool_choice=ToolChoice("required", "get_weather")
    )

    completion = await backend.complete(request, TIMEOUTS)

    assert completion.finish_reason == "tool_calls"
    (call,) = completion.tool_calls
    assert call.name == "get_weather"
    assert json.loads(call.arguments)["city"] in ("Paris", "Berlin")


async def test_probe_runs_a_real_inference(backend: LlamaCppBackend) -> None:
    result = await backend.probe()
    assert result.ok, result.detail
    assert result.detail.startswith("inference")


async def test_embed_on_a_chat_model_is_unsupported(backend: LlamaCppBackend) -> None:
    with pytest.raises(UnsupportedFeature):
        await backend.embed(EmbeddingRequest(model="tiny", inputs=("x",)), TIMEOUTS)


# --------------------------------------------------------------------------- queue, cancel, timeouts


async def test_closing_a_stream_cancels_it_and_frees_the_slot_at_once(
    busy_backend: tuple[LlamaCppBackend, ManualClock],
) -> None:
    backend, _ = busy_backend
    first = await long_running(backend)
    second = backend.stream(chat("next", max_tokens=6), TIMEOUTS)
    second_token = asyncio.create_task(next_event(second))
    await wait_until(lambda: backend.stats.queued == 1)

    await first.aclose()  # a client disconnect

    assert (backend.stats.in_flight, backend.stats.queued) == (1, 0)  # the next one runs now
    assert isinstance(await second_token, TextDelta)
    rest = [event async for event in second]
    assert isinstance(rest[-1], StreamEnd)
    assert rest[-1].usage.completion_tokens == 6


async def test_a_full_queue_raises_backend_overloaded_immediately(
    busy_backend: tuple[LlamaCppBackend, ManualClock],
) -> None:
    backend, _ = busy_backend
    running = await long_running(backend)
    waiting = backend.stream(chat("waits"), TIMEOUTS)
    waiting_token = asyncio.create_task(next_event(waiting))
    await wait_until(lambda: backend.stats.queued == 1)

    with pytest.raises(BackendOverloaded) as caught:
        await backend.complete(chat("one too many"), TIMEOUTS)

    assert (caught.value.retry_after or 0) > 0
    await running.aclose()
    assert isinstance(await waiting_token, TextDelta)
    await waiting.aclose()
    assert (backend.stats.in_flight, backend.stats.queued) == (0, 0)


async def test_first_token_deadline_passes_while_queued(
    busy_backend: tuple[LlamaCppBackend, ManualClock],
) -> None:
    backend, clock = busy_backend
    running = await long_running(backend)
    impatient = asyncio.create_task(backend.complete(chat("hurry"), Timeouts(first_token=5.0)))
    await wait_until(lambda: backend.stats.queued == 1)

    clock.advance(5.0)

    # Never dispatched: overload (the queue had no room for it in time), which the breaker does
    # not count against the runtime, unlike a runtime that went silent.
    with pytest.raises(BackendOverloaded, match="first token deadline of 5s passed while waiting") as caught:
        await impatient
    assert caught.value.kind is ErrorKind.OVERLOADED
    assert backend.stats.queued == 0
    await running.aclose()


async def test_total_deadline_passes_while_running_is_a_timeout(
    busy_backend: tuple[LlamaCppBackend, ManualClock],
) -> None:
    """Dispatched to the worker and still going at its deadline: the runtime's own time ran out."""
    backend, clock = busy_backend
    stream = await long_running(backend, Timeouts(first_token=60.0, idle=60.0, total=5.0))
    clock.advance(5.0)
    with pytest.raises(UpstreamTimeout, match=r"total deadline of 5s passed$"):
        async for _ in stream:
            pass
    await stream.aclose()
    await wait_until(lambda: backend.stats.in_flight == 0)


# --------------------------------------------------------------------------- crashes


async def test_sigkill_mid_stream_fails_that_stream_then_the_worker_restarts(
    busy_backend: tuple[LlamaCppBackend, ManualClock],
) -> None:
    backend, clock = busy_backend
    old_pid = backend.stats.pid
    assert old_pid is not None
    stream = await long_running(backend)

    os.kill(old_pid, signal.SIGKILL)

    with pytest.raises(BackendCrashed, match="SIGKILL"):
        async for _ in stream:
            pass
    assert backend.stats.state == "restarting"
    # a request arriving during the restart waits in the queue...
    queued = asyncio.create_task(backend.complete(chat("after the crash", max_tokens=4), TIMEOUTS))
    await wait_until(lambda: backend.stats.queued == 1 and clock.pending_sleepers >= 1)
    clock.advance(backend.config.restart_backoff)  # ...the backoff passes, the worker comes back

    completion = await queued
    assert completion.usage.completion_tokens == 4
    stats = backend.stats
    assert (stats.state, stats.restarts) == ("ready", 1)
    assert stats.pid not in (None, old_pid)
    assert not process_exists(old_pid)  # the dead worker was reaped, not left a zombie


async def test_a_worker_that_cannot_come_back_fails_queued_requests_then_recovers(
    models_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "tiny.gguf"
    shutil.copy(models_dir / "tiny.gguf", model)
    clock = ManualClock()
    async with running_backend(model, clock, max_queue=2, restart_backoff=1.0) as backend:
        pid = backend.stats.pid
        assert pid is not None
        model.rename(tmp_path / "elsewhere.gguf")
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: backend.stats.state == "restarting" and clock.pending_sleepers == 1)
        waiting = asyncio.create_task(backend.complete(chat("anyone?"), TIMEOUTS))
        await wait_until(lambda: backend.stats.queued == 1)

        clock.advance(1.0)  # the restart is tried, and fails: the model file is gone

        with pytest.raises(BackendUnavailable, match="does not exist"):
            await waiting
        assert backend.stats.state == "down"
        with pytest.raises(BackendUnavailable):
            await backend.complete(chat("fails fast"), TIMEOUTS)

        (tmp_path / "elsewhere.gguf").rename(model)
        await wait_until(lambda: clock.pending_sleepers == 1)
        clock.advance(2.0)  # the backoff doubled
        await wait_until(lambda: backend.stats.state == "ready")
        assert (await backend.complete(chat("back"), TIMEOUTS)).text


async def test_start_with_a_missing_model_raises_and_leaves_no_process(tmp_path: Path) -> None:
    before = set(worker_children())
    with pytest.raises(BackendUnavailable, match="does not exist"):
        async with running_backend(tmp_path / "missing.gguf"):
            pass
    assert set(worker_children()) <= before


async def test_close_terminates_and_reaps_the_worker(models_dir: Path) -> None:
    async with running_backend(models_dir / "tiny.gguf") as backend:
        pid = backend.stats.pid
        assert pid in worker_children()
        stream = await long_running(backend)  # closing with a request still running
    assert not process_exists(pid)
    assert pid not in worker_children()
    with pytest.raises(BackendUnavailable):
        async for _ in stream:
            pass
    await backend.close()  # idempotent


# --------------------------------------------------------------------------- embeddings


async def test_embeddings_are_normalised_and_semantic(models_dir: Path) -> None:
    sentences = (
        "A cat sits on the mat",
        "A kitten is sitting on a rug",
        "Quarterly revenue grew by five percent",
    )
    async with running_backend(models_dir / "minilm-embed.gguf", embeddings=True, n_ctx=512) as backend:
        assert (backend.capabilities.embeddings, backend.capabilities.chat) == (True, False)
        result = await backend.embed(EmbeddingRequest(model="minilm", inputs=sentences), TIMEOUTS)
        assert (await backend.probe()).ok

    cat, kitten, revenue = result.vectors
    assert len(cat) == 384
    assert all(math.isclose(math.hypot(*v), 1.0, abs_tol=1e-4) for v in result.vectors)
    assert cosine(cat, kitten) > 0.5
    assert cosine(cat, kitten) > cosine(cat, revenue) + 0.4
    assert result.usage.prompt_tokens > 0

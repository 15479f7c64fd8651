"""The SANDBOX provider: a real sandbox process, hit with the official SDKs and raw HTTP.

One sandbox process (profile ``test-fast``) serves the module; each test that uses it starts
from cleared faults and stats. Pure parts (profiles, fault windows, synthesis) are tested
in-process, the flapping windows on an injected clock.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import random
import signal
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import pytest_asyncio
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from hybridgate.backends.base import Backend
from hybridgate.backends.registry import BackendContext
from hybridgate.backends.sandbox import create
from hybridgate.config.schema import SandboxDeployment
from hybridgate.errors import UpstreamConnectionError, UpstreamRateLimited
from hybridgate.sandbox import FaultBook, FaultRule, ProfileError, SandboxProcess, SandboxServer, load_profile
from hybridgate.sandbox.base import ChatJob
from hybridgate.sandbox.synth import Synthesizer
from hybridgate.types import EmbeddingRequest, InferenceRequest, Message, StreamEnd, TextDelta, Timeouts

PROMPT = "Tell me about the harbor."
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
CLAUDE_USER: list[MessageParam] = [{"role": "user", "content": PROMPT}]
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"],
}
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA},
}
CLAUDE_TOOL: ToolParam = {"name": "get_weather", "input_schema": WEATHER_SCHEMA}


class Control:
    """The sandbox's control API, plus raw HTTP for what the SDKs hide."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.http = session

    async def faults(self, *rules: dict[str, Any]) -> None:
        async with self.http.post(f"{self.base_url}/sandbox/faults", json=list(rules)) as r:
            assert r.status == 200, await r.text()

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.base_url}/sandbox/stats") as r:
            data: dict[str, Any] = await r.json()
            return data

    async def clear(self) -> None:
        async with self.http.delete(f"{self.base_url}/sandbox/faults") as r:
            assert r.status == 200
        async with self.http.post(f"{self.base_url}/sandbox/reset") as r:
            assert r.status == 200

    async def sse(
        self, path: str, body: dict[str, Any]
    ) -> tuple[list[tuple[float, bytes]], Exception | None]:
        """(arrival time, payload) of each ``data:`` line, and the error that ended the stream early."""
        lines: list[tuple[float, bytes]] = []
        async with self.http.post(f"{self.base_url}{path}", json=body) as r:
            assert r.status == 200
            try:
                async for line in r.content:
                    if line.startswith(b"data: "):
                        lines.append((time.monotonic(), line[6:].rstrip()))
            except aiohttp.ClientPayloadError as exc:
                return lines, exc
        return lines, None


@pytest_asyncio.fixture(scope="module")
async def sandbox() -> AsyncIterator[SandboxProcess]:
    async with SandboxProcess("test-fast", seed=7) as process:
        yield process


@pytest_asyncio.fixture
async def control(sandbox: SandboxProcess) -> AsyncIterator[Control]:
    async with aiohttp.ClientSession() as session:
        ctl = Control(sandbox.base_url, session)
        await ctl.clear()
        yield ctl


@pytest_asyncio.fixture
async def oai(sandbox: SandboxProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=f"{sandbox.base_url}/v1", api_key="sandbox", max_retries=0, timeout=10
    )
    yield client
    await client.close()


@pytest_asyncio.fixture
async def claude(sandbox: SandboxProcess) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=sandbox.base_url, api_key="sandbox", max_retries=0, timeout=10)
    yield client
    await client.close()


# --------------------------------------------------------------------------- OpenAI wire


async def test_chat_completion_is_labelled_deterministic_and_counted(
    oai: openai.AsyncOpenAI, control: Control
) -> None:
    raw = await oai.chat.completions.with_raw_response.create(model="sandbox-test", messages=USER)
    assert raw.headers["x-hybridgate-sandbox"] == "1"
    first = raw.parse()
    renamed = await oai.chat.completions.create(model="gpt-4o", messages=USER)
    same = await oai.chat.completions.create(model="sandbox-test", messages=USER)
    text = first.choices[0].message.content
    assert text
    assert text[0].isupper()
    assert text == same.choices[0].message.content
    assert first.model == "sandbox-test"
    assert renamed.model == "sandbox/gpt-4o"
    assert first.usage is not None
    assert first.usage.prompt_tokens > 0
    assert first.usage.completion_tokens == len(text.split())
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.choices[0].finish_reason == "stop"
    counters = (await control.stats())["counters"]
    assert counters["by_endpoint"] == {"chat.completions": 3}
    assert counters["by_outcome"] == {"ok": 3}


async def test_stream_matches_completion_and_reports_usage(oai: openai.AsyncOpenAI, control: Control) -> None:
    whole = await oai.chat.completions.create(model="sandbox-test", messages=USER)
    stream = await oai.chat.completions.create(
        model="sandbox-test", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    pieces, finish, usage = [], None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == "stop"
    assert usage is not None
    assert usage == whole.usage
    lines, error = await control.sse(
        "/v1/chat/completions", {"model": "sandbox-test", "messages": USER, "stream": True}
    )
    assert error is None
    assert lines[-1][1] == b"[DONE]"
    assert all(b'"usage"' not in payload for _, payload in lines)  # usage only when asked for


async def test_max_tokens_and_stop_are_honoured(oai: openai.AsyncOpenAI, control: Control) -> None:
    cut = await oai.chat.completions.create(model="sandbox-test", messages=USER, max_tokens=3)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage
    assert cut.usage.completion_tokens == 3
    full = await oai.chat.completions.create(model="sandbox-test", messages=USER)
    text = full.choices[0].message.content or ""
    stop_word = " " + text.split()[2]
    stopped = await oai.chat.completions.create(model="sandbox-test", messages=USER, stop=[stop_word])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(stop_word)]


async def test_required_tool_choice_returns_a_tool_call(oai: openai.AsyncOpenAI, control: Control) -> None:
    reply = await oai.chat.completions.create(
        model="sandbox-test", messages=USER, tools=[WEATHER_TOOL], tool_choice="required"
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    assert reply.choices[0].message.tool_calls
    call = reply.choices[0].message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str)
    assert isinstance(args["days"], int)
    assert args["unit"] in ("c", "f")
    stream = await oai.chat.completions.create(
        model="sandbox-test",
        messages=USER,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    streamed = ""
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                streamed += (delta.function.arguments if delta.function else None) or ""
    assert json.loads(streamed) == args  # same prompt, same call


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_models_and_embeddings(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic, control: Control
) -> None:
    assert [m.id async for m in oai.models.list()] == ["sandbox-test", "sandbox-model"]
    assert [m.id async for m in claude.models.list()] == ["sandbox-test", "sandbox-model"]
    texts = ["the quiet harbor", "the quiet harbor at night", "budget ledger compass"]
    packed = await oai.embeddings.create(model="sandbox-embed", input=texts)  # the SDK asks for base64
    plain = await oai.embeddings.create(model="sandbox-embed", input=texts, encoding_format="float")
    vectors = [d.embedding for d in packed.data]
    assert [len(v) for v in vectors] == [64, 64, 64]  # test-fast's default size
    assert all(math.isclose(_cosine(v, v), 1.0, rel_tol=1e-5) for v in vectors)
    assert all(
        math.isclose(_cosine(v, d.embedding), 1.0, rel_tol=1e-5)
        for v, d in zip(vectors, plain.data, strict=True)
    )
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])  # shared words, closer
    small = await oai.embeddings.create(model="sandbox-embed", input="x", dimensions=8)
    assert len(small.data[0].embedding) == 8


async def test_bad_input_gets_the_providers_own_400(oai: openai.AsyncOpenAI, control: Control) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        await oai.chat.completions.create(model="sandbox-test", messages=[])
    assert error.value.status_code == 400
    assert error.value.param == "messages"
    async with control.http.post(f"{control.base_url}/v1/chat/completions", data=b"{not json") as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"
    async with control.http.post(
        f"{control.base_url}/v1/messages", json={"model": "m", "messages": USER}
    ) as r:
        assert r.status == 400
        assert await r.json() == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
        }
    assert (await control.stats())["counters"]["by_outcome"] == {"invalid": 3}


# --------------------------------------------------------------------------- Anthropic wire


async def test_anthropic_messages_json_stream_and_tools(
    claude: anthropic.AsyncAnthropic, control: Control
) -> None:
    message = await claude.messages.create(model="sandbox-claude", max_tokens=400, messages=CLAUDE_USER)
    block = message.content[0]
    assert isinstance(block, TextBlock)
    assert message.stop_reason == "end_turn"
    assert message.model == "sandbox-claude"
    assert message.usage.output_tokens == len(block.text.split())
    assert message.usage.input_tokens > 0
    async with claude.messages.stream(model="sandbox-claude", max_tokens=400, messages=CLAUDE_USER) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert isinstance(final.content[0], TextBlock)
    assert final.content[0].text == block.text
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds
    short = await claude.messages.create(model="sandbox-claude", max_tokens=2, messages=CLAUDE_USER)
    assert short.stop_reason == "max_tokens"
    assert short.usage.output_tokens == 2
    called = await claude.messages.create(
        model="sandbox-claude",
        max_tokens=400,
        messages=CLAUDE_USER,
        tools=[CLAUDE_TOOL],
        tool_choice={"type": "any"},
    )
    use = called.content[0]
    assert called.stop_reason == "tool_use"
    assert isinstance(use, ToolUseBlock)
    assert use.name == "get_weather"
    assert isinstance(use.input, dict)
    assert isinstance(use.input["city"], str)


async def test_anthropic_errors_and_stream_faults(claude: anthropic.AsyncAnthropic, control: Control) -> None:
    await control.faults(
        {"kind": "server_error", "status": 529, "next": 1}, {"kind": "context_length", "next": 2}
    )
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        await claude.messages.create(model="sandbox-claude", max_tokens=10, messages=CLAUDE_USER)
    assert overloaded.value.status_code == 529
    assert "overloaded_error" in str(overloaded.value.body)
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        await claude.messages.create(model="sandbox-claude", max_tokens=10, messages=CLAUDE_USER)
    await control.faults({"kind": "missing_done"})
    body = {"model": "sandbox-claude", "max_tokens": 5, "messages": CLAUDE_USER, "stream": True}
    lines, error = await control.sse("/v1/messages", body)
    assert error is None
    assert b'"message_delta"' in lines[-1][1]


# --------------------------------------------------------------------------- faults, one kind at a time


async def test_rate_limit_with_and_without_retry_after(oai: openai.AsyncOpenAI, control: Control) -> None:
    await control.faults({"kind": "rate_limit", "next": 1, "retry_after_s": 0.25})
    with pytest.raises(openai.RateLimitError) as with_hint:
        await oai.chat.completions.create(model="sandbox-test", messages=USER)
    assert with_hint.value.response.headers["retry-after"] == "1"
    assert with_hint.value.response.headers["retry-after-ms"] == "250"
    assert with_hint.value.code == "rate_limit_exceeded"
    await control.clear()
    await control.faults({"kind": "rate_limit", "next": 1})
    with pytest.raises(openai.RateLimitError) as bare:
        await oai.chat.completions.create(model="sandbox-test", messages=USER)
    assert "retry-after" not in bare.value.response.headers
    await oai.chat.completions.create(model="sandbox-test", messages=USER)  # the window has passed


async def test_server_errors_reset_and_hang(oai: openai.AsyncOpenAI, control: Control) -> None:
    await control.faults({"kind": "server_error", "status": 503, "next": 1}, {"kind": "reset", "next": 2})
    with pytest.raises(openai.InternalServerError) as unavailable:
        await oai.chat.completions.create(model="sandbox-test", messages=USER)
    assert unavailable.value.status_code == 503
    with pytest.raises(openai.APIConnectionError):  # the reset: no status line at all
        await oai.chat.completions.create(model="sandbox-test", messages=USER)
    await control.faults({"kind": "hang", "next": 1})
    with pytest.raises(openai.APITimeoutError):
        await oai.chat.completions.create(model="sandbox-test", messages=USER, timeout=0.3)
    log = (await control.stats())["requests"]
    assert [(r["fault"], r["status"]) for r in log] == [
        ("server_error", 503),
        ("reset", None),
        ("hang", None),
    ]
    assert log[1]["outcome"] == "reset"
    assert log[2]["outcome"] in ("in_progress", "disconnected")


async def test_rejections_context_length_and_content_policy(
    oai: openai.AsyncOpenAI, control: Control
) -> None:
    await control.faults({"kind": "context_length", "next": 1}, {"kind": "content_policy", "next": 2})
    with pytest.raises(openai.BadRequestError) as too_long:
        await oai.chat.completions.create(model="sandbox-test", messages=USER)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as refused:
        await oai.chat.completions.create(model="sandbox-test", messages=USER)
    assert refused.value.code == "content_policy_violation"
    huge: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * 40_000}]
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192"):  # a real overflow
        await oai.chat.completions.create(model="sandbox-test", messages=huge)


async def test_slow_first_token_and_stream_stall_delay_the_stream(control: Control) -> None:
    body = {"model": "sandbox-test", "messages": USER, "stream": True, "max_tokens": 8}
    await control.faults({"kind": "slow_first_token", "delay_s": 0.15, "next": 1})
    sent = time.monotonic()
    lines, _ = await control.sse("/v1/chat/completions", body)
    assert lines[0][0] - sent >= 0.149  # the server never sends early (to within half a millisecond)
    await control.faults({"kind": "stream_stall", "after_tokens": 3, "delay_s": 0.15, "next": 1})
    lines, error = await control.sse("/v1/chat/completions", body)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(lines)]
    assert error is None
    assert lines[-1][1] == b"[DONE]"
    assert max(gaps) >= 0.12  # measured by a client that may itself be late for the token before
    assert gaps.index(max(gaps)) == 3
    assert [r["fault"] for r in (await control.stats())["requests"]] == ["slow_first_token", "stream_stall"]


async def test_stream_cut_malformed_chunk_and_missing_done(control: Control) -> None:
    body = {"model": "sandbox-test", "messages": USER, "stream": True, "max_tokens": 8}
    await control.faults({"kind": "stream_cut", "after_tokens": 2, "next": 1})
    lines, error = await control.sse("/v1/chat/completions", body)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert len(lines) == 3
    await control.faults({"kind": "malformed_chunk", "after_tokens": 1, "next": 1})
    lines, error = await control.sse("/v1/chat/completions", body)
    broken = []
    for index, (_, payload) in enumerate(lines[:-1]):
        try:
            json.loads(payload)
        except json.JSONDecodeError:
            broken.append(index)
    assert error is None
    assert broken == [2]
    assert lines[-1][1] == b"[DONE]"
    await control.faults({"kind": "missing_done", "next": 1})
    lines, error = await control.sse("/v1/chat/completions", body)
    assert error is None
    assert b'"finish_reason":"length"' in lines[-1][1]
    outcomes = [(r["fault"], r["outcome"]) for r in (await control.stats())["requests"]]
    assert outcomes == [("stream_cut", "cut"), ("malformed_chunk", "ok"), ("missing_done", "ok")]


async def test_stream_kinds_spare_plain_requests_and_models_follow_the_pattern(
    oai: openai.AsyncOpenAI, control: Control
) -> None:
    await control.faults({"kind": "stream_cut"}, {"kind": "server_error", "model": "sandbox-other*"})
    await oai.chat.completions.create(model="sandbox-test", messages=USER)  # not streamed, other model
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(model="sandbox-other-1", messages=USER)
    async with control.http.get(f"{control.base_url}/sandbox/faults") as r:
        counts = [(x["matched"], x["fired"]) for x in (await r.json())["rules"]]
    assert counts == [(0, 0), (1, 1)]


async def test_flapping_takes_the_whole_service_down(oai: openai.AsyncOpenAI, control: Control) -> None:
    await control.faults({"kind": "flapping", "down_s": 60, "up_s": 1})
    with pytest.raises(openai.InternalServerError) as down:
        await oai.chat.completions.create(model="sandbox-test", messages=USER)
    assert down.value.status_code == 503
    async with control.http.get(f"{control.base_url}/v1/models") as r:
        assert r.status == 503  # health probes see the outage too
    async with control.http.post(f"{control.base_url}/sandbox/faults", json=[{"kind": "nope"}]) as r:
        assert r.status == 400


def test_fault_windows_and_flapping_on_an_injected_clock() -> None:
    now = [0.0]
    book = FaultBook(random.Random(1), lambda: now[0])
    book.add([FaultRule(kind="flapping", down_s=2, up_s=3)])
    states = []
    for t in (0.0, 1.9, 2.0, 4.9, 5.0, 6.9, 7.0):
        now[0] = t
        states.append(book.select("m", stream=False) is not None)
    assert states == [True, True, False, False, True, True, False]

    def fired(rule: FaultRule, n: int = 9) -> list[int]:
        book = FaultBook(random.Random(1), lambda: 0.0)
        book.add([rule])
        return [i for i in range(1, n + 1) if book.select("m", stream=True) is not None]

    assert fired(FaultRule(kind="reset", next=2)) == [1, 2]
    assert fired(FaultRule(kind="reset", after=7)) == [8, 9]
    assert fired(FaultRule(kind="reset", every=3)) == [3, 6, 9]
    assert fired(FaultRule(kind="reset", every=2, after=4)) == [6, 8]
    assert 80 < len(fired(FaultRule(kind="reset", probability=0.5), 200)) < 120
    first_wins = FaultBook(random.Random(1), lambda: 0.0)
    first_wins.add([FaultRule(kind="hang", next=1), FaultRule(kind="reset", next=2)])
    kinds = [getattr(first_wins.select("m", stream=False), "kind", None) for _ in range(3)]
    assert kinds == ["hang", "reset", None]  # the second rule counted the first request too
    with pytest.raises(ValueError, match="5xx"):
        FaultRule(kind="server_error", status=404)


# --------------------------------------------------------------------------- latency model


async def test_latency_over_hundreds_of_requests_follows_the_profile(control: Control) -> None:
    profile = load_profile("test-fast")
    gate = asyncio.Semaphore(4)  # well under the 64 slots, so nothing queues

    async def one(i: int) -> None:
        body = {"model": "sandbox-test", "messages": [{"role": "user", "content": f"q{i}"}], "stream": True}
        async with gate:
            _, error = await control.sse("/v1/chat/completions", body)
        assert error is None

    await asyncio.gather(*(one(i) for i in range(300)))
    log = (await control.stats())["requests"]
    assert len(log) == 300
    assert all(r["outcome"] == "ok" for r in log)
    normal = [r for r in log if not r["slow"]]
    slow = [r for r in log if r["slow"]]
    assert 3 <= len(slow) <= 35  # 5% of 300 = 15 expected
    median = statistics.median(r["planned_ttft_s"] for r in normal)
    assert 0.75 * profile.ttft.median < median < 1.25 * profile.ttft.median
    assert min(r["planned_ttft_s"] for r in slow) > 2 * median  # at least 5 x a lognormal draw
    late = [r["first_token_s"] - r["planned_ttft_s"] for r in log]
    assert min(late) > -0.001  # never early (to within the half-millisecond coalescing)
    assert statistics.median(late) < 0.010  # and on time to a few milliseconds (timers, a busy shared CPU)
    slow_ttft = statistics.median(r["first_token_s"] for r in slow)
    assert slow_ttft > 2 * statistics.median(r["first_token_s"] for r in normal)  # the tail is there
    tps = statistics.median(r["planned_tps"] for r in log)
    assert 0.75 * profile.decode_tps.median < tps < 1.25 * profile.decode_tps.median
    decode = [  # time from first to last token, against the plan
        (r["duration_s"] - r["first_token_s"]) * r["planned_tps"] / (r["completion_tokens"] - 1)
        for r in log
        if r["completion_tokens"] > 5
    ]
    assert 0.5 < statistics.median(decode) < 5


def test_profiles_are_calibrated_as_their_comments_say() -> None:
    def ttft_quantiles(name: str) -> tuple[float, float, float]:
        rng, profile = random.Random(3), load_profile(name)
        xs = sorted(profile.draw_timing(rng, 1000, 1.0).ttft_s for _ in range(40_000))
        return xs[len(xs) // 2], xs[int(0.95 * len(xs))], xs[int(0.99 * len(xs))]

    p50, p95, p99 = ttft_quantiles("cloud-typical")
    assert 0.4 < p50 < 0.8
    assert 1.2 < p95 / p50 < 1.7
    assert p99 / p50 < 2.5
    t50, t95, t99 = ttft_quantiles("cloud-heavy-tail")
    assert abs(t50 / p50 - 1) < 0.1
    assert t95 / t50 > 10
    assert t99 / t50 > 30
    typical = load_profile("cloud-typical")
    speeds = sorted(1 / typical.draw_timing(random.Random(i), 10, 1.0).token_interval_s for i in range(2000))
    assert speeds[100] > 60
    assert speeds[-100] < 115
    assert 75 < statistics.median(speeds) < 95
    fast = load_profile("cloud-fast").draw_timing(random.Random(1), 10, 0.01)
    assert fast.ttft_s < 0.05
    assert load_profile("instant").draw_timing(random.Random(1), 10, 0.0).ttft_s == 0
    with pytest.raises(ProfileError, match="built in: cloud-fast"):
        load_profile("no-such-profile")


def test_invalid_profile_file_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nttft: {median: 1.0, p95: 0.5}\ndecode_tps: {median: 50}\n")
    with pytest.raises(ProfileError, match="p95 must be at least the median"):
        load_profile(str(path))


def test_synthesis_is_deterministic_per_seed_and_prompt() -> None:
    profile = load_profile("test-fast")
    job = ChatJob("sandbox-test", 10, None, (), False, False, (), "auto", None, b"prompt")
    one, also_one, two = Synthesizer(1, profile), Synthesizer(1, profile), Synthesizer(2, profile)
    assert one.compose(job) == also_one.compose(job)
    assert one.compose(job).text != two.compose(job).text
    assert one.embed("same words", 16) == also_one.embed("same words", 16) != two.embed("same words", 16)
    text = "".join(one.words(random.Random(1), 60))
    assert text[0].isupper()
    assert text.count(".") >= 3  # sentences, not word salad


async def test_capacity_queues_then_refuses() -> None:
    base = load_profile("test-fast")
    profile = base.model_copy(
        update={
            "slots": 1,
            "max_queue": 1,
            "ttft": base.ttft.model_copy(update={"median": 0.05, "p95": None}),
        }
    )
    server = SandboxServer(
        profile.model_copy(update={"heavy_tail": base.heavy_tail.model_copy(update={"probability": 0.0})})
    )
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = await server.start(sock)
        try:
            async with aiohttp.ClientSession() as http:

                async def ask() -> int:
                    body = {"model": "sandbox-test", "messages": USER, "max_tokens": 1}
                    async with http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
                        return r.status

                statuses = await asyncio.gather(ask(), ask(), ask())
        finally:
            await server.close()
    assert sorted(statuses) == [200, 200, 503]
    log = server.stats.snapshot()["requests"]
    assert sorted(r.outcome for r in log) == ["ok", "ok", "overloaded"]
    assert max(r.queued_s for r in log) >= 0.04  # the second waited for the first


# --------------------------------------------------------------------------- the process and the backend


async def test_command_line_ready_file_log_line_and_clean_exit(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    faults = json.dumps([{"kind": "rate_limit", "model": "limited"}])
    args = ["--port", "0", "--profile", "test-fast", "--ready-file", str(ready), "--faults", faults]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hybridgate.sandbox", *args, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        line = await process.stderr.readline()  # the startup line comes once the ready file is in place
        assert b"SANDBOX listening on http://127.0.0.1:" in line
        assert b"NOT a real model" in line
        info = json.loads(ready.read_text())
        assert info["pid"] == process.pid
        base = f"http://127.0.0.1:{info['port']}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/sandbox/info") as r:
                assert (await r.json())["sandbox"] is True
            body = {"model": "limited", "messages": USER}
            async with http.post(f"{base}/v1/chat/completions", json=body) as r:
                assert r.status == 429  # the rule given on the command line
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await process.communicate()
    assert process.returncode == 0
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hybridgate.sandbox", "--profile", "nope", stderr=asyncio.subprocess.PIPE
    )
    _, err = await bad.communicate()
    assert bad.returncode == 2
    assert "unknown sandbox profile" in err.decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_sandbox_backend_runs_its_child_through_the_real_adapter(wire: str) -> None:
    config = SandboxDeployment.model_validate(
        {
            "type": "sandbox",
            "profile": "test-fast",
            "model": "sandbox-gpt",
            "seed": 3,
            "wire": wire,
            "region": "eu",
        }
    )
    backend = create("sandbox-cloud", config, BackendContext())
    conforms: Backend = backend  # mypy checks the protocol here
    assert isinstance(conforms, Backend)
    assert backend.capabilities.placement == "cloud"
    assert backend.capabilities.region == "eu"
    request = InferenceRequest(model="cloud", messages=(Message.of_text("user", PROMPT),), max_tokens=6)
    timeouts = Timeouts(first_token=5, idle=5, total=10)
    assert backend.describe()["url"] is None
    await backend.start()
    pid = backend.process.pid
    assert pid is not None
    try:
        # /readyz shows this, so that scripts can reach the gateway's own sandbox's control API.
        assert backend.describe() == {
            "sandbox": True,
            "url": backend.sandbox_url,
            "pid": pid,
            "profile": "test-fast",
        }
        assert (await backend.probe()).ok
        answer = await backend.complete(request, timeouts)
        assert answer.model == "sandbox-gpt"
        assert answer.usage.completion_tokens == 6
        assert answer.finish_reason == "length"
        events = [e async for e in backend.stream(request, timeouts)]
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == answer.text
        assert isinstance(events[-1], StreamEnd)
        assert events[-1].usage.completion_tokens == 6
        async with aiohttp.ClientSession() as http:
            rule = {"kind": "stream_cut", "after_tokens": 2, "next": 1}
            async with http.post(
                f"{backend.sandbox_url}/sandbox/faults",
                json=[rule, {"kind": "rate_limit", "after": 1, "next": 2}],
            ):
                pass
        with pytest.raises(UpstreamConnectionError):
            _ = [e async for e in backend.stream(request, timeouts)]
        with pytest.raises(UpstreamRateLimited):
            await backend.complete(request, timeouts)
        if wire == "openai":
            vectors = await backend.embed(EmbeddingRequest(model="e", inputs=("a", "b")), timeouts)
            assert len(vectors.vectors) == 2
    finally:
        await backend.close()
    assert not _alive(pid)
    assert not (await backend.probe()).ok

"""Replaying the trace against one gateway with the official ``openai`` SDK (``AsyncOpenAI``).

Open loop: every request is sent at its offset, whatever the earlier ones are doing, as agents
do. Each carries its workload class (``X-Hybridgate-Class``), an ``Idempotency-Key`` where its
class requires one, and a W3C ``traceparent`` whose trace id names the request: the gateway
writes it into its decision log, which is how the report joins what the client saw with what
the gateway decided. The SDK does no retries of its own (``max_retries=0``): what is measured is
the gateway's behaviour.

Alongside, :class:`ReadyWatcher` reads ``/readyz`` four times a second and keeps a timeline of
what changed (offline mode, breakers), and the outage is injected at its offset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import openai
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)

from hybridgate.demo.workload import DemoRequest, Message

MODEL = "agent"
CLIENT_TIMEOUT_S = 90.0
WATCH_INTERVAL_S = 0.25


def trace_id(arm: int, index: int) -> str:
    """The 32-hex-digit W3C trace id of request ``index`` of arm number ``arm``."""
    return f"de{arm:02x}{index:028x}"


def traceparent(arm: int, index: int) -> str:
    return f"00-{trace_id(arm, index)}-{index + 1:016x}-01"


@dataclass(slots=True)
class Outcome:
    """What the client saw for one request. Times in seconds; ``sent_s`` from the run's start."""

    index: int
    workload_class: str
    phase: str
    stream: bool
    sent_s: float = 0.0
    status: int = 0  # HTTP status; 0: no response
    code: str | None = None  # the error's code (the body's, or client_timeout / connection_error)
    deployment: str | None = None  # x-hybridgate-deployment
    attempts: int = 0
    hedged: bool = False
    latency_s: float | None = None
    ttft_s: float | None = None
    completion_tokens: int = 0

    @property
    def answered(self) -> bool:
        return self.status == 200 and self.code is None


def _message(message: Message) -> ChatCompletionMessageParam:
    role, content = message
    if role == "system":
        return ChatCompletionSystemMessageParam(role="system", content=content)
    if role == "assistant":
        return ChatCompletionAssistantMessageParam(role="assistant", content=content)
    return ChatCompletionUserMessageParam(role="user", content=content)


def _read_headers(outcome: Outcome, headers: Mapping[str, str]) -> None:
    outcome.deployment = headers.get("x-hybridgate-deployment")
    outcome.attempts = int(headers.get("x-hybridgate-attempts") or 0)
    outcome.hedged = headers.get("x-hybridgate-hedged") == "1"


async def send(
    client: openai.AsyncOpenAI, request: DemoRequest, headers: Mapping[str, str], outcome: Outcome
) -> None:
    """Send ``request`` and fill ``outcome`` (never raises for an error answer)."""
    messages = [_message(m) for m in request.messages]
    start = time.perf_counter()
    try:
        if request.stream:
            raw_stream = await client.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=messages,
                max_tokens=request.max_tokens,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=dict(headers),
            )
            outcome.status = raw_stream.status_code
            _read_headers(outcome, raw_stream.headers)
            async for chunk in raw_stream.parse():
                if outcome.ttft_s is None and any(c.delta.content for c in chunk.choices):
                    outcome.ttft_s = time.perf_counter() - start
                if chunk.usage is not None:
                    outcome.completion_tokens = chunk.usage.completion_tokens
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=messages, max_tokens=request.max_tokens, extra_headers=dict(headers)
            )
            outcome.status = raw.status_code
            _read_headers(outcome, raw.headers)
            completion = raw.parse()
            outcome.completion_tokens = completion.usage.completion_tokens if completion.usage else 0
        outcome.latency_s = time.perf_counter() - start
    except openai.APIStatusError as exc:
        outcome.status = exc.status_code
        outcome.code = exc.code or f"http_{exc.status_code}"
        _read_headers(outcome, exc.response.headers)
    except openai.APITimeoutError:
        outcome.code = "client_timeout"
    except openai.APIConnectionError:
        outcome.code = "connection_error"
    except openai.APIError as exc:  # an error event in a stream that had started
        outcome.code = exc.code or "stream_error"


@dataclass(slots=True)
class Progress:
    """Counters the runner prints while an arm runs."""

    sent: int = 0
    done: int = 0
    answered: int = 0
    local: int = 0
    errors: int = 0


async def replay(
    client: openai.AsyncOpenAI,
    trace: Sequence[DemoRequest],
    headers_of: Callable[[DemoRequest], Mapping[str, str]],
    placement_of: Callable[[str | None], str],
    progress: Progress,
    started: float,
) -> list[Outcome]:
    """Send every request at ``started`` (loop time) + its offset; wait for all; the outcomes."""
    loop = asyncio.get_running_loop()
    outcomes = [Outcome(r.index, r.workload_class, r.phase, r.stream) for r in trace]

    async def one(request: DemoRequest, outcome: Outcome) -> None:
        outcome.sent_s = loop.time() - started
        await send(client, request, headers_of(request), outcome)
        progress.done += 1
        if outcome.answered:
            progress.answered += 1
            progress.local += placement_of(outcome.deployment) == "local"
        else:
            progress.errors += 1

    tasks: list[asyncio.Task[None]] = []
    try:
        for request, outcome in zip(trace, outcomes, strict=True):
            delay = started + request.t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(request, outcome)))
            progress.sent += 1
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return outcomes


@dataclass(slots=True)
class ReadyWatcher:
    """A timeline of ``/readyz`` changes (offline mode on and off, deployment states), and the
    process ids of the deployments' runtimes (the sandboxes, the llama.cpp worker) it saw."""

    http: aiohttp.ClientSession
    url: str
    started: float
    on_new_pid: Callable[[str, int], None] | None = None  # a runtime's process appeared
    events: list[dict[str, Any]] = field(default_factory=list)
    pids: dict[str, list[int]] = field(default_factory=dict)
    _offline: bool = False
    _states: dict[str, str] = field(default_factory=dict)

    def note(self, event: str, detail: str = "") -> None:
        t = asyncio.get_running_loop().time() - self.started
        self.events.append({"t_s": round(t, 2), "event": event, "detail": detail})

    def observe(self, body: Mapping[str, Any]) -> None:
        offline = body.get("offline") or {}
        if bool(offline.get("offline")) != self._offline:
            self._offline = not self._offline
            self.note("offline" if self._offline else "online", str(offline.get("reason") or ""))
        for name, dep in (body.get("deployments") or {}).items():
            if not isinstance(dep, dict):
                continue
            self._change(name, str(dep.get("state")), str(dep.get("detail") or ""))
            health = dep.get("health")
            breaker = health.get("breaker") if isinstance(health, dict) else None
            if isinstance(breaker, dict):
                reason = str(breaker.get("reason") or "")
                self._change(f"{name} breaker", str(breaker.get("state")), reason, "closed")
            runtime = dep.get("runtime")
            pid = runtime.get("pid") if isinstance(runtime, dict) else None
            if isinstance(pid, int) and pid not in self.pids.get(name, []):
                self.pids.setdefault(name, []).append(pid)
                if self.on_new_pid is not None:
                    self.on_new_pid(name, pid)

    def _change(self, what: str, state: str, detail: str, initial: str = "ready") -> None:
        before = self._states.get(what, initial)
        if state != before:
            self.note(f"{what}: {before} -> {state}", detail)
        self._states[what] = state

    async def poll(self) -> None:
        """Read ``/readyz`` once; a failed read is skipped (the next one tells)."""
        try:
            async with self.http.get(f"{self.url}/readyz") as response:
                self.observe(await response.json())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll()
            await asyncio.sleep(WATCH_INTERVAL_S)


async def at(started: float, offset_s: float, action: Callable[[], Awaitable[None]]) -> None:
    """Run ``action`` at loop time ``started + offset_s``."""
    delay = started + offset_s - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
    await action()

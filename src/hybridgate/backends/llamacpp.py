"""The embedded llama.cpp runtime: a GGUF model served by a supervised worker process.

llama.cpp aborts the whole process on some inputs, so the model runs in
:mod:`hybridgate.backends.llamacpp_worker`, never in the gateway. This module is the gateway side:

- **One request at a time, a bounded FIFO queue.** One request runs in the worker (a llama.cpp
  context is not thread-safe); at most ``max_queue`` wait; beyond that :class:`BackendOverloaded`
  is raised at once, with a ``retry_after`` estimated from recent service times.
- **Deadlines on the injected clock.** ``Timeouts.first_token``, ``idle`` and ``total`` are watched
  per request (queue wait included) and end it with :class:`UpstreamTimeout`
  (:class:`BackendOverloaded` if it was still waiting for the slot); the worker is told to
  cancel. Closing a stream early (client disconnect) cancels it in the worker and frees the slot
  at once.
- **Supervision.** If the worker dies, the request it was running fails with
  :class:`BackendCrashed` (a stream ends with that exception, never silently), the worker is
  restarted after a backoff (``restart_backoff``, doubling per consecutive failure, capped), and
  queued requests run on the new worker. If it cannot be started, queued and new requests fail
  with :class:`BackendUnavailable` while the supervisor keeps retrying.

``stats`` exposes the live numbers the router reads (in flight, queued, warm, load time, restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hybridgate.backends.base import ProbeResult, capabilities_of
from hybridgate.backends.llamacpp_process import Frame, WorkerProcess
from hybridgate.backends.llamacpp_worker import CHAT_PARAMS, encode_frame
from hybridgate.backends.registry import BackendContext
from hybridgate.clock import Clock
from hybridgate.config.schema import LlamaCppDeployment
from hybridgate.errors import (
    BackendCrashed,
    BackendOverloaded,
    BackendUnavailable,
    HybridgateError,
    InvalidRequest,
    UnsupportedFeature,
    UpstreamContextLength,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
)
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    FinishReason,
    ImagePart,
    InferenceRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Timeouts,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from hybridgate.wire import openai as openai_wire

logger = logging.getLogger(__name__)

WorkerState = Literal["stopped", "starting", "ready", "restarting", "down", "closed"]

MAX_BACKOFF_S = 30.0
_TERMINAL = frozenset({"end", "error", "cancelled", "embedding", "probe"})
_SUCCESS = frozenset({"end", "embedding", "probe"})
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


@dataclass(frozen=True, slots=True)
class LocalRuntimeStats:
    """A snapshot of the runtime for the router and the health layer. Cheap; immutable."""

    state: WorkerState
    in_flight: int
    queued: int
    warm: bool  # the current worker has served at least one request since it loaded
    load_time_s: float | None  # measured by the worker for its last successful load
    restarts: int
    pid: int | None


# --------------------------------------------------------------------------- requests


@dataclass(eq=False, slots=True)
class _Job:
    """One request's passage through the queue and the worker."""

    id: str
    frame: bytes
    timeouts: Timeouts
    started_at: float
    priority: int = 50
    events: asyncio.Queue[Frame | UpstreamError] = field(default_factory=asyncio.Queue)
    dispatched_at: float | None = None
    last_event_at: float | None = None
    terminal: bool = False  # the worker has finished with it
    watchdog: asyncio.Task[None] | None = None

    def deadline(self) -> tuple[float, str, float]:
        """(when, which deadline, its length) of the next deadline."""
        t = self.timeouts
        total = (self.started_at + t.total, "total", t.total)
        if self.last_event_at is None:
            nearest = (self.started_at + t.first_token, "first token", t.first_token)
        else:
            nearest = (self.last_event_at + t.idle, "idle", t.idle)
        return min(total, nearest)


class _ToolCallPieces:
    """Assembles tool calls from their streamed pieces (id and name arrive with the first one)."""

    def __init__(self) -> None:
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]

    def add(self, index: int, call_id: str | None, name: str | None, arguments: str) -> ToolCallDelta:
        """Record one piece; returns it as a delta carrying id and name only the first time."""
        if index in self.calls:
            self.calls[index][2] += arguments
            return ToolCallDelta(index=index, arguments=arguments)
        call_id, name = call_id or f"call_{index}", name or ""
        self.calls[index] = [call_id, name, arguments]
        return ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(id=i, name=n, arguments=a) for i, n, a in self.calls.values())


# --------------------------------------------------------------------------- the backend


class LlamaCppBackend:
    """One GGUF model in a supervised llama.cpp worker process. See the module docstring."""

    def __init__(self, name: str, config: LlamaCppDeployment, context: BackendContext) -> None:
        self.name = name
        self.config = config
        self._clock: Clock = context.clock
        self.n_ctx = config.n_ctx or config.context_window
        self.capabilities = capabilities_of(
            config,
            context_window=self.n_ctx,
            chat=not config.embeddings,
            streaming=not config.embeddings,
            tools=config.tools and not config.embeddings,
            vision=False,  # llama-cpp-python needs a separate CLIP projector for images
            response_format=not config.embeddings,
        )
        self._default_timeouts = Timeouts(**config.timeouts.model_dump())
        self._state: WorkerState = "stopped"
        self._down_reason = ""
        self._worker: WorkerProcess | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._jobs: dict[str, _Job] = {}
        self._waiting: deque[_Job] = deque()
        self._running: _Job | None = None
        self._ids = itertools.count(1)
        self._restarts = 0
        self._failures = 0  # consecutive crashes or failed starts since the last served request
        self._warm = False
        self._load_time_s: float | None = None
        self._service_s = 1.0  # moving average of a request's time in the worker

    # ------------------------------------------------------------------ observation

    @property
    def stats(self) -> LocalRuntimeStats:
        """The live numbers of this runtime (a snapshot)."""
        return LocalRuntimeStats(
            state=self._state,
            in_flight=0 if self._running is None else 1,
            queued=len(self._waiting),
            warm=self._warm,
            load_time_s=self._load_time_s,
            restarts=self._restarts,
            pid=self._worker.pid if self._worker is not None and self._state == "ready" else None,
        )

    def describe(self) -> dict[str, object]:
        """Live facts for /readyz: worker state, queue, cold-start (load) time, restarts."""
        return asdict(self.stats)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the worker and wait until the model is loaded.

        Raises :class:`BackendUnavailable` (with the worker's reason) if the first load fails.
        """
        if self._state == "closed":
            raise BackendUnavailable(f"{self.name}: backend is closed", deployment=self.name)
        if self._supervisor is not None:
            return
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(
            self._supervise(first), name=f"llamacpp-supervisor-{self.name}"
        )
        try:
            await first
        except BackendUnavailable:
            self._supervisor = None
            raise

    async def close(self) -> None:
        """Fail pending requests, stop the supervisor, terminate and reap the worker. Idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        self._fail_all(BackendUnavailable(f"{self.name}: backend closed", deployment=self.name))
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._worker is not None:
            worker, self._worker = self._worker, None
            await worker.terminate()

    async def _supervise(self, first: asyncio.Future[None]) -> None:
        while self._state != "closed":
            worker = await self._launch()
            if worker is None:
                error = BackendUnavailable(f"{self.name}: {self._down_reason}", deployment=self.name)
                if not first.done():
                    first.set_exception(error)
                    return
                self._fail_all(error)
            else:
                if not first.done():
                    first.set_result(None)
                how = await worker.exited()
                self._on_worker_exit(worker, how)
            self._failures += 1
            delay = min(self.config.restart_backoff * 2 ** (self._failures - 1), MAX_BACKOFF_S)
            await self._clock.sleep(delay)

    async def _launch(self) -> WorkerProcess | None:
        """Start a worker and wait for its model; None (and state ``down``) if that fails."""
        if self._state != "restarting":
            self._state = "starting"
        try:
            worker = await WorkerProcess.spawn(self._load_frame(), self._on_frame, self.name)
        except OSError as exc:
            self._mark_down(f"cannot start the worker process: {exc}")
            return None
        self._worker = worker  # from here on close() can terminate it, even mid-load
        ready = await self._await_ready(worker)
        if ready is None or ready.get("ev") != "ready":
            await worker.terminate()
            self._worker = None  # only now: a close() meanwhile must still find it to reap it
            reason = "model load timed out" if ready is None else str(ready.get("message", "load failed"))
            self._mark_down(f"{reason} ({await worker.exited()})")
            return None
        self._state, self._warm = "ready", False
        self._load_time_s = float(ready.get("load_time_s", 0.0))
        logger.info(
            "%s: worker %d loaded %s in %.3fs",
            self.name,
            worker.pid,
            self.config.model_path,
            self._load_time_s,
        )
        self._dispatch()
        return worker

    async def _await_ready(self, worker: WorkerProcess) -> Frame | None:
        timer = asyncio.ensure_future(self._clock.sleep(self.config.load_timeout))
        try:
            waiters: set[asyncio.Future[Any]] = {worker.ready, timer}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return worker.ready.result() if worker.ready.done() else None

    def _load_frame(self) -> Frame:
        c = self.config
        return {
            "op": "load",
            "model_path": c.model_path,
            "n_ctx": self.n_ctx,
            "n_threads": c.n_threads,
            # An embedding model evaluates each input in one batch, so the batch is the context.
            "n_batch": max(c.n_batch, self.n_ctx) if c.embeddings else c.n_batch,
            "seed": c.seed,
            "chat_format": c.chat_format,
            "embeddings": c.embeddings,
        }

    def _mark_down(self, reason: str) -> None:
        self._state, self._down_reason = "down", reason
        logger.warning("%s: worker unavailable: %s", self.name, reason)

    def _on_worker_exit(self, worker: WorkerProcess, how: str) -> None:
        if self._worker is worker:
            self._worker = None
        if self._state == "closed":
            return
        self._state, self._warm = "restarting", False
        self._restarts += 1
        logger.warning("%s: worker %d died (%s); restarting", self.name, worker.pid, how)
        if self._running is not None:
            job, self._running = self._running, None
            job.terminal = True
            job.events.put_nowait(
                BackendCrashed(f"{self.name}: the worker process died ({how})", deployment=self.name)
            )

    def _fail_all(self, error: UpstreamError) -> None:
        pending = [*self._waiting, *([self._running] if self._running else [])]
        self._waiting.clear()
        self._running = None
        for job in pending:
            job.terminal = True
            job.events.put_nowait(error)

    # ------------------------------------------------------------------ queue and dispatch

    def _overloaded(self) -> BackendOverloaded:
        return BackendOverloaded(
            f"{self.name}: local queue full ({len(self._waiting)} waiting)",
            deployment=self.name,
            retry_after=round(self._service_s * (len(self._waiting) + 1), 3),
        )

    def _admit(self, command: Frame, timeouts: Timeouts, priority: int = 50) -> _Job:
        """Queue a command by priority, or raise at once: unavailable, or overloaded (queue full).

        The queue is ordered by priority, then arrival. When it is full, a request of a higher
        priority than the last one waiting takes its place: that one fails at once with
        BackendOverloaded (so it fails over elsewhere), rather than the interactive request.
        """
        if self._state in ("stopped", "down", "closed"):
            detail = self._down_reason if self._state == "down" else f"backend {self._state}"
            raise BackendUnavailable(f"{self.name}: {detail}", deployment=self.name)
        busy = self._running is not None or bool(self._waiting) or self._state != "ready"
        if busy and len(self._waiting) >= self.config.max_queue:
            if not self._waiting or self._waiting[-1].priority >= priority:
                raise self._overloaded()
            evicted = self._waiting.pop()
            self._jobs.pop(evicted.id, None)
            evicted.terminal = True
            evicted.events.put_nowait(self._overloaded())
        job_id = f"r{next(self._ids)}"
        try:
            frame = encode_frame({**command, "id": job_id})
        except TypeError as exc:  # orjson refuses, e.g., strings holding lone surrogates
            raise InvalidRequest(f"request cannot be encoded: {exc}") from exc
        job = _Job(
            id=job_id, frame=frame, timeouts=timeouts, started_at=self._clock.monotonic(), priority=priority
        )
        self._jobs[job.id] = job
        position = len(self._waiting)
        while position > 0 and self._waiting[position - 1].priority < priority:
            position -= 1
        self._waiting.insert(position, job)
        job.watchdog = asyncio.create_task(self._watch(job))
        self._dispatch()
        return job

    def _dispatch(self) -> None:
        while self._running is None and self._state == "ready" and self._waiting and self._worker:
            job = self._waiting.popleft()
            job.dispatched_at = self._clock.monotonic()
            self._running = job
            self._worker.stderr_tail.clear()  # crash reports then show this request's output only
            # If stdin is already closed the worker is dying: the exit handler fails this job.
            self._worker.send(job.frame)

    def _release(self, job: _Job) -> None:
        """The caller is done with ``job`` (finished, failed or closed early): free everything now."""
        if job.watchdog is not None:
            job.watchdog.cancel()
        self._jobs.pop(job.id, None)
        if job in self._waiting:
            self._waiting.remove(job)
        if self._running is job:
            self._running = None
            if not job.terminal and self._worker is not None:
                self._worker.send(encode_frame({"op": "cancel", "id": job.id}))
            self._dispatch()

    def _on_frame(self, message: Frame) -> None:
        job = self._jobs.get(str(message.get("id")))
        if job is None:
            return  # a late frame of a request that was cancelled or timed out
        now = self._clock.monotonic()
        job.last_event_at = now
        event = message.get("ev")
        if event in _TERMINAL:
            job.terminal = True
            if self._running is job:
                self._running = None
                if job.dispatched_at is not None:
                    self._service_s = 0.8 * self._service_s + 0.2 * (now - job.dispatched_at)
                if event in _SUCCESS:
                    self._failures, self._warm = 0, True
                self._dispatch()
        job.events.put_nowait(message)

    async def _watch(self, job: _Job) -> None:
        while not job.terminal:
            when, which, seconds = job.deadline()
            remaining = when - self._clock.monotonic()
            if remaining <= 0:
                if job.dispatched_at is None:
                    # Still waiting for the slot: the runtime had no capacity for it in time, which
                    # is overload (admission, not a fault of the runtime's: no breaker failure).
                    error: UpstreamError = BackendOverloaded(
                        f"{self.name}: {which} deadline of {seconds:g}s passed while waiting in the"
                        " local queue",
                        deployment=self.name,
                        retry_after=round(self._service_s * (len(self._waiting) + 1), 3),
                    )
                else:
                    error = UpstreamTimeout(
                        f"{self.name}: {which} deadline of {seconds:g}s passed", deployment=self.name
                    )
                job.events.put_nowait(error)
                return
            await self._clock.sleep(remaining)

    async def _next(self, job: _Job) -> Frame:
        """The job's next frame from the worker; raises its error (timeout, crash, worker error)."""
        item = await job.events.get()
        if isinstance(item, UpstreamError):
            raise item
        if item.get("ev") == "error":
            raise self._worker_error(item)
        if item.get("ev") == "cancelled":  # only ever asked for by _release, after which no one reads
            raise UpstreamServerError(f"{self.name}: the worker cancelled the request", deployment=self.name)
        return item

    def _worker_error(self, frame: Frame) -> UpstreamError:
        kind, message = frame.get("kind"), f"{self.name}: {frame.get('message', 'worker error')}"
        if kind == "context_length":
            return UpstreamContextLength(message, deployment=self.name)
        if kind == "invalid":
            return UpstreamRejected(message, deployment=self.name)
        return UpstreamServerError(message, deployment=self.name)

    def _unexpected(self, frame: Frame) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            f"{self.name}: unexpected {frame.get('ev')!r} frame", deployment=self.name
        )

    async def _run_once(self, command: Frame, timeouts: Timeouts, answer: str) -> Frame:
        """Run a one-answer command (embed, probe); returns the worker's ``answer`` frame."""
        job = self._admit(command, timeouts)
        try:
            frame = await self._next(job)
        finally:
            self._release(job)
        if frame.get("ev") != answer:
            raise self._unexpected(frame)
        return frame

    # ------------------------------------------------------------------ inference

    def _chat_command(self, request: InferenceRequest) -> Frame:
        if not self.capabilities.chat:
            raise UnsupportedFeature(f"deployment {self.name} is an embedding model")
        if any(isinstance(part, ImagePart) for m in request.messages for part in m.content):
            raise UnsupportedFeature(f"deployment {self.name} does not accept images")
        body = openai_wire.render_chat_request(request, Path(self.config.model_path).name, stream=True)
        params = {key: value for key, value in body.items() if key in CHAT_PARAMS}
        cap = self.config.max_output_tokens
        wanted = request.max_tokens if request.max_tokens is not None else cap
        params["max_tokens"] = min(wanted, cap) if wanted is not None and cap is not None else wanted
        params.setdefault("seed", self.config.seed)
        return {"op": "chat", "params": params}

    def stream(self, request: InferenceRequest, timeouts: Timeouts) -> AsyncGenerator[StreamEvent]:
        """Stream the answer token by token; ends with :class:`StreamEnd` or raises.

        Nothing happens until the first ``__anext__``; ``aclose()`` cancels the request at once.
        """
        return self._events(request, timeouts)

    async def _events(self, request: InferenceRequest, timeouts: Timeouts) -> AsyncGenerator[StreamEvent]:
        job = self._admit(self._chat_command(request), timeouts, request.priority)
        tools = _ToolCallPieces()
        try:
            while True:
                frame = await self._next(job)
                if frame["ev"] == "delta":
                    yield TextDelta(str(frame["text"]))
                elif frame["ev"] == "tool":
                    yield tools.add(
                        int(frame["index"]),
                        frame.get("call_id"),
                        frame.get("name"),
                        frame.get("arguments") or "",
                    )
                elif frame["ev"] == "end":
                    usage = Usage(int(frame["prompt_tokens"]), int(frame["completion_tokens"]))
                    yield StreamEnd(_FINISH.get(str(frame["finish_reason"]), "stop"), usage)
                    return
                else:
                    raise self._unexpected(frame)
        finally:
            self._release(job)

    async def complete(self, request: InferenceRequest, timeouts: Timeouts) -> Completion:
        """The whole answer (streamed from the worker and gathered here)."""
        text: list[str] = []
        tools = _ToolCallPieces()
        end: StreamEnd | None = None
        async with contextlib.aclosing(self._events(request, timeouts)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, ToolCallDelta):
                    tools.add(event.index, event.id, event.name, event.arguments)
                else:
                    end = event
        assert end is not None  # stream() either yields a StreamEnd last or raises
        return Completion(
            id=f"{self.name}-{next(self._ids)}",
            model=Path(self.config.model_path).name,
            text="".join(text),
            tool_calls=tools.tool_calls(),
            finish_reason=end.finish_reason,
            usage=end.usage,
            created=int(self._clock.wall()),
        )

    async def embed(self, request: EmbeddingRequest, timeouts: Timeouts) -> EmbeddingResult:
        """Embed the inputs (L2-normalised vectors); only for ``embeddings: true`` deployments."""
        if not self.capabilities.embeddings:
            raise UnsupportedFeature(f"deployment {self.name} does not serve embeddings")
        frame = await self._run_once({"op": "embed", "inputs": list(request.inputs)}, timeouts, "embedding")
        vectors: list[list[float]] = frame["vectors"]
        if request.dimensions is not None and vectors and request.dimensions != len(vectors[0]):
            size = len(vectors[0])
            raise UnsupportedFeature(
                f"deployment {self.name} makes {size}-dimensional vectors, not {request.dimensions}"
            )
        usage = Usage(prompt_tokens=int(frame["prompt_tokens"]))
        return EmbeddingResult(model=Path(self.config.model_path).name, vectors=vectors, usage=usage)

    async def probe(self) -> ProbeResult:
        """A real one-token inference (or one embedding) through the queue. Never raises."""
        started = self._clock.monotonic()
        try:
            frame = await self._run_once({"op": "probe"}, self._default_timeouts, "probe")
        except BackendOverloaded:
            return ProbeResult(
                ok=True, latency_s=self._clock.monotonic() - started, detail="busy: queue full"
            )
        except HybridgateError as exc:
            return ProbeResult(ok=False, latency_s=self._clock.monotonic() - started, detail=exc.message)
        detail = f"inference {float(frame.get('latency_s', 0.0)) * 1000:.1f} ms"
        return ProbeResult(ok=True, latency_s=self._clock.monotonic() - started, detail=detail)


def create(name: str, config: LlamaCppDeployment, context: BackendContext) -> LlamaCppBackend:
    """Factory registered as the ``llamacpp`` backend type."""
    return LlamaCppBackend(name, config, context)

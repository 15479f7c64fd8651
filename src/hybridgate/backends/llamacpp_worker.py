"""The llama.cpp worker process, and the frame protocol it speaks with the gateway.

llama.cpp aborts the whole process on some inputs, so the model never runs in the gateway: the
:mod:`hybridgate.backends.llamacpp` backend starts ``python -m hybridgate.backends.llamacpp_worker``
and talks to it over its stdin/stdout. If it dies, only this process dies.

Protocol: every frame is a 4-byte big-endian length followed by that many bytes of JSON (orjson).

Gateway -> worker (``op``)::

    {"op": "load", "model_path": ..., "n_ctx": ..., "embeddings": false, ...}   first frame, once
    {"op": "chat", "id": "r1", "params": {messages, max_tokens, temperature, stop, seed, tools...}}
    {"op": "embed", "id": "r2", "inputs": ["..."]}
    {"op": "probe", "id": "r3"}                      a real one-token inference (or one embedding)
    {"op": "cancel", "id": "r1"}                     stop r1 between two tokens (or skip it if queued)

Worker -> gateway (``ev``)::

    {"ev": "ready", "load_time_s": 0.02, "n_ctx": 4096, "n_embd": 64, "pid": 123}
    {"ev": "load_failed", "message": "..."}                      then the worker exits with status 1
    {"ev": "delta", "id": "r1", "text": " the"}
    {"ev": "tool", "id": "r1", "index": 0, "call_id": "call_1", "name": "f", "arguments": "{"}
    {"ev": "end", "id": "r1", "finish_reason": "length", "prompt_tokens": 9, "completion_tokens": 8}
    {"ev": "embedding", "id": "r2", "vectors": [[...]], "prompt_tokens": 7}
    {"ev": "probe", "id": "r3", "latency_s": 0.001}
    {"ev": "cancelled", "id": "r1"}
    {"ev": "error", "id": "r1", "kind": "context_length" | "invalid" | "internal", "message": "..."}

The main thread only reads commands, so a cancel is seen at once; one generation thread runs the
jobs one after another (a llama.cpp context is not thread-safe) and checks for cancellation
between tokens. End of stdin (the gateway closed the pipe or died) stops the worker.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

import orjson

logger = logging.getLogger("hybridgate.llamacpp_worker")

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024  # a length beyond this means the stream is garbage, not a frame

# Parameters of llama-cpp-python's create_chat_completion a request may set; anything else that
# reaches the worker is ignored rather than passed on (an unknown keyword would raise).
CHAT_PARAMS = frozenset(
    {
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "tools",
        "tool_choice",
        "response_format",
        "presence_penalty",
        "frequency_penalty",
    }
)


class ProtocolError(Exception):
    """The byte stream is not a sequence of frames (the other side is gone or confused)."""


def encode_frame(message: dict[str, Any]) -> bytes:
    """One frame: length prefix plus JSON."""
    body = orjson.dumps(message)
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a frame body; :class:`ProtocolError` when it is not one."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("a frame must hold a JSON object")
    return message


def frame_length(header: bytes) -> int:
    """The body length announced by a 4-byte header."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME} byte limit")
    return int(length)


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next frame from a blocking binary stream, or None at a clean end of stream."""
    header = stream.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise ProtocolError("stream ended inside a frame header")
    length = frame_length(header)
    body = stream.read(length)
    if len(body) < length:
        raise ProtocolError("stream ended inside a frame")
    return decode_body(body)


# --------------------------------------------------------------------------- worker side


class FrameWriter:
    """Writes frames to the gateway; shared by the reader and the generation thread."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = encode_frame(message)
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


@dataclass(slots=True)
class SampleRecorder:
    """Counts tokens as llama-cpp-python samples them, so streamed answers report exact usage.

    Streaming chunks of llama-cpp-python carry no usage; this wraps ``Llama.sample`` to see every
    sampled token and the context size when the first one was sampled (= the prompt length).
    End-of-generation tokens are not counted, matching llama-cpp-python's own non-streamed usage.
    """

    is_eog: Callable[[int], bool]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _first: bool = True

    def reset(self) -> None:
        self.prompt_tokens, self.completion_tokens, self._first = 0, 0, True

    def install(self, llm: Any) -> None:
        original = llm.sample

        def sample(*args: Any, **kwargs: Any) -> int:
            if self._first:
                self.prompt_tokens, self._first = int(llm.n_tokens), False
            token = int(original(*args, **kwargs))
            if not self.is_eog(token):
                self.completion_tokens += 1
            return token

        llm.sample = sample


@dataclass(slots=True)
class Job:
    id: str
    op: str
    payload: dict[str, Any]
    cancelled: threading.Event = field(default_factory=threading.Event)


class Engine:
    """The loaded model and the three things it can do: chat, embed, probe."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import llama_cpp  # imported here: the gateway process imports this module without it

        self._llama_cpp = llama_cpp
        self.embeddings = bool(spec.get("embeddings", False))
        started = time.perf_counter()
        self.llm = llama_cpp.Llama(
            model_path=spec["model_path"],
            n_ctx=int(spec["n_ctx"]),
            n_threads=spec.get("n_threads"),
            # Prompt processing too: llama-cpp-python otherwise takes every core for it.
            n_threads_batch=spec.get("n_threads"),
            n_batch=int(spec["n_batch"]),
            seed=int(spec.get("seed", 0)),
            chat_format=spec.get("chat_format"),
            embedding=self.embeddings,
            verbose=False,
        )
        self.load_time_s = time.perf_counter() - started
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.recorder = SampleRecorder(is_eog=lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token)))
        self.recorder.install(self.llm)

    def ready_message(self) -> dict[str, Any]:
        return {
            "ev": "ready",
            "load_time_s": self.load_time_s,
            "n_ctx": int(self.llm.n_ctx()),
            "n_embd": int(self.llm.n_embd()),
            "pid": os.getpid(),
        }

    def chat(self, job: Job, send: Callable[[dict[str, Any]], None]) -> None:
        params = {k: v for k, v in job.payload.get("params", {}).items() if k in CHAT_PARAMS}
        self.recorder.reset()
        finish: str | None = None
        chunks = cast("Iterator[dict[str, Any]]", self.llm.create_chat_completion(**params, stream=True))
        try:
            for chunk in chunks:
                if job.cancelled.is_set():
                    break
                choice = chunk["choices"][0]
                for message in _delta_messages(job.id, choice.get("delta") or {}):
                    send(message)
                finish = choice.get("finish_reason") or finish
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # stops llama-cpp-python's generator now, not at garbage collection
        if finish is None:
            send({"ev": "cancelled", "id": job.id})
            return
        send(
            {
                "ev": "end",
                "id": job.id,
                "finish_reason": finish,
                "prompt_tokens": self.recorder.prompt_tokens,
                "completion_tokens": self.recorder.completion_tokens,
            }
        )

    def embed(self, job: Job, send: Callable[[dict[str, Any]], None]) -> None:
        # truncate=False: an over-long input is an error (as at OpenAI), not a silently cut vector
        vectors, count = self.llm.embed(
            job.payload["inputs"], normalize=True, truncate=False, return_count=True
        )
        send({"ev": "embedding", "id": job.id, "vectors": vectors, "prompt_tokens": int(count)})

    def probe(self, job: Job, send: Callable[[dict[str, Any]], None]) -> None:
        started = time.perf_counter()
        if self.embeddings:
            self.llm.embed("ping")
        else:
            self.llm.create_completion("ping", max_tokens=1, temperature=0.0)
        send({"ev": "probe", "id": job.id, "latency_s": time.perf_counter() - started})


def _delta_messages(job_id: str, delta: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if delta.get("content"):
        yield {"ev": "delta", "id": job_id, "text": delta["content"]}
    for call in delta.get("tool_calls") or []:
        function = call.get("function") or {}
        yield {
            "ev": "tool",
            "id": job_id,
            "index": int(call.get("index", 0)),
            "call_id": call.get("id"),
            "name": function.get("name"),
            "arguments": function.get("arguments") or "",
        }


def _error_kind(exc: BaseException) -> str:
    text = str(exc)
    if "exceed context window" in text or "exceed batch size" in text:
        return "context_length"
    if isinstance(exc, ValueError | TypeError | KeyError):
        return "invalid"
    return "internal"


class JobRunner:
    """Runs jobs one at a time on its own thread; cancellation is checked between tokens."""

    def __init__(self, engine: Engine, writer: FrameWriter) -> None:
        self._engine = engine
        self._writer = writer
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="llamacpp-generation", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
        self._queue.put(job)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            job.cancelled.set()

    def stop(self, timeout: float) -> bool:
        """Cancel everything, let the thread finish; False if it did not within ``timeout``."""
        with self._lock:
            for job in self._jobs.values():
                job.cancelled.set()
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._jobs.pop(job.id, None)

    def _run(self, job: Job) -> None:
        if job.cancelled.is_set():
            self._writer.send({"ev": "cancelled", "id": job.id})
            return
        engine = self._engine
        handler = {"chat": engine.chat, "embed": engine.embed, "probe": engine.probe}[job.op]
        try:
            handler(job, self._writer.send)
        # The worker's last-resort boundary: whatever llama-cpp-python raises for this request is
        # reported to the gateway as an error frame (which maps it into the error tree) instead of
        # killing the worker and every request queued behind this one. The traceback goes to
        # stderr, which the gateway copies into its log.
        except Exception as exc:
            logger.exception("request %s failed", job.id)
            self._writer.send({"ev": "error", "id": job.id, "kind": _error_kind(exc), "message": str(exc)})


def _claim_stdout() -> IO[bytes]:
    """The frame channel: the original stdout. fd 1 then points at stderr, so anything llama.cpp
    (or a library) prints cannot corrupt the frame stream."""
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return frames


def _load(spec: dict[str, Any], writer: FrameWriter) -> Engine | None:
    try:
        engine = Engine(spec)
    # Last-resort boundary of the load: any failure (missing file, bad GGUF, missing llama_cpp)
    # becomes one load_failed frame the gateway can report, rather than a bare exit status.
    except Exception as exc:
        logger.exception("loading %s failed", spec.get("model_path"))
        writer.send({"ev": "load_failed", "message": f"{type(exc).__name__}: {exc}"})
        return None
    writer.send(engine.ready_message())
    return engine


def main() -> int:
    """Serve frames from stdin until it closes. Exit status 1 if the model did not load."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s: %(message)s")
    writer = FrameWriter(_claim_stdout())
    commands = sys.stdin.buffer
    spec = read_frame(commands)
    if spec is None or spec.get("op") != "load":
        return 2
    engine = _load(spec, writer)
    if engine is None:
        return 1
    runner = JobRunner(engine, writer)
    try:
        while (message := read_frame(commands)) is not None:
            op = message.get("op")
            if op == "cancel":
                runner.cancel(str(message.get("id")))
            elif op in ("chat", "embed", "probe"):
                runner.submit(Job(id=str(message["id"]), op=str(op), payload=message))
    except ProtocolError:
        return 2
    finally:
        stopped = runner.stop(timeout=10.0)
    if not stopped:
        # The generation thread is stuck inside llama.cpp: do not wait for it at interpreter exit.
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The SANDBOX server: a stand-in cloud LLM API on loopback (aiohttp.web, no real model).

Inference endpoints (every response carries ``x-hybridgate-sandbox: 1``):

- ``POST /v1/chat/completions`` (OpenAI; JSON or SSE), ``POST /v1/embeddings`` (OpenAI),
- ``POST /v1/messages`` (Anthropic; JSON or SSE), ``GET /v1/models`` (one body both SDKs read).

Control endpoints: ``GET|POST|DELETE /sandbox/faults``, ``GET /sandbox/stats``,
``POST /sandbox/reset``, ``GET /sandbox/info``. See docs/sandbox.md.

Per request: count it and pick its fault (:class:`~hybridgate.sandbox.faults.FaultBook`); answer
at once if the fault is an error, a reset or a hang; otherwise wait for a concurrency slot,
wait out the drawn time to first token, and send the synthetic answer paced at the drawn rate.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from hybridgate.sandbox.anthropic_api import AnthropicCodec
from hybridgate.sandbox.base import Answer, BadRequest, Codec, ErrorReply, reported_model
from hybridgate.sandbox.faults import FaultBook, FaultRule
from hybridgate.sandbox.openai_api import OpenAICodec, parse_embeddings, render_embeddings
from hybridgate.sandbox.profile import Profile
from hybridgate.sandbox.stats import RequestRecord, Stats
from hybridgate.sandbox.streaming import Pace, StreamWriter, sleep_until
from hybridgate.sandbox.synth import Synthesizer, estimate_tokens

_RULES = TypeAdapter(list[FaultRule])
_Serve = Callable[[web.Request, Codec, Any, RequestRecord], Awaitable[web.StreamResponse]]
_JSON = "application/json"


class _Invalid:
    """Marks a body that is not JSON."""


_NOT_JSON = _Invalid()


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else _NOT_JSON
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=_JSON)


def _reset_connection(request: web.Request) -> None:
    """Drop the connection with a TCP RST before any response byte (SO_LINGER 0, then abort)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _last_user_text(body: Any) -> str:
    """The text of the last user message of an OpenAI or Anthropic body."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _echo(body: Any, max_tokens: int | None) -> Answer:
    """An answer that repeats the last user message, a word (with its spacing) per token."""
    pieces = re.findall(r"\s*\S+", _last_user_text(body)) or ["(empty)"]
    if max_tokens is not None and len(pieces) > max_tokens:
        return Answer(tuple(pieces[:max_tokens]), "length")
    return Answer(tuple(pieces), "stop")


def _fault_reply(fault: FaultRule, tokens: int, limit: int) -> ErrorReply | None:
    """The error reply of an error-kind fault; None for the kinds that do something else."""
    kind = fault.kind
    if kind == "rate_limit":
        return ErrorReply("rate_limit", 429, retry_after_s=fault.retry_after_s)
    if kind in ("server_error", "flapping"):
        return ErrorReply("server_error", fault.error_status, retry_after_s=fault.retry_after_s)
    if kind == "context_length":
        return ErrorReply("context_length", 400, tokens=tokens, limit=limit)
    if kind == "content_policy":
        return ErrorReply("content_policy", 400)
    return None


class SlotPool:
    """Concurrency capacity: ``slots`` requests at once, up to ``max_queue`` waiting, the rest refused."""

    def __init__(self, slots: int | None, max_queue: int | None) -> None:
        self._semaphore = asyncio.Semaphore(slots) if slots is not None else None
        self._max_queue = max_queue
        self.waiting = 0

    def admits(self) -> bool:
        if self._semaphore is None or self._max_queue is None or not self._semaphore.locked():
            return True
        return self.waiting < self._max_queue

    @asynccontextmanager
    async def hold(self, record: RequestRecord) -> AsyncIterator[None]:
        if self._semaphore is None:
            yield
            return
        self.waiting += 1
        queued_at = time.monotonic()
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        record.queued_s = time.monotonic() - queued_at
        try:
            yield
        finally:
            self._semaphore.release()


class SandboxServer:
    """One sandbox: a profile, a seed, its faults and stats, and the aiohttp application.

    >>> server = SandboxServer(load_profile("test-fast"), seed=1)
    >>> port = await server.start(socket.create_server(("127.0.0.1", 0)))
    >>> ...
    >>> await server.close()
    """

    def __init__(
        self, profile: Profile, *, seed: int = 0, time_scale: float | None = None, log_size: int = 10_000
    ):
        self.profile = profile
        self.seed = seed
        self.time_scale = profile.time_scale if time_scale is None else time_scale
        self._rng = random.Random(seed)
        self._synth = Synthesizer(seed, profile)
        self.faults = FaultBook(self._rng, time.monotonic)
        self.faults.add(profile.faults)
        self.stats = Stats(log_size)
        self._slots = SlotPool(profile.slots, profile.max_queue)
        self._openai = OpenAICodec()
        self._anthropic = AnthropicCodec()
        created = int(time.time())
        names = [reported_model(m) for m in profile.models]
        models = [
            {
                "id": m,
                "object": "model",
                "created": created,
                "owned_by": "hybridgate-sandbox",
                "type": "model",
                "display_name": f"{m} (hybridgate sandbox)",
                "created_at": "2024-01-01T00:00:00Z",
            }
            for m in names
        ]
        self._models_body = orjson.dumps(
            {"object": "list", "data": models, "has_more": False, "first_id": names[0], "last_id": names[-1]}
        )
        self._runner: web.AppRunner | None = None
        # Test aids: keep the bodies received (to check what a "cloud" was sent), and answer
        # with the last user message instead of synthetic text (to check what comes back).
        self.captured: deque[dict[str, Any]] | None = None
        self.echo = False
        self.app = self._build_app()

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.on_response_prepare.append(self._label)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/sandbox/faults", self._get_faults)
        app.router.add_post("/sandbox/faults", self._add_faults)
        app.router.add_delete("/sandbox/faults", self._clear_faults)
        app.router.add_get("/sandbox/stats", self._get_stats)
        app.router.add_post("/sandbox/reset", self._reset_stats)
        app.router.add_get("/sandbox/info", self._info)
        app.router.add_post("/sandbox/capture", self._set_capture)
        app.router.add_get("/sandbox/captured", self._get_captured)
        return app

    # ------------------------------------------------------------------ lifecycle

    async def start(self, sock: socket.socket) -> int:
        """Serve on ``sock`` (already bound); returns the port."""
        runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        port: int = sock.getsockname()[1]
        return port

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @staticmethod
    async def _label(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-hybridgate-sandbox"] = "1"

    # ------------------------------------------------------------------ inference

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, self._openai, self._openai.endpoint, self._chat)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, self._anthropic, self._anthropic.endpoint, self._chat)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, self._openai, "embeddings", self._embed)

    async def _handle(
        self, request: web.Request, codec: Codec, endpoint: str, serve: _Serve
    ) -> web.StreamResponse:
        """Record the request, serve it, and account for how it ended."""
        arrival = time.monotonic()
        body = _loads(await request.read())
        fields = body if isinstance(body, dict) else {}
        model = fields.get("model") if isinstance(fields.get("model"), str) else None
        record = self.stats.arrive(endpoint, arrival, model, fields.get("stream") is True)
        if self.captured is not None:
            # Trace context only from the headers: the credentials an adapter sends are never kept.
            trace = {k: request.headers[k] for k in ("traceparent", "tracestate") if k in request.headers}
            self.captured.append({"endpoint": endpoint, "body": body, "trace": trace})
        try:
            return await serve(request, codec, body, record)
        except BadRequest as exc:
            record.outcome = "invalid"
            return self._error(
                codec, ErrorReply("invalid_request", 400, exc.message, exc.param, exc.code), record
            )
        except asyncio.CancelledError:
            record.outcome = "disconnected"
            raise
        finally:
            self.stats.leave(record, time.monotonic())

    async def _admit(
        self, request: web.Request, codec: Codec, record: RequestRecord, model: str, stream: bool, tokens: int
    ) -> tuple[web.StreamResponse | None, FaultRule | None]:
        """Apply what happens before any answer: the fault's error/reset/hang, context window, capacity.

        Returns the response that ends the request here (or None), and the request's fault.
        """
        fault = self.faults.select(model, stream)
        limit = self.profile.context_window
        if fault is not None:
            record.fault = fault.kind
            reply = _fault_reply(fault, max(tokens, limit + 1), limit)
            if reply is not None:
                return self._error(codec, reply, record), fault
            if fault.kind == "reset":
                record.outcome = "reset"
                _reset_connection(request)
                return web.Response(status=500), fault
            if fault.kind == "hang":
                await asyncio.get_running_loop().create_future()  # until the client gives up
        if tokens > limit:
            return self._error(
                codec, ErrorReply("context_length", 400, tokens=tokens, limit=limit), record
            ), fault
        if not self._slots.admits():
            record.outcome = "overloaded"
            return self._error(codec, ErrorReply("overloaded", 503), record), fault
        return None, fault

    async def _chat(
        self, request: web.Request, codec: Codec, body: Any, record: RequestRecord
    ) -> web.StreamResponse:
        job = codec.parse(body)
        record.prompt_tokens = job.prompt_tokens
        needed = job.prompt_tokens + (job.max_tokens or 0)
        ended, fault = await self._admit(request, codec, record, job.model, job.stream, needed)
        if ended is not None:
            return ended
        timing = self.profile.draw_timing(self._rng, job.prompt_tokens, self.time_scale)
        extra = fault.delay_s if fault is not None and fault.kind == "slow_first_token" else 0.0
        record.slow, record.planned_ttft_s = timing.slow, timing.ttft_s + extra
        if timing.token_interval_s:
            record.planned_tps = 1.0 / timing.token_interval_s
        answer = _echo(body, job.max_tokens) if self.echo else self._synth.compose(job)
        request_id = f"sbx{self.seed}{record.seq:010d}"
        async with self._slots.hold(record):
            first_at = time.monotonic() + timing.ttft_s + extra
            if job.stream:
                writer = StreamWriter(request, codec.stream(job, answer, request_id), record)
                await writer.open()
                response = await writer.run(Pace(first_at, timing.token_interval_s), fault)
            else:
                await sleep_until(first_at + max(0, answer.completion_tokens - 1) * timing.token_interval_s)
                record.first_token_s = time.monotonic() - record.arrival
                record.completion_tokens = answer.completion_tokens
                response = web.Response(body=codec.completion(job, answer, request_id), content_type=_JSON)
        if record.outcome == "in_progress":
            record.finish_reason = answer.finish
        return response

    async def _embed(
        self, request: web.Request, codec: Codec, body: Any, record: RequestRecord
    ) -> web.StreamResponse:
        model, texts, dims, as_base64 = parse_embeddings(body)
        tokens = sum(estimate_tokens(len(t)) for t in texts)
        record.prompt_tokens = tokens
        ended, fault = await self._admit(request, codec, record, model, False, tokens)
        if ended is not None:
            return ended
        delay = fault.delay_s if fault is not None and fault.kind == "slow_first_token" else 0.0
        if self.time_scale:
            latency = (
                self.profile.embedding.latency.draw(self._rng) + self.profile.prefill_s_per_token * tokens
            )
            delay += latency * self.time_scale
        record.planned_ttft_s = delay
        async with self._slots.hold(record):
            await sleep_until(time.monotonic() + delay)
            vectors = [self._synth.embed(t, dims or self.profile.embedding.dims) for t in texts]
            record.first_token_s = time.monotonic() - record.arrival
            return web.Response(body=render_embeddings(model, vectors, as_base64, tokens), content_type=_JSON)

    def _error(self, codec: Codec, reply: ErrorReply, record: RequestRecord | None) -> web.Response:
        """The provider-worded error response (``Retry-After`` in seconds, ``retry-after-ms`` exact)."""
        status, body = codec.error(reply)
        headers: dict[str, str] = {}
        if reply.retry_after_s is not None:
            headers["retry-after"] = str(math.ceil(reply.retry_after_s))
            headers["retry-after-ms"] = str(round(reply.retry_after_s * 1000))
        if record is not None:
            record.status = status
            if record.outcome == "in_progress":
                record.outcome = "error"
        return web.Response(body=body, status=status, content_type=_JSON, headers=headers)

    async def _models(self, request: web.Request) -> web.Response:
        self.stats.model_list_requests += 1
        outage = self.faults.outage()
        if outage is not None:
            codec: Codec = self._anthropic if "anthropic-version" in request.headers else self._openai
            return self._error(codec, ErrorReply("server_error", outage.error_status), None)
        return web.Response(body=self._models_body, content_type=_JSON)

    # ------------------------------------------------------------------ control

    def _rules_body(self) -> dict[str, Any]:
        rules = [
            {"rule": r.rule.model_dump(exclude_none=True), "matched": r.matched, "fired": r.fired}
            for r in self.faults.rules
        ]
        return {"rules": rules}

    async def _get_faults(self, request: web.Request) -> web.Response:
        return _json(self._rules_body())

    async def _add_faults(self, request: web.Request) -> web.Response:
        body = _loads(await request.read())
        try:
            rules = _RULES.validate_python([body] if isinstance(body, dict) else body)
        except ValidationError as exc:
            return _json({"error": {"message": str(exc), "type": "invalid_request_error"}}, 400)
        self.faults.add(rules)
        return _json(self._rules_body())

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return _json(self._rules_body())

    async def _get_stats(self, request: web.Request) -> web.Response:
        return _json(self.stats.snapshot())

    async def _reset_stats(self, request: web.Request) -> web.Response:
        self.stats.reset()
        return _json({"ok": True})

    async def _set_capture(self, request: web.Request) -> web.Response:
        """``{"enabled": bool, "echo": bool, "size": int}``: keep request bodies / echo prompts."""
        body = _loads(await request.read())
        if not isinstance(body, dict):
            return _json({"error": "expected a JSON object"}, 400)
        enabled, size = bool(body.get("enabled", True)), body.get("size", 256)
        if not isinstance(size, int) or size < 1:
            return _json({"error": "size must be a positive integer"}, 400)
        self.captured = deque(maxlen=size) if enabled else None
        self.echo = bool(body.get("echo", False))
        return _json({"enabled": enabled, "echo": self.echo, "size": size})

    async def _get_captured(self, request: web.Request) -> web.Response:
        return _json({"requests": list(self.captured or ())})

    async def _info(self, request: web.Request) -> web.Response:
        return _json(
            {
                "sandbox": True,
                "note": "hybridgate SANDBOX: synthetic text and latency, not a real model",
                "pid": os.getpid(),
                "seed": self.seed,
                "time_scale": self.time_scale,
                "profile": self.profile.model_dump(),
            }
        )

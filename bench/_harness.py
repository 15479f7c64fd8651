"""Shared pieces of the hybridgate benchmarks.

* a fast OpenAI-compatible mock upstream (raw ``asyncio.Protocol``, uvloop, prebuilt bytes),
  meant to run in its own process: ``python bench/_harness.py mock --port 0``;
* a raw asyncio HTTP/1.1 load client (keep-alive, prebuilt request bytes, Content-Length and
  chunked bodies, SSE first-content-token detection) with strict response validation;
* /proc sampling (CPU of process trees and cores, RSS of a process tree);
* child processes in their own process group, stopped by PID/group even on errors.

Nothing here imports hybridgate: the benchmarks measure the gateway only through its CLI and
its HTTP port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

from hybridgate.childproc import die_with_parent

perf = time.perf_counter
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The gateway (uvicorn) closes a keep-alive connection after 5 s idle; a request sent on it just
# then meets a closed connection and nothing read. Clients do not reuse connections idle for
# longer than this (as httpx's keepalive_expiry does).
KEEPALIVE_EXPIRY_S = 4.0
MOCK_READY = re.compile(r"mock-upstream: listening on http://127\.0\.0\.1:(\d+)")


# --------------------------------------------------------------------------- event loop
def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop factory when uvloop is importable, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hybridgate dependency on Linux
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    """Human name of the event loop :func:`loop_factory` picks."""
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "asyncio"


# --------------------------------------------------------------------------- statistics
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linearly interpolated percentile (``q`` in 0..100) of an already sorted, non-empty sequence."""
    n = len(sorted_values)
    if n == 1:
        return sorted_values[0]
    k = (n - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def median(values: Iterable[float]) -> float:
    """Median of a non-empty iterable."""
    return percentile(sorted(values), 50.0)


def summarize_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p90, p99, max and mean, in milliseconds, of samples given in seconds."""
    if not samples_s:
        return {"n": 0}
    ms = sorted(s * 1000.0 for s in samples_s)
    return {
        "n": len(ms),
        "min": round(ms[0], 4),
        "p50": round(percentile(ms, 50), 4),
        "p90": round(percentile(ms, 90), 4),
        "p99": round(percentile(ms, 99), 4),
        "max": round(ms[-1], 4),
        "mean": round(sum(ms) / len(ms), 4),
    }


# --------------------------------------------------------------------------- mock upstream
_TEXT = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco"
)
_WORDS = _TEXT.split()


def mock_tokens(n: int) -> list[str]:
    """The ``n`` completion tokens the mock answers with (deterministic)."""
    return [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(n)]


def mock_content(n: int) -> str:
    """The full completion text for ``n`` tokens: what every valid response must carry."""
    return "".join(mock_tokens(n))


def http_response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    """A complete HTTP/1.1 response with a Content-Length body."""
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _sse_chunk(obj: Mapping[str, Any] | None) -> bytes:
    """One SSE event (``data: ...``) framed as one HTTP/1.1 chunk; ``None`` is ``[DONE]``."""
    event = b"data: " + (b"[DONE]" if obj is None else orjson.dumps(obj)) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


@dataclass(frozen=True)
class MockPayloads:
    """Complete response bytes, built once at start-up."""

    completion: bytes
    stream: bytes
    models: bytes
    stream_events: int


def build_mock_payloads(model: str, n_tokens: int, created: int) -> MockPayloads:
    """Non-streaming and streaming chat completions and the model list, as wire bytes."""
    tokens = mock_tokens(n_tokens)
    usage = {"prompt_tokens": 20, "completion_tokens": n_tokens, "total_tokens": 20 + n_tokens}
    cid = "chatcmpl-mock000000000000000000000"
    base = {"id": cid, "created": created, "model": model, "system_fingerprint": "fp_mock"}
    message = {"role": "assistant", "content": "".join(tokens), "refusal": None}
    completion = {
        **base,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage,
    }

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        choices = (
            [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        out: dict[str, Any] = {**base, "object": "chat.completion.chunk", "choices": choices}
        if delta is None:
            out["usage"] = usage
        return out

    events: list[Mapping[str, Any] | None] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": t}) for t in tokens]
    events += [chunk({}, finish="stop"), chunk(None), None]
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    stream = head + b"".join(_sse_chunk(e) for e in events) + b"0\r\n\r\n"
    models = {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": created, "owned_by": "mock"}],
    }
    return MockPayloads(
        completion=http_response("200 OK", orjson.dumps(completion)),
        stream=stream,
        models=http_response("200 OK", orjson.dumps(models)),
        stream_events=len(events),
    )


@dataclass
class MockCounters:
    """What the mock served, by kind (``GET /mock/stats``)."""

    chat: int = 0
    chat_stream: int = 0
    models: int = 0
    other: int = 0
    bad: int = 0
    connections: int = 0

    def as_json(self) -> bytes:
        """The counters plus the mock's PID, as JSON."""
        return orjson.dumps({**self.__dict__, "pid": os.getpid()})


class _MockProtocol(asyncio.Protocol):
    """Serves one client connection: HTTP/1.1 keep-alive, pipelining-safe (answers are immediate)."""

    def __init__(self, payloads: MockPayloads, counters: MockCounters) -> None:
        self.payloads = payloads
        self.counters = counters
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.counters.connections += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        while self.transport is not None and not self.transport.is_closing():
            try:
                request = self._next_request()
            except ValueError:  # unparsable Content-Length or chunk size
                self._reject()
                return
            if request is None:
                return
            method, path, body, keep = request
            assert self.transport is not None
            self.transport.write(self._answer(method, path, body))
            if not keep:
                self.transport.close()

    def _next_request(self) -> tuple[bytes, bytes, bytes, bool] | None:
        """Pop one complete request (method, path, body, keep-alive) off the buffer, or None."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = buf[:end].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._reject()
            return None
        method, path, version = parts
        length, chunked, keep = 0, False, version == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep = value.strip().lower() != b"close"
        if chunked:
            decoded = dechunk(buf, end + 4)
            if decoded is None:
                return None
            body, pos = decoded
        else:
            if len(buf) < end + 4 + length:
                return None
            body, pos = buf[end + 4 : end + 4 + length], end + 4 + length
        self.buf = buf[pos:]
        return method, path.split(b"?", 1)[0], body, keep

    def _reject(self) -> None:
        self.counters.bad += 1
        assert self.transport is not None
        self.transport.write(http_response("400 Bad Request", b'{"error":"bad request line"}'))
        self.transport.close()

    def _answer(self, method: bytes, path: bytes, body: bytes) -> bytes:
        """The response bytes for one request; updates the counters."""
        c = self.counters
        if method == b"POST" and path == b"/v1/chat/completions":
            return self._chat(body)
        if method == b"GET" and path == b"/v1/models":
            c.models += 1
            return self.payloads.models
        if method == b"GET" and path == b"/mock/stats":
            return http_response("200 OK", c.as_json())
        if method == b"GET" and path == b"/health":
            return http_response("200 OK", b"ok", "text/plain")
        c.other += 1
        return http_response("404 Not Found", b'{"error":{"message":"not found","type":"not_found"}}')

    def _chat(self, body: bytes) -> bytes:
        """A chat completion: validates the request JSON, answers JSON or SSE."""
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            req = None
        if not isinstance(req, dict) or not isinstance(req.get("messages"), list) or not req["messages"]:
            self.counters.bad += 1
            return http_response("400 Bad Request", b'{"error":{"message":"bad chat request"}}')
        if req.get("stream") is True:
            self.counters.chat_stream += 1
            return self.payloads.stream
        self.counters.chat += 1
        return self.payloads.completion


def dechunk(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``pos``: (body, end position), or None if incomplete."""
    out: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            break
        if len(buf) < pos + size + 2:
            return None
        out.append(buf[pos : pos + size])
        pos += size + 2
    while True:  # trailer fields, up to the empty line
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        if eol == pos:
            return b"".join(out), pos + 2
        pos = eol + 2


async def serve_mock(port: int, model: str, n_tokens: int) -> None:
    """Run the mock on 127.0.0.1:``port`` until SIGTERM/SIGINT or until its parent process dies."""
    loop = asyncio.get_running_loop()
    payloads = build_mock_payloads(model, n_tokens, int(time.time()))
    counters = MockCounters()
    server = await loop.create_server(
        lambda: _MockProtocol(payloads, counters), "127.0.0.1", port, backlog=1024
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"mock-upstream: listening on http://127.0.0.1:{bound} pid={os.getpid()}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    async with server:
        while not stop.is_set() and os.getppid() == parent:  # orphaned: the benchmark died
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


def mock_main(argv: Sequence[str]) -> int:
    """Command line of the mock upstream."""
    ap = argparse.ArgumentParser(prog="_harness.py mock", description="OpenAI-compatible mock upstream.")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free)")
    ap.add_argument("--model", default="mock", help="model name in the responses")
    ap.add_argument("--tokens", type=int, default=60, help="completion tokens per answer")
    args = ap.parse_args(argv)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve_mock(args.port, args.model, args.tokens))
    return 0


# --------------------------------------------------------------------------- HTTP client
@dataclass(frozen=True)
class Target:
    """Where requests go, with the request bytes prebuilt (keyed by the stream flag)."""

    name: str
    host: str
    port: int
    requests: Mapping[bool, bytes]
    expected_content: str


def make_target(
    name: str,
    port: int,
    *,
    model: str,
    n_tokens: int,
    api_key: str | None = None,
    prompt: str = "Write one short paragraph about latency measurement.",
) -> Target:
    """A loopback target on ``port`` serving ``POST /v1/chat/completions``."""
    requests: dict[bool, bytes] = {}
    for stream in (False, True):
        body = orjson.dumps(
            {
                "model": model,
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": prompt},
                ],
                "max_tokens": n_tokens,
                "temperature": 0,
                "stream": stream,
            }
        )
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "User-Agent: hybridgate-bench/1\r\n"
            f"Accept: {'text/event-stream' if stream else 'application/json'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        )
        if api_key:
            head += f"Authorization: Bearer {api_key}\r\n"
        requests[stream] = head.encode() + b"\r\n" + body
    return Target(name, "127.0.0.1", port, requests, mock_content(n_tokens))


@dataclass(slots=True)
class Reply:
    """One request's outcome. Times are ``perf_counter`` seconds; ``error`` None means valid."""

    t_start: float = 0.0
    t_end: float = 0.0
    t_first: float | None = None
    status: int = 0
    body: bytes = b""
    close: bool = False
    error: str | None = None

    @property
    def latency(self) -> float:
        """Seconds from just before the request was written to the last byte read."""
        return self.t_end - self.t_start

    @property
    def ttft(self) -> float | None:
        """Seconds to the first SSE event with non-empty ``delta.content`` (streams only)."""
        return None if self.t_first is None else self.t_first - self.t_start


_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE = range(7)


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.alive = False
        self._fut: asyncio.Future[Reply] | None = None
        self._reply = Reply()
        self._stream = False
        self._timer: asyncio.TimerHandle | None = None
        self._buf = b""
        self._state = _HEAD
        self._remaining = 0
        self._parts: list[bytes] = []
        self._sse = b""

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.alive = True
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self._state == _UNTIL_CLOSE:
            self._finish(perf())
        else:
            self._fail("conn_closed")

    def data_received(self, data: bytes) -> None:
        now = perf()
        if self._fut is None or self._fut.done():
            self._fail("unexpected_bytes")
            return
        self._buf = self._buf + data if self._buf else data
        try:
            self._parse(now)
        except (ValueError, IndexError) as exc:
            self._fail(f"bad_response:{type(exc).__name__}")

    # -- request
    def send(self, payload: bytes, stream: bool, timeout: float) -> asyncio.Future[Reply]:
        """Write one prebuilt request; the future resolves with its :class:`Reply` (never raises)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._fut = loop.create_future()
        self._reply = Reply()
        self._stream = stream
        self._buf, self._sse, self._parts = b"", b"", []
        self._state = _HEAD
        self._timer = loop.call_later(timeout, self._fail, "timeout")
        self._reply.t_start = perf()
        self.transport.write(payload)
        return self._fut

    # -- parsing
    def _parse(self, now: float) -> None:
        """Consume the buffer as far as the state machine can go (offsets, no re-slicing)."""
        buf, pos, n = self._buf, 0, len(self._buf)
        while self._fut is not None and not self._fut.done():
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if n - pos > 65536:
                        raise ValueError("response head too large")
                    break
                self._on_head(buf[pos:end])
                pos = end + 4
            elif state in (_LENGTH, _CHUNK_DATA):
                take = min(self._remaining, n - pos)
                if take:
                    self._on_body(buf[pos : pos + take], now)
                    pos += take
                    self._remaining -= take
                if self._remaining:
                    break
                if state == _LENGTH:
                    self._finish(now)
                else:
                    self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if n - pos < 2:
                    break
                pos += 2
                self._state = _CHUNK_SIZE
            elif state in (_CHUNK_SIZE, _TRAILERS):
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                line, pos = buf[pos:eol], eol + 2
                if state == _CHUNK_SIZE:
                    self._on_chunk_size(line)
                elif not line:  # the empty line that ends the trailers
                    self._finish(now)
            else:  # _UNTIL_CLOSE: the body is everything until the server closes
                if pos < n:
                    self._on_body(buf[pos:], now)
                pos = n
                break
        self._buf = buf[pos:] if pos < n else b""

    def _on_head(self, head: bytes) -> None:
        """Status line and headers: choose how the body is framed."""
        lines = head.split(b"\r\n")
        version, status = lines[0].split(b" ", 2)[:2]
        r = self._reply
        r.status = int(status)
        r.close = version != b"HTTP/1.1"
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                r.close = value.strip().lower() == b"close"
        if 100 <= r.status < 200:
            return  # interim response: the real head follows
        if chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._state, self._remaining = _LENGTH, length
        else:
            self._state, r.close = _UNTIL_CLOSE, True

    def _on_chunk_size(self, line: bytes) -> None:
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            self._state = _TRAILERS
        else:
            self._state, self._remaining = _CHUNK_DATA, size

    def _on_body(self, piece: bytes, now: float) -> None:
        self._parts.append(piece)
        if self._stream and self._reply.t_first is None:
            self._scan_sse(piece, now)

    def _scan_sse(self, data: bytes, now: float) -> None:
        """Set ``t_first`` at the first complete SSE event carrying non-empty ``delta.content``."""
        buf = self._sse + data
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            line = buf[start:nl].strip()
            start = nl + 1
            if line.startswith(b"data:") and delta_content(line[5:].strip()):
                self._reply.t_first = now
                self._sse = b""
                return
        self._sse = buf[start:]

    # -- completion
    def _finish(self, now: float) -> None:
        if self._fut is None or self._fut.done():
            return
        self._cancel_timer()
        r = self._reply
        r.t_end = now
        r.body = b"".join(self._parts)
        if r.close:
            self._drop()
        self._fut.set_result(r)

    def _fail(self, why: str) -> None:
        self._cancel_timer()
        if self._fut is not None and not self._fut.done():
            self._reply.error = why
            self._reply.t_end = perf()
            self._fut.set_result(self._reply)
        self._drop()

    def _drop(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def delta_content(payload: bytes) -> str:
    """Concatenated non-empty ``choices[*].delta.content`` of one SSE data payload ('' if none)."""
    if payload == b"[DONE]" or not payload:
        return ""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
        return ""
    out = ""
    for choice in obj["choices"]:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            out += content
    return out


def check_completion(body: bytes, expected: str) -> str | None:
    """None if ``body`` is a chat completion whose content is ``expected``, else an error kind."""
    try:
        obj = orjson.loads(body)
        content = obj["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return "bad_json"
    if not isinstance(content, str) or not content:
        return "empty_content"
    return None if content == expected else "content_mismatch"


def check_sse(body: bytes, expected: str) -> str | None:
    """None if ``body`` is an SSE chat stream spelling ``expected`` and ending in ``[DONE]``."""
    parts: list[str] = []
    done = False
    for raw in body.split(b"\n"):
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if done:
            return "data_after_done"
        if payload == b"[DONE]":
            done = True
            continue
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return "bad_sse_json"
        if isinstance(obj, dict) and obj.get("error"):
            return "sse_error_event"
        parts.append(delta_content(payload))
    content = "".join(parts)
    if not content:
        return "no_content_token"
    if content != expected:
        return "content_mismatch"
    return None if done else "no_done"


def validate(reply: Reply, stream: bool, expected: str) -> None:
    """Set ``reply.error`` unless it is a 200 with exactly the expected content."""
    if reply.error is not None:
        return
    if reply.status != 200:
        reply.error = f"http_{reply.status}"
    elif stream:
        reply.error = check_sse(reply.body, expected)
        if reply.error is None and reply.t_first is None:
            reply.error = "no_content_token"
    else:
        reply.error = check_completion(reply.body, expected)


@dataclass
class Ledger:
    """Requests written per target and errors by target and kind, over a whole run."""

    sent: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def record_error(self, target: str, kind: str) -> None:
        """Count one failed request."""
        self.errors[f"{target}:{kind}"] += 1


class Client:
    """A target plus one lazily (re)opened keep-alive connection."""

    def __init__(self, target: Target, ledger: Ledger, timeout: float = 30.0) -> None:
        self.target = target
        self.ledger = ledger
        self.timeout = timeout
        self.conn: HttpConnection | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        """Open (or reopen) the connection."""
        if self.conn is not None:
            self.reconnects += 1
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            _, self.conn = await loop.create_connection(HttpConnection, self.target.host, self.target.port)

    async def call(self, stream: bool) -> Reply:
        """One validated request; failures come back as ``Reply.error`` (and in the ledger)."""
        if self.conn is None or not self.conn.alive:
            try:
                await self.connect()
            except (OSError, TimeoutError) as exc:
                self.conn = None
                kind = f"connect:{type(exc).__name__}"
                self.ledger.record_error(self.target.name, kind)
                now = perf()
                return Reply(t_start=now, t_end=now, error=kind)
        assert self.conn is not None
        self.ledger.sent[self.target.name] += 1
        reply = await self.conn.send(self.target.requests[stream], stream, self.timeout)
        validate(reply, stream, self.target.expected_content)
        if reply.error is not None:
            self.ledger.record_error(self.target.name, reply.error)
        return reply

    def close(self) -> None:
        """Close the connection, if any."""
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn = None


async def http_get(port: int, path: str, headers: str = "") -> tuple[int, bytes]:
    """``GET path`` on 127.0.0.1:``port`` over a fresh connection: (status, body).

    Callers bound it with ``asyncio.timeout``.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Connection: close\r\n\r\n"
        writer.write(head.encode())
        raw = await reader.read()
    finally:
        writer.close()
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head_bytes.lower():
        decoded = dechunk(body, 0)
        body = decoded[0] if decoded else b""
    return int(head_bytes.split(b" ", 2)[1]), body


async def mock_stats(port: int) -> dict[str, int]:
    """The mock's request counters."""
    async with asyncio.timeout(5.0):
        status, body = await http_get(port, "/mock/stats")
    if status != 200:
        raise RuntimeError(f"mock /mock/stats answered {status}")
    stats: dict[str, int] = orjson.loads(body)
    return stats


# --------------------------------------------------------------------------- /proc
def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    raw = _read(f"/proc/{pid}/stat")
    return None if raw is None else raw[raw.rfind(b")") + 2 :].split()


def _children(pid: int) -> list[int] | None:
    """Child PIDs of every thread of ``pid`` (None if /proc/PID/task/*/children is unavailable)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tids:
        raw = _read(f"/proc/{pid}/task/{tid}/children")
        if raw is None:
            if os.path.exists(f"/proc/{pid}/task/{tid}"):
                return None  # kernel without CONFIG_PROC_CHILDREN
            continue
        out.extend(int(x) for x in raw.split())
    return out


def _children_by_scan() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(roots: Iterable[int]) -> list[int]:
    """``roots`` plus all their live descendants."""
    scanned: dict[int, list[int]] | None = None
    out: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in out or not os.path.exists(f"/proc/{pid}"):
            continue
        out.append(pid)
        kids = _children(pid) if scanned is None else None
        if kids is None:
            scanned = scanned if scanned is not None else _children_by_scan()
            kids = scanned.get(pid, [])
        todo.extend(kids)
    return out


def cpu_seconds(pids: Iterable[int], *, reaped: bool = False) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (all threads); with ``reaped``, also
    by the children they have waited for (which may have lived too briefly to be seen)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
            if reaped:
                ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``...) of /proc/PID/status."""
    raw = _read(f"/proc/{pid}/status")
    if raw is None:
        return None
    for line in raw.decode().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def thread_affinities(pid: int) -> list[str]:
    """Distinct ``Cpus_allowed_list`` values over all threads of ``pid``."""
    seen: set[str] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            raw = _read(f"/proc/{pid}/task/{tid}/status") or b""
            for line in raw.decode().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    seen.add(line.split(":", 1)[1].strip())
    return sorted(seen)


def core_times() -> dict[str, tuple[int, int, int]]:
    """Per core: (total, idle incl. iowait, steal) ticks from /proc/stat."""
    out: dict[str, tuple[int, int, int]] = {}
    for line in (_read("/proc/stat") or b"").decode().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals[:8]]
            out[name] = (sum(v), v[3] + v[4], v[7] if len(v) > 7 else 0)
    return out


def busy_cores(cores0: Mapping[str, tuple[int, int, int]]) -> float:
    """Cores busy since ``cores0`` (a :func:`core_times` reading), summed: 1.0 = one core."""
    busy = 0.0
    for core, (total1, idle1, _) in core_times().items():
        total0, idle0, _ = cores0.get(core, (total1, idle1, 0))
        if total1 > total0:
            busy += 1.0 - (idle1 - idle0) / (total1 - total0)
    return busy


def load_average() -> list[float]:
    """1/5/15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


class CpuWindow:
    """CPU use of the driver, the gateway tree, the mock tree and every core over one window.

    ``other`` is busy core time not explained by those three: other processes on the machine.
    """

    def __init__(self, gateway_pid: int, mock_pid: int) -> None:
        self.gateway_pid = gateway_pid
        self.mock_pid = mock_pid
        self._t0 = 0.0
        self._proc0 = 0.0
        self._cores0: dict[str, tuple[int, int, int]] = {}
        self._gw_tree: list[int] = []
        self._gw0 = 0.0
        self._mock0 = 0.0

    def start(self) -> None:
        """Begin the window."""
        self._gw_tree = process_tree([self.gateway_pid])
        self._gw0 = cpu_seconds(self._gw_tree)
        self._mock0 = cpu_seconds([self.mock_pid])
        self._cores0 = core_times()
        self._proc0 = time.process_time()
        self._t0 = perf()

    def stop(self) -> dict[str, Any]:
        """End the window: CPU fractions (1.0 = one core busy) over its wall time."""
        wall = perf() - self._t0
        driver = (time.process_time() - self._proc0) / wall
        cores1 = core_times()
        gateway = (cpu_seconds(self._gw_tree) - self._gw0) / wall
        mock = (cpu_seconds([self.mock_pid]) - self._mock0) / wall
        busy: dict[str, float] = {}
        steal: dict[str, float] = {}
        for core, (total1, idle1, steal1) in cores1.items():
            total0, idle0, steal0 = self._cores0.get(core, (total1, idle1, steal1))
            if total1 > total0:
                busy[core] = round(1.0 - (idle1 - idle0) / (total1 - total0), 3)
                steal[core] = round((steal1 - steal0) / (total1 - total0), 3)
        other = max(0.0, sum(busy.values()) - driver - gateway - mock)
        return {
            "wall_s": round(wall, 3),
            "driver": round(driver, 3),
            "gateway": round(gateway, 3),
            "mock": round(mock, 3),
            "other": round(other, 3),
            "cores_busy": busy,
            "cores_steal": steal,
        }


class RssSampler:
    """Peak of the summed VmRSS of a process tree, sampled on the event loop."""

    def __init__(self, root: int, period: float = 0.2) -> None:
        self.root = root
        self.period = period
        self.peak_kb = 0
        self.hwm_kb: dict[int, int] = {}
        self.samples = 0
        self._tree: list[int] = [root]
        self._task: asyncio.Task[None] | None = None

    def sample(self, refresh: bool = False) -> None:
        """Take one sample (re-listing the tree's processes when ``refresh``)."""
        if refresh:
            self._tree = process_tree([self.root])
        total = 0
        for pid in self._tree:
            total += status_kb(pid, "VmRSS") or 0
            hwm = status_kb(pid, "VmHWM")
            if hwm is not None:
                self.hwm_kb[pid] = max(hwm, self.hwm_kb.get(pid, 0))
        self.peak_kb = max(self.peak_kb, total)
        self.samples += 1

    async def _run(self) -> None:
        while True:
            self.sample(refresh=self.samples % 10 == 0)
            await asyncio.sleep(self.period)

    def start(self) -> None:
        """Sample every ``period`` seconds until :meth:`stop`."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling (after one last sample)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample(refresh=True)

    def report(self) -> dict[str, Any]:
        """Peak sampled RSS and the kernel's per-process high-water marks, in MB."""
        return {
            "peak_rss_mb": round(self.peak_kb / 1024, 1),
            "vmhwm_sum_mb": round(sum(self.hwm_kb.values()) / 1024, 1),
            "processes": len(self.hwm_kb),
            "samples": self.samples,
            "sample_period_s": self.period,
        }


async def open_loop(
    offsets: Sequence[float], fire: Callable[[int, float], Coroutine[Any, Any, None]], lead_s: float = 0.05
) -> None:
    """Open-loop traffic: ``fire(i, due)`` starts at ``offsets[i]`` seconds after now + ``lead_s``
    (``due`` in ``loop.time()``), whether or not the ones before it have finished; returns when all
    have. Nothing waits for an answer before sending the next request."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    start = loop.time() + lead_s
    try:
        for i, offset in enumerate(offsets):
            due = start + offset
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(i, due)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


# --------------------------------------------------------------------------- child processes
@contextlib.contextmanager
def affinity(cpus: set[int] | None) -> Iterator[None]:
    """Run the block with this thread pinned to ``cpus`` (children forked inside inherit it)."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def sigterm_as_interrupt() -> None:
    """SIGTERM behaves like Ctrl-C: the benchmark unwinds, stopping every child process."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def log_problems(log: str, limit: int = 20) -> list[str]:
    """Lines of a child's log that look like errors (at most ``limit``)."""
    bad = [ln for ln in log.splitlines() if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", ln)]
    return bad[:limit]


def cpu_model() -> str:
    """The CPU's model name (for the results' metadata)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def write_results(report: Mapping[str, Any], json_path: Path | None, results_dir: Path, name: str) -> Path:
    """Write a benchmark's JSON to ``json_path``, or to ``results_dir/<name>-<timestamp>.json``."""
    path = json_path or results_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path


class ChildError(RuntimeError):
    """A child process did not become ready."""


class Child:
    """A child process in its own process group, logging to a file, ready when a line matches.

    :meth:`stop` signals the whole group (SIGTERM, then SIGKILL), so helpers it spawned go too.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ready: re.Pattern[str],
        *,
        cpus: set[int] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.ready = ready
        self.cpus = cpus
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """PID of the started process (also its process-group id)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float) -> re.Match[str]:
        """Start the process and wait until its output matches ``ready``."""
        with self.log_path.open("wb") as log, affinity(self.cpus):
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # its own process group: stop() reaches its children too
                preexec_fn=die_with_parent(),
            )
        deadline = perf() + timeout
        while perf() < deadline:
            match = self.ready.search(self.log_path.read_text(errors="replace"))
            if match is not None:
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise ChildError(f"{self.name} did not become ready in {timeout:.0f}s; log tail:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left of it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mock_command(port: int = 0, model: str = "mock", n_tokens: int = 60) -> list[str]:
    """argv that runs this file's mock upstream with the current interpreter."""
    return [sys.executable, str(Path(__file__).resolve()), "mock", "--port", str(port),
            "--model", model, "--tokens", str(n_tokens)]  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "mock":
        sys.exit("usage: _harness.py mock [--port N] [--model NAME] [--tokens N]")
    sys.exit(mock_main(sys.argv[2:]))

"""HTTP plumbing shared by the HTTP adapters (OpenAI-compatible, Anthropic, sandbox).

:class:`HTTPUpstream` is the HTTP half of an adapter: a pooled :class:`~hybridgate.backends.transport.
HTTPTransport`, the deployment's static headers, deadlines from :class:`~hybridgate.types.Timeouts`,
an SSE reader bounded by the first-token / idle / total deadlines, and the mapping of HTTP statuses
and transport exceptions into :mod:`hybridgate.errors`. Nothing in here knows a wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from hybridgate.backends.base import ProbeResult
from hybridgate.backends.transport import HTTPTransport, ProtocolError, UpstreamResponse
from hybridgate.errors import (
    BackendUnavailable,
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamContentPolicy,
    UpstreamContextLength,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    scrub_secrets,
)
from hybridgate.telemetry.propagation import trace_header_lines
from hybridgate.types import Timeouts

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "context limit",
    "prompt is too long",
    "too many tokens",
    "exceeds the context",
)
_POLICY_MARKERS = ("content_policy", "content_filter", "content policy", "content filtering", "safety system")


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000.0)
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(body: bytes) -> tuple[str, str]:
    """(message, code) from an OpenAI- or Anthropic-style error body, or the raw text."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace"), ""
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type") or ""
        return str(err.get("message") or code or "upstream error"), str(code)
    if isinstance(err, str):
        return err, ""
    if isinstance(data, dict) and "message" in data:
        return str(data["message"]), str(data.get("type") or "")
    return body[:500].decode("utf-8", "replace"), ""


def error_for_status(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    deployment: str,
    secrets: Sequence[str] = (),
) -> UpstreamError:
    """Map an upstream HTTP error response to the error tree (messages scrubbed of secrets)."""
    raw_message, code = _error_text(body)
    message = scrub_secrets(raw_message, known=secrets)
    lowered = f"{code} {message}".lower()
    text = f"{deployment}: upstream returned {status}: {message}"
    kwargs: dict[str, Any] = {"deployment": deployment, "upstream_status": status}
    if status == 429:
        return UpstreamRateLimited(text, retry_after=parse_retry_after(headers), **kwargs)
    if status in (401, 403):
        return UpstreamAuthError(f"{deployment}: upstream refused our credentials ({status})", **kwargs)
    if status in (408, 504):
        return UpstreamTimeout(text, **kwargs)
    if status >= 500:
        return UpstreamServerError(text, retry_after=parse_retry_after(headers), **kwargs)
    if any(m in lowered for m in _CONTEXT_MARKERS):
        return UpstreamContextLength(text, **kwargs)
    if any(m in lowered for m in _POLICY_MARKERS):
        return UpstreamContentPolicy(text, **kwargs)
    return UpstreamRejected(text, **kwargs)


@contextlib.contextmanager
def mapped_errors(deployment: str, phase: str = "request") -> Iterator[None]:
    """Translate transport, timeout and decoding failures raised inside the block into the error tree."""
    try:
        yield
    except UpstreamError:
        raise
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{deployment}: {phase} deadline passed", deployment=deployment) from exc
    except ProtocolError as exc:
        raise UpstreamProtocolError(f"{deployment}: {exc}", deployment=deployment) from exc
    except (ConnectionError, OSError) as exc:  # includes ssl.SSLError and DNS failures (socket.gaierror)
        raise UpstreamConnectionError(
            f"{deployment}: connection failed during {phase} ({type(exc).__name__})", deployment=deployment
        ) from exc
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(
            f"{deployment}: upstream sent invalid JSON", deployment=deployment
        ) from exc
    except UnicodeDecodeError as exc:
        raise UpstreamProtocolError(
            f"{deployment}: upstream sent invalid UTF-8", deployment=deployment
        ) from exc


@dataclass(slots=True)
class Deadline:
    """Absolute deadlines (event-loop time) of one attempt."""

    total_at: float
    first_token_at: float
    idle: float

    @staticmethod
    def start(timeouts: Timeouts) -> Deadline:
        """A stream's: its first event by the first-token deadline, then events ``idle`` apart."""
        now = asyncio.get_running_loop().time()
        return Deadline(now + timeouts.total, now + min(timeouts.first_token, timeouts.total), timeouts.idle)

    @staticmethod
    def whole(timeouts: Timeouts) -> Deadline:
        """A whole (non-streamed) answer's: an upstream sends its response's first byte only when
        the answer is complete, so the first byte is bounded by the total deadline, not the
        first-token one (which would cut every answer longer than it)."""
        now = asyncio.get_running_loop().time()
        return Deadline(now + timeouts.total, now + timeouts.total, timeouts.idle)

    def next_read(self, got_first: bool) -> float:
        """When the next read must have completed."""
        now = asyncio.get_running_loop().time()
        bound = now + self.idle if got_first else self.first_token_at
        return min(bound, self.total_at)


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str


class SSEParser:
    """Incremental server-sent-events parser over raw body chunks (any line endings)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[SSEEvent]:
        buffer = self._buffer + data
        hold = b""
        if buffer.endswith(b"\r"):  # maybe the first half of a CRLF split across chunks
            buffer, hold = buffer[:-1], b"\r"
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, rest = buffer.split(b"\n\n")
        self._buffer = rest + hold
        return [e for e in map(_event, blocks) if e is not None]

    def finish(self) -> list[SSEEvent]:
        """Whatever complete event the stream ended with, without its blank line."""
        block, self._buffer = self._buffer.replace(b"\r", b""), b""
        event = _event(block) if block.strip() else None
        return [event] if event is not None else []


def _event(block: bytes) -> SSEEvent | None:
    name = "message"
    data: list[str] = []
    for line in block.decode("utf-8").split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if not data:
        return None
    return SSEEvent(name, "\n".join(data))


class EventReader:
    """The SSE events of one streamed response, one batch per network read.

    Each read is bounded by the first-token deadline until the caller sets ``first_seen``
    (real content arrived), then by the idle deadline, and always by the total deadline.
    """

    __slots__ = ("_deadline", "_deployment", "_ended", "_parser", "_response", "first_seen")

    def __init__(self, deployment: str, response: UpstreamResponse, deadline: Deadline) -> None:
        self._deployment = deployment
        self._response = response
        self._deadline = deadline
        self._parser = SSEParser()
        self._ended = False
        self.first_seen = False

    async def next_batch(self) -> list[SSEEvent]:
        """The next events (an empty list once the body has ended)."""
        if self._ended:
            return []
        with mapped_errors(self._deployment, "stream"):
            while True:
                chunk = await self._response.read_chunk(self._deadline.next_read(self.first_seen))
                if not chunk:
                    self._ended = True
                    return self._parser.finish()
                events = self._parser.feed(chunk)
                if events:
                    return events


class HTTPUpstream:
    """One deployment's HTTP endpoint: connection pool, static headers, error mapping."""

    def __init__(
        self,
        deployment: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        secret: str,
        max_connections: int,
        timeouts: Timeouts,
    ) -> None:
        self.deployment = deployment
        self.base_url = base_url
        self.timeouts = timeouts
        self._headers = dict(headers)
        self._secrets = (secret,) if secret else ()
        self._max_connections = max_connections
        self._transport: HTTPTransport | None = None
        self._heads: dict[tuple[str, str], bytes] = {}

    async def start(self) -> None:
        if self._transport is None:
            self._transport = HTTPTransport(
                self.base_url, max_connections=self._max_connections, connect_timeout=self.timeouts.connect
            )

    async def close(self) -> None:
        if self._transport is not None:
            transport, self._transport = self._transport, None
            await transport.aclose()

    def _head(self, method: str, path: str) -> tuple[HTTPTransport, bytes]:
        transport = self._transport
        if transport is None:
            raise BackendUnavailable(f"{self.deployment}: backend not started", deployment=self.deployment)
        head = self._heads.get((method, path))
        if head is None:
            head = self._heads[(method, path)] = transport.request_head(method, path, self._headers)
        return transport, head

    async def post(self, path: str, body: Mapping[str, Any], deadline: Deadline) -> UpstreamResponse:
        """POST ``body`` as JSON; returns a 200 response (headers read), or raises the mapped error.

        The current trace span (an attempt's, when the request is traced) goes along as
        ``traceparent``."""
        transport, head = self._head("POST", path)
        head += trace_header_lines()
        with mapped_errors(self.deployment):
            response = await transport.request(head, orjson.dumps(body), until=deadline.first_token_at)
            if response.status != 200:
                try:
                    payload = await response.read(deadline.next_read(False))
                finally:
                    response.close()
                raise error_for_status(
                    response.status, payload, response.headers, self.deployment, self._secrets
                )
        return response

    async def post_json(self, path: str, body: Mapping[str, Any], deadline: Deadline) -> Any:
        """POST and return the decoded JSON answer (the whole attempt bounded by the deadline)."""
        response = await self.post(path, body, deadline)
        with mapped_errors(self.deployment):
            try:
                payload = await response.read(deadline.total_at)
            finally:
                response.release()
            return orjson.loads(payload)

    def events(self, response: UpstreamResponse, deadline: Deadline) -> EventReader:
        """The server-sent events of a streamed ``response``."""
        return EventReader(self.deployment, response, deadline)

    async def probe(self, path: str) -> ProbeResult:
        """GET ``path`` (an endpoint that costs no tokens); never raises."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            transport, head = self._head("GET", path)
            until = started + self.timeouts.connect + 5.0
            with mapped_errors(self.deployment, "probe"):
                response = await transport.request(head, b"", until=until)
                try:
                    await response.read(until)
                finally:
                    response.release()
            ok = response.status == 200
            detail = "" if ok else f"status {response.status}"
        except UpstreamError as exc:
            ok, detail = False, exc.kind.value
        return ProbeResult(ok=ok, latency_s=loop.time() - started, detail=detail)

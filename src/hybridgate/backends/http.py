"""HTTP plumbing shared by the HTTP adapters (OpenAI-compatible, Anthropic, sandbox).

One pooled aiohttp session per deployment, deadlines from :class:`~hybridgate.types.Timeouts`,
an SSE reader with an idle deadline, and the mapping of HTTP statuses and aiohttp exceptions
into :mod:`hybridgate.errors`. Nothing in here knows a wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from hybridgate.errors import (
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


def make_session(max_connections: int, timeouts: Timeouts) -> aiohttp.ClientSession:
    """A keep-alive pool. Per-request deadlines are applied by the callers, not here."""
    connector = aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300, keepalive_timeout=60)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect),
        json_serialize=lambda o: orjson.dumps(o).decode(),
        auto_decompress=True,
        raise_for_status=False,
    )


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
    """Translate aiohttp/asyncio/JSON failures raised inside the block into the error tree."""
    try:
        yield
    except UpstreamError:
        raise
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{deployment}: {phase} deadline passed", deployment=deployment) from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamConnectionError(
            f"{deployment}: connection broke during {phase}", deployment=deployment
        ) from exc
    except (aiohttp.ClientConnectionError, ConnectionError) as exc:
        raise UpstreamConnectionError(
            f"{deployment}: connection failed during {phase} ({type(exc).__name__})", deployment=deployment
        ) from exc
    except aiohttp.ClientResponseError as exc:
        raise UpstreamProtocolError(
            f"{deployment}: bad HTTP response ({exc.status})", deployment=deployment
        ) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamConnectionError(f"{deployment}: {type(exc).__name__}", deployment=deployment) from exc
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
        now = asyncio.get_running_loop().time()
        return Deadline(now + timeouts.total, now + min(timeouts.first_token, timeouts.total), timeouts.idle)

    def next_read(self, got_first: bool) -> float:
        """When the next read must have completed."""
        now = asyncio.get_running_loop().time()
        bound = now + self.idle if got_first else self.first_token_at
        return min(bound, self.total_at)


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str


async def iter_sse(
    response: aiohttp.ClientResponse, deadline: Deadline, first_seen: list[bool]
) -> AsyncIterator[SSEEvent]:
    """Server-sent events of ``response``; each read bounded by the first-token/idle/total deadline.

    ``first_seen[0]`` is set by the caller once real content arrived, switching from the
    first-token deadline to the idle deadline.
    """
    event = ""
    data: list[str] = []
    content = response.content
    while True:
        async with asyncio.timeout_at(deadline.next_read(first_seen[0])):
            raw = await content.readline()
        if not raw:
            if data:
                yield SSEEvent(event or "message", "\n".join(data))
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value

"""The decision log: one JSON line per request, written off the event loop, rotated by itself.

Each record says who asked (tenant, key fingerprint, class), what the data was (kinds of
sensitive data found and what was done about it, never values), how it was routed and why (the
Explanation), what happened (every attempt: deployment, timing, outcome, error kind), tokens,
cost, egress and region. Prompts, completions, sensitive values and credentials are never
written: the prompt appears only as ``prompt_hmac``, an HMAC-SHA256 of the normalised messages
(:func:`prompt_digest`) under a key of the deployment's (``decision_log.prompt_hash_key``), so
equal prompts can be matched without a dictionary attack on short ones.

The request path only queues a dict and the objects it needs (the immutable Explanation and
messages); the writer thread, woken on a timer rather than per record, serialises the
explanation, hashes the prompt and writes. A bounded queue decouples the request path from the
disk: if the writer falls behind, records are dropped and counted rather than slowing requests.
"""

from __future__ import annotations

import collections
import datetime
import hmac
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from hybridgate.clock import Clock, SystemClock
from hybridgate.policy.explain import Explanation
from hybridgate.telemetry.rotation import RotatingFile
from hybridgate.types import Message

log = logging.getLogger("hybridgate.decision_log")


def prompt_digest(messages: Sequence[Message], key: bytes) -> str:
    """HMAC-SHA256 (hex) of the messages as normalised from either wire format: role, text,
    tool calls and tool results. The same conversation sent as OpenAI or Anthropic hashes alike."""
    canonical = orjson.dumps(
        [[m.role, m.text, [[t.name, t.arguments] for t in m.tool_calls], m.tool_call_id] for m in messages]
    )
    return hmac.digest(key, canonical, "sha256").hex()  # the one-shot C implementation


def _record_time(line: bytes) -> float | None:
    """The ``ts`` of a written record (how old a log file is, from its first line)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    ts = record.get("ts") if isinstance(record, dict) else None
    return float(ts) if isinstance(ts, int | float) else None


class _Pending(NamedTuple):
    record: dict[str, Any]
    explanation: Explanation | None
    messages: Sequence[Message] | None


class DecisionLog:
    """Appends records to a rotating JSON-lines file from a writer thread.

    The request path appends to a deque (no lock notified per record); the writer wakes every
    ``delay_s``, or when closed, and writes what has accumulated in one go.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_pending: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        keep: int = 5,
        max_age_s: float | None = None,
        hash_key: bytes,
        clock: Clock | None = None,
        delay_s: float = 0.2,
    ) -> None:
        self.path = path
        self.dropped = 0
        self.written = 0
        self.delay_s = delay_s
        self.max_pending = max_pending
        self._hash_key = hash_key
        self._file = RotatingFile(
            path,
            max_bytes=max_bytes,
            keep=keep,
            max_age_s=max_age_s,
            clock=clock or SystemClock(),
            first_time=_record_time,
        )
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def rotations(self) -> int:
        return self._file.rotations

    def start(self) -> None:
        if self._thread is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stopping = False
            self._wake.clear()
            self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
            self._thread.start()

    def write(
        self,
        record: dict[str, Any],
        *,
        explanation: Explanation | None = None,
        messages: Sequence[Message] | None = None,
    ) -> None:
        """Queue one record (never blocks the caller). The writer adds ``plan`` (the explanation),
        ``prompt_hmac`` (from the messages) and ``time`` (ISO 8601 of ``ts``)."""
        if len(self._queue) >= self.max_pending:
            self.dropped += 1
            return
        self._queue.append(_Pending(record, explanation, messages))

    def close(self) -> None:
        """Flush what is queued and stop the writer (blocking)."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout=10)
            self._thread = None
        self._file.close()

    def _line(self, pending: _Pending) -> bytes:
        record = pending.record
        ts = record.get("ts")
        if isinstance(ts, float):
            record["time"] = datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(
                timespec="milliseconds"
            )
        if pending.messages is not None:
            record["prompt_hmac"] = prompt_digest(pending.messages, self._hash_key)
        if pending.explanation is not None:
            record["plan"] = pending.explanation.to_dict()
        return orjson.dumps(record) + b"\n"

    def _run(self) -> None:
        while True:
            self._wake.wait(self.delay_s)
            stopping = self._stopping
            self._drain()
            if stopping:
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            lines: list[bytes] = []
            while queue and len(lines) < 512:
                lines.append(self._line(queue.popleft()))
            try:
                self._file.write(lines)
                self.written += len(lines)
            except OSError as exc:  # a full disk must not take the gateway down
                self.dropped += len(lines)
                log.error("decision log %s: %s (%d records dropped)", self.path, exc, len(lines))

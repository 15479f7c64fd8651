"""Writing one streamed SANDBOX answer: paced like a model decoding, broken as a fault says.

The first token is due at ``first_at``; token ``k`` at ``interval * (k - 1)`` after the first token
actually left (a late first token, or a stall, moves the rest rather than bunching it). What is
due leaves as soon as the next token is not yet due; tokens due together leave in one write (as
a busy server batches them), so a zero-latency stream costs one write. The server sleeps only
when the next token is at least half a millisecond away, so it is never earlier than that.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiohttp import web

from hybridgate.sandbox.base import StreamScript
from hybridgate.sandbox.faults import FaultRule
from hybridgate.sandbox.stats import RequestRecord

_MIN_SLEEP_S = 0.0005
_BREAK_KINDS = frozenset({"stream_cut", "stream_stall", "malformed_chunk"})


async def sleep_until(when: float) -> None:
    """Wait until ``time.monotonic()`` is within half a millisecond of ``when``.

    Event-loop timers have millisecond resolution and may fire up to about a millisecond early
    (uvloop compares against the time cached at the start of a loop iteration); one second look
    keeps "never early" true.
    """
    for _ in range(2):
        delay = when - time.monotonic()
        if delay <= _MIN_SLEEP_S:
            return
        await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class Pace:
    """When the first token is due (``time.monotonic()``) and the gap between tokens."""

    first_at: float
    interval: float


class StreamWriter:
    """Sends one :class:`StreamScript` over one response and records what happened."""

    def __init__(self, request: web.Request, script: StreamScript, record: RequestRecord) -> None:
        self._request = request
        self._script = script
        self._record = record
        self._response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        self._buffer = bytearray()
        self._first_pending = False

    async def _send(self) -> None:
        if not self._response.prepared:
            await self._response.prepare(self._request)
        if self._buffer:
            await self._response.write(bytes(self._buffer))
            self._buffer.clear()
        if self._first_pending:
            self._first_pending = False
            self._record.first_token_s = time.monotonic() - self._record.arrival

    async def open(self) -> None:
        """Send the headers now if the wire has a preamble (Anthropic's ``message_start``)."""
        if self._script.preamble:
            self._buffer += self._script.preamble
            await self._send()

    async def run(self, pace: Pace, fault: FaultRule | None) -> web.StreamResponse:
        """Send everything, honouring the pace and the fault; returns the finished response."""
        try:
            await self._run(pace, fault)
        except ConnectionResetError:
            self._record.outcome = "disconnected"
        return self._response

    async def _run(self, pace: Pace, fault: FaultRule | None) -> None:
        script = self._script
        units = (script.head, *script.tokens)
        kind = fault.kind if fault is not None else None
        break_at = (
            min(fault.after_tokens, len(script.tokens)) if fault is not None and kind in _BREAK_KINDS else -1
        )
        first = min(1, len(units) - 1)  # the unit that carries the first token (the head, if none)
        last = len(units) - 1
        due = pace.first_at  # the head is due with the first token
        now = time.monotonic()  # re-read only after waiting: a stale "now" errs towards sending
        for j, unit in enumerate(units):
            if j > 1:
                due += pace.interval
            if due - now > _MIN_SLEEP_S:
                await sleep_until(due)
                now = time.monotonic()
            self._buffer += unit
            if j == first:
                self._first_pending = True
                due = max(due, now)  # decoding starts when the first token is out, however late
            if j == break_at and fault is not None:
                if kind == "stream_cut":
                    await self._cut()
                    return
                if kind == "stream_stall":
                    await self._send()
                    await sleep_until(time.monotonic() + fault.delay_s)
                    due = now = time.monotonic()
                else:
                    self._buffer += script.malformed
            if j < last and due + (pace.interval if j else 0.0) > now:
                await self._send()  # the next unit is not due yet: what is due leaves now
                now = time.monotonic()
        self._buffer += script.tail
        if kind != "missing_done":
            self._buffer += script.done
        await self._send()
        self._record.completion_tokens = len(script.tokens)
        await self._response.write_eof()

    async def _cut(self) -> None:
        """Flush what was produced, then close the connection without ending the chunked body."""
        await self._send()
        self._record.outcome = "cut"
        transport = self._request.transport
        if transport is not None:
            transport.close()

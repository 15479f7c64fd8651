"""W3C trace context: reading the caller's ``traceparent``, and the header lines naming the
current span for upstream HTTP requests.

The executor makes an attempt's span current while the attempt's upstream call is made (an
OpenTelemetry context, held in a context variable, so concurrent attempts never see each other's);
:func:`trace_header_lines` turns it into ``traceparent`` (and ``tracestate``) header lines for
the transport's pre-built request head. With tracing off there is no valid span and nothing is
added.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from opentelemetry import trace

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?")
_MAX_TRACESTATE = 512


class Parent(NamedTuple):
    """The caller's span, from its ``traceparent``."""

    trace_id: int
    span_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def parse_traceparent(value: str) -> Parent | None:
    """The caller's span, or None for a missing or malformed header (then a new trace starts,
    as the W3C recommendation says). Later versions are read as version 00, as it asks."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version = m.group(1)
    if version == "ff" or (version == "00" and m.group(5)):
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    return Parent(trace_id, span_id, int(m.group(4), 16))


def clean_tracestate(value: str) -> str:
    """The caller's ``tracestate`` when it is a plausible one (printable ASCII, bounded), else ""."""
    value = value.strip()
    if not value or len(value) > _MAX_TRACESTATE or not (value.isascii() and value.isprintable()):
        return ""
    return value


def trace_header_lines() -> bytes:
    """``traceparent: ...\\r\\n`` (and ``tracestate``) for the current span, or ``b""``."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return b""
    line = b"traceparent: 00-%032x-%016x-%02x\r\n" % (context.trace_id, context.span_id, context.trace_flags)
    state = context.trace_state
    if state:
        line += b"tracestate: " + state.to_header().encode("latin-1") + b"\r\n"
    return line

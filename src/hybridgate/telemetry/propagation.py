"""W3C trace context for upstream HTTP requests: the header lines naming the current span.

The executor makes an attempt's span current while the attempt's upstream call is made (an
OpenTelemetry context, held in a context variable, so concurrent attempts never see each other's);
:func:`trace_header_lines` turns it into ``traceparent`` (and ``tracestate``) header lines for
the transport's pre-built request head. With tracing off there is no valid span and nothing is
added.
"""

from __future__ import annotations

from opentelemetry import trace


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

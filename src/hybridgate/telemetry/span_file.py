"""A span exporter that appends one JSON object per finished span to a file (local use, tests).

It runs on the span pipeline's worker thread, never on the event loop; several server workers
may append to one file (each batch under an exclusive lock). Each line::

    {"name": "chat hybrid", "kind": "SERVER", "trace_id": "<32 hex>", "span_id": "<16 hex>",
     "parent_span_id": "<16 hex>" | null, "start_ns": ..., "end_ns": ...,
     "status": "UNSET" | "OK" | "ERROR", "status_description": ..., "attributes": {...},
     "events": [{"name": ..., "attributes": {...}}], "service": "hybridgate"}
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("hybridgate.tracing")


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """The JSON shape of one finished span."""
    context = span.context
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}" if context is not None else None,
        "span_id": f"{context.span_id:016x}" if context is not None else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        "service": span.resource.attributes.get("service.name"),
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to ``path`` as JSON lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = b"".join(orjson.dumps(span_record(s), default=str) + b"\n" for s in spans)
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("ab") as out:
                    # Several workers may append to one file: one batch at a time, whole lines.
                    fcntl.flock(out.fileno(), fcntl.LOCK_EX)
                    out.write(lines)
                    out.flush()
            except OSError as exc:  # a full disk must not take the gateway down
                log.error("span file %s: %s (%d spans dropped)", self.path, exc, len(spans))
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

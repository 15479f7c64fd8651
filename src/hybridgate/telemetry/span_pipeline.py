"""Finished spans, from the event loop to an exporter, in batches, on a worker thread.

The event loop only appends a :class:`SpanRecord` (plain values) to a deque: no lock is notified
per span, and no OpenTelemetry SDK object is built on the loop (the SDK's span and attribute
validation cost ~0.1 ms per span, measured). The worker wakes every ``delay_s`` (or when told to
stop), turns the records into the SDK's ``ReadableSpan`` (attributes validated there) and hands
them to the configured SDK exporter (OTLP/HTTP, console, or the JSON-lines file). Waking on a
timer, not per span, also keeps the worker from competing with the loop for the GIL on every
request. A full queue drops spans and counts them rather than growing or blocking.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

log = logging.getLogger("hybridgate.tracing")

MAX_BATCH = 512


@dataclass(slots=True, eq=False)
class SpanRecord:
    """One span as the loop records it: ids, times (epoch ns), attributes, error."""

    name: str
    kind: SpanKind
    trace_id: int
    span_id: int
    parent_id: int  # 0: a root span
    remote_parent: bool
    flags: int
    trace_state: str
    start_ns: int
    end_ns: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class SpanPipeline:
    """A bounded queue of finished spans and the worker thread that exports them."""

    def __init__(
        self,
        exporter: SpanExporter,
        resource: Resource,
        scope: InstrumentationScope,
        *,
        delay_s: float = 0.5,
        max_queue: int = 8192,
    ) -> None:
        self.exporter = exporter
        self.resource = resource
        self.scope = scope
        self.delay_s = delay_s
        self.max_queue = max_queue
        self.dropped = 0
        self.exported = 0
        self._queue: collections.deque[SpanRecord] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="hybridgate-spans", daemon=True)
        self._thread.start()

    def submit(self, record: SpanRecord) -> None:
        """Queue a finished span (never blocks; dropped and counted when the queue is full)."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(record)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Export what is queued, then stop the worker and the exporter (blocking)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        self.exporter.shutdown()

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
            batch: list[ReadableSpan] = []
            while queue and len(batch) < MAX_BATCH:
                try:
                    batch.append(self._readable(queue.popleft()))
                except Exception:  # a bad attribute must not stop the exporting
                    log.exception("span dropped")
                    self.dropped += 1
            try:
                result = self.exporter.export(batch)
            except Exception:  # an exporter's failure must not kill the worker
                log.exception("span export failed (%d spans dropped)", len(batch))
                result = SpanExportResult.FAILURE
            if result is SpanExportResult.SUCCESS:
                self.exported += len(batch)
            else:  # the exporter has logged why (OTLP: after its own retries)
                self.dropped += len(batch)

    def _readable(self, r: SpanRecord) -> ReadableSpan:
        state = TraceState.from_header([r.trace_state]) if r.trace_state else TraceState()
        flags = TraceFlags(r.flags)
        context = SpanContext(r.trace_id, r.span_id, False, flags, state)
        parent = SpanContext(r.trace_id, r.parent_id, r.remote_parent, flags, state) if r.parent_id else None
        attributes = r.attributes
        status = Status(StatusCode.ERROR, r.error) if r.error is not None else Status(StatusCode.UNSET)
        return ReadableSpan(
            name=r.name,
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=BoundedAttributes(attributes={k: v for k, v in attributes.items() if v is not None}),
            kind=r.kind,
            status=status,
            start_time=r.start_ns,
            end_time=r.end_ns,
            instrumentation_scope=self.scope,
        )

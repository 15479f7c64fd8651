"""Traces (OpenTelemetry): one server span per request, one client span per attempt.

Each :class:`~hybridgate.gateway.Gateway` owns a :class:`Tracing`: its own sampler, resource,
id generator, exporter and export thread. Nothing is registered globally, so two gateways in one
process (tests, benchmarks) keep their spans apart. Attributes follow the OpenTelemetry GenAI
semantic conventions (``gen_ai.operation.name``, ``gen_ai.system``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
``gen_ai.response.finish_reasons``), plus ``hybridgate.*`` for the routing: class, placement,
decision reason, fallback reason, predicted vs actual latency.

- An incoming W3C ``traceparent`` (and ``tracestate``) is the request span's parent; a malformed
  one is ignored (a new trace starts), as the W3C recommendation says.
- Sampling is the SDK's ``ParentBased(TraceIdRatioBased(sample_ratio))``: a caller's sampled flag
  is followed; a new trace is kept when its id falls under the ratio.
- An attempt's span is the current span while its upstream call is made, so the HTTP adapters
  send a ``traceparent`` naming it (:mod:`hybridgate.telemetry.propagation`), sampled or not.
- Prompts and completions are recorded only with ``tracing.record_content``, and never for a
  sensitive request (declared confidential or restricted, or sensitive data found by the scan).
  Credentials never: no header is ever copied into a span.
- The loop records plain values; SDK spans are built and exported on a worker thread
  (:mod:`hybridgate.telemetry.span_pipeline`), so tracing costs the request path little.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from hybridgate import __version__
from hybridgate.clock import Clock
from hybridgate.config.schema import AnyDeployment, effective_placement
from hybridgate.config.telemetry import TracingConfig
from hybridgate.telemetry.propagation import clean_tracestate, parse_traceparent
from hybridgate.telemetry.span_file import JsonLinesSpanExporter
from hybridgate.telemetry.span_pipeline import SpanPipeline, SpanRecord
from hybridgate.types import Message, Usage

if TYPE_CHECKING:
    from hybridgate.execution.executor import Attempt
    from hybridgate.policy.planner import Candidate, RoutePlan

SENSITIVE_LEVELS = frozenset({"confidential", "restricted"})
_MAX_ID = 1 << 64
_NOT_ERRORS = frozenset({"ok", "cache_hit", "cache_stale", "idempotent_replay", "memory"})


class DeploymentTraits(NamedTuple):
    """What the spans of a deployment's attempts say about it."""

    system: str  # gen_ai.system: openai, anthropic, llama.cpp, ...
    model: str
    placement: str
    region: str


def deployment_traits(dep: AnyDeployment) -> DeploymentTraits:
    if dep.type == "llamacpp":
        system, model = "llama.cpp", Path(dep.model_path).stem
    elif dep.type == "sandbox":
        system, model = f"sandbox.{dep.wire}", dep.model
    else:
        system, model = dep.type, dep.model
    return DeploymentTraits(system, model, effective_placement(dep), dep.region)


def make_exporter(config: TracingConfig, base: Path) -> SpanExporter:
    """The exporter ``config`` names (``base``: the directory relative paths start from)."""
    if config.exporter == "file":
        assert config.path is not None  # the schema requires it
        return JsonLinesSpanExporter((base / config.path).resolve())
    if config.exporter == "console":
        return ConsoleSpanExporter(service_name=config.service_name, out=sys.stderr)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {k: v.get_secret_value() for k, v in config.headers.items()}
    return OTLPSpanExporter(endpoint=config.endpoint, headers=headers, timeout=10)


class Tracing:
    """One gateway's tracing: sampler, ids, and the pipeline to its exporter."""

    def __init__(
        self,
        config: TracingConfig,
        *,
        clock: Clock,
        deployments: Mapping[str, DeploymentTraits],
        exporter: SpanExporter,
        delay_s: float = 0.5,
    ) -> None:
        self.config = config
        self.clock = clock
        self.deployments = deployments
        self.record_content = config.record_content
        # TraceIdRatioBased's rule: keep a new trace when the low 64 bits of its id fall under this.
        self._bound = round(config.sample_ratio * _MAX_ID)
        self._ids = random.Random(os.urandom(16))  # used on the event loop's thread only
        resource = Resource.create({"service.name": config.service_name, "service.version": __version__})
        self.pipeline = SpanPipeline(
            exporter, resource, InstrumentationScope("hybridgate", __version__), delay_s=delay_s
        )

    def wall_ns(self, monotonic: float) -> int:
        """A monotonic instant of the gateway's clock as epoch nanoseconds."""
        return int((self.clock.wall() - self.clock.monotonic() + monotonic) * 1e9)

    def span_id(self) -> int:
        return self._ids.getrandbits(64) or 1

    def begin(
        self,
        operation: str,
        model: str,
        *,
        arrived: float,
        traceparent: str = "",
        tracestate: str = "",
        attributes: Mapping[str, Any] | None = None,
    ) -> RequestTrace:
        """The span of one request, a child of the incoming ``traceparent`` when there is one."""
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent is not None:
            trace_id, parent_id, sampled = parent.trace_id, parent.span_id, parent.sampled
            state = clean_tracestate(tracestate) if tracestate else ""
        else:
            trace_id, parent_id, state = self._ids.getrandbits(128) or 1, 0, ""
            sampled = (trace_id & (_MAX_ID - 1)) < self._bound
        record = SpanRecord(
            name=f"{operation} {model}",
            kind=SpanKind.SERVER,
            trace_id=trace_id,
            span_id=self.span_id(),
            parent_id=parent_id,
            remote_parent=parent is not None,
            flags=1 if sampled else 0,
            trace_state=state,
            start_ns=self.wall_ns(arrived),
        )
        if sampled:
            record.attributes = {"gen_ai.operation.name": operation, "gen_ai.request.model": model}
            if attributes:
                record.attributes.update(attributes)
        return RequestTrace(self, record, operation, sampled)

    def shutdown(self) -> None:
        """Export what is pending and stop the exporter (blocking: call off the event loop)."""
        self.pipeline.shutdown()


def _messages_json(messages: Sequence[Message]) -> str:
    return orjson.dumps([{"role": m.role, "content": m.text} for m in messages]).decode()


class AttemptSpan:
    """The client span of one attempt."""

    __slots__ = ("_context", "_request", "record")

    def __init__(self, request: RequestTrace, record: SpanRecord) -> None:
        self._request = request
        self.record = record
        context = SpanContext(
            record.trace_id, record.span_id, False, TraceFlags(record.flags), request.trace_state
        )
        self._context = NonRecordingSpan(context)

    def active(self) -> AbstractContextManager[object]:
        """This span as the current one (what upstream requests propagate)."""
        return trace.use_span(
            self._context, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def end(self, attempt: Attempt, usage: Usage | None = None, finish_reason: str | None = None) -> None:
        request = self._request
        if not request.sampled:
            return
        record = self.record
        tracing = request.tracing
        record.end_ns = tracing.wall_ns(tracing.clock.monotonic())
        attrs = record.attributes
        attrs["hybridgate.attempt.outcome"] = attempt.outcome
        attrs["hybridgate.attempt.first_event_ms"] = round(attempt.duration * 1000, 3)
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if finish_reason is not None:
            attrs["gen_ai.response.finish_reasons"] = (finish_reason,)
        error = attempt.error
        if error is not None:
            attrs["error.type"] = record.error = error.kind.value
            if error.upstream_status is not None:
                attrs["http.response.status_code"] = error.upstream_status
        tracing.pipeline.submit(record)


class RequestTrace:
    """The server span of one request; makes its attempts' spans (an ``AttemptTracer``)."""

    __slots__ = ("_done", "content", "operation", "record", "sampled", "trace_state", "tracing")

    def __init__(self, tracing: Tracing, record: SpanRecord, operation: str, sampled: bool) -> None:
        self.tracing = tracing
        self.record = record
        self.operation = operation
        self.sampled = sampled
        self.trace_state = TraceState.from_header([record.trace_state]) if record.trace_state else None
        self._done = False
        self.content = False  # prompts and completions may be recorded (set once planned)

    @property
    def trace_id(self) -> str:
        return f"{self.record.trace_id:032x}"

    def attempt(self, attempt: Attempt) -> AttemptSpan:
        tracing = self.tracing
        parent = self.record
        traits = tracing.deployments.get(attempt.deployment)
        model = traits.model if traits is not None else attempt.deployment
        record = SpanRecord(
            name=f"{self.operation} {model}",
            kind=SpanKind.CLIENT,
            trace_id=parent.trace_id,
            span_id=tracing.span_id(),
            parent_id=parent.span_id,
            remote_parent=False,
            flags=parent.flags,
            trace_state=parent.trace_state,
            start_ns=tracing.wall_ns(attempt.started),
        )
        if self.sampled:
            record.attributes = {
                "gen_ai.operation.name": self.operation,
                "gen_ai.request.model": model,
                "hybridgate.deployment": attempt.deployment,
                "hybridgate.attempt.hedge": attempt.hedge,
                "hybridgate.attempt.reason": attempt.reason or "first",
                "hybridgate.attempt.after": attempt.after or None,
            }
            if traits is not None:
                record.attributes["gen_ai.system"] = traits.system
                record.attributes["hybridgate.placement"] = traits.placement
                record.attributes["hybridgate.region"] = traits.region
        return AttemptSpan(self, record)

    def planned(
        self, plan: RoutePlan, *, sensitive: bool, record_content: bool, messages: Sequence[Message] = ()
    ) -> None:
        """The routing decision; the prompt too, when content may be recorded."""
        if not self.sampled:
            return
        explanation = plan.explanation
        data = explanation.data
        self.content = record_content and not sensitive
        attrs = self.record.attributes
        attrs["hybridgate.class"] = plan.workload_class
        attrs["hybridgate.placement_preference"] = explanation.placement
        attrs["hybridgate.decision.reason"] = explanation.summary
        attrs["hybridgate.route"] = explanation.order
        attrs["hybridgate.sensitive"] = sensitive
        if data.kinds:
            attrs["hybridgate.sensitive.kinds"] = tuple(sorted(data.kinds))
        if data.redact:
            attrs["hybridgate.sensitive.action"] = "redact"
        if self.content and messages:
            attrs["gen_ai.input.messages"] = _messages_json(messages)
        elif "gen_ai.input.messages" in attrs:  # planned again (the redaction failed): now sensitive
            del attrs["gen_ai.input.messages"]

    def finish(
        self,
        *,
        outcome: str,
        latency_s: float,
        deployment: str = "",
        attempts: Sequence[Attempt] = (),
        plan: RoutePlan | None = None,
        usage: Usage | None = None,
        finish_reason: str | None = None,
        response_model: str | None = None,
        output_text: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """End the request's span (once; later calls are ignored)."""
        if self._done:
            return
        self._done = True
        if not self.sampled:
            return
        tracing = self.tracing
        record = self.record
        record.end_ns = tracing.wall_ns(tracing.clock.monotonic())
        attrs = record.attributes
        attrs["hybridgate.outcome"] = outcome
        attrs["hybridgate.attempts"] = len(attempts)
        attrs["hybridgate.hedged"] = any(a.hedge for a in attempts)
        attrs["hybridgate.latency.actual_ms"] = round(latency_s * 1000, 3)
        traits = tracing.deployments.get(deployment)
        if traits is not None:
            attrs["hybridgate.deployment"] = deployment
            attrs["gen_ai.system"] = traits.system
            attrs["hybridgate.placement"] = traits.placement
            attrs["gen_ai.response.model"] = response_model or traits.model
        if any(a.error is not None for a in attempts):
            failed = [f"{a.deployment}: {a.outcome}" for a in attempts if a.error is not None]
            attrs["hybridgate.fallback.reason"] = "; ".join(failed)
        if usage is not None:
            attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if finish_reason is not None:
            attrs["gen_ai.response.finish_reasons"] = (finish_reason,)
        if self.content and output_text is not None:
            attrs["gen_ai.output.messages"] = orjson.dumps(
                [{"role": "assistant", "content": output_text, "finish_reason": finish_reason}]
            ).decode()
        if extra:
            attrs.update(extra)
        if outcome not in _NOT_ERRORS:
            attrs["error.type"] = record.error = outcome
        if plan is not None and deployment:
            for candidate in plan.candidates:  # those tried are built already; usually the first
                if candidate.deployment == deployment:
                    _predicted(attrs, candidate)
                    break
        tracing.pipeline.submit(record)


def _predicted(attrs: dict[str, Any], candidate: Candidate) -> None:
    """What the planner predicted for the deployment that answered (vs ``actual_ms``)."""
    for key, seconds in (
        ("hybridgate.latency.predicted_ms", candidate.predicted_s),
        ("hybridgate.latency.predicted_p95_ms", candidate.predicted_p95_s),
        ("hybridgate.latency.predicted_ttft_p95_ms", candidate.predicted_ttft_p95_s),
    ):
        if seconds is not None:
            attrs[key] = round(seconds * 1000, 3)

"""Traces (OpenTelemetry): one server span per request, one client span per attempt.

Each :class:`~hybridgate.gateway.Gateway` owns a :class:`Tracing` with its own
``TracerProvider``: nothing is registered globally, so two gateways in one process (tests,
benchmarks) keep their spans apart. Attributes follow the OpenTelemetry GenAI semantic
conventions (``gen_ai.operation.name``, ``gen_ai.system``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
``gen_ai.response.finish_reasons``), plus ``hybridgate.*`` for the routing: class, placement,
decision reason, fallback reason, predicted vs actual latency.

- An incoming W3C ``traceparent`` (and ``tracestate``) is the request span's parent; a malformed
  one is ignored (a new trace starts), as the W3C recommendation says.
- An attempt's span is the current span while its upstream call is made, so the HTTP adapters
  send a ``traceparent`` naming it (:mod:`hybridgate.telemetry.propagation`).
- Prompts and completions are recorded only with ``tracing.record_content``, and never for a
  sensitive request (declared confidential or restricted, or sensitive data found by the scan).
  Credentials never: no header is ever copied into a span.
- Spans are exported in batches from the SDK's worker thread; the event loop only builds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hybridgate import __version__
from hybridgate.clock import Clock
from hybridgate.config.schema import AnyDeployment, effective_placement
from hybridgate.config.telemetry import TracingConfig
from hybridgate.telemetry.span_file import JsonLinesSpanExporter
from hybridgate.types import Message, Usage

if TYPE_CHECKING:
    from hybridgate.execution.executor import Attempt
    from hybridgate.policy.explain import Explanation
    from hybridgate.policy.planner import RoutePlan

SENSITIVE_LEVELS = frozenset({"confidential", "restricted"})
_PROPAGATOR = TraceContextTextMapPropagator()  # stateless


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
        return ConsoleSpanExporter(service_name=config.service_name)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {k: v.get_secret_value() for k, v in config.headers.items()}
    return OTLPSpanExporter(endpoint=config.endpoint, headers=headers, timeout=10)


class Tracing:
    """One gateway's tracer provider, sampler and exporter."""

    def __init__(
        self,
        config: TracingConfig,
        *,
        clock: Clock,
        deployments: Mapping[str, DeploymentTraits],
        exporter: SpanExporter,
        schedule_delay_ms: float = 1000.0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.deployments = deployments
        resource = Resource.create({"service.name": config.service_name, "service.version": __version__})
        self.provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio))
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_ms)
        )
        self.tracer = self.provider.get_tracer("hybridgate", __version__)

    def wall_ns(self, monotonic: float) -> int:
        """A monotonic instant of the gateway's clock as epoch nanoseconds."""
        return int((self.clock.wall() - self.clock.monotonic() + monotonic) * 1e9)

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
        parent = None
        if traceparent:
            carrier = {"traceparent": traceparent}
            if tracestate:
                carrier["tracestate"] = tracestate
            parent = _PROPAGATOR.extract(carrier)
        attrs: dict[str, Any] = {"gen_ai.operation.name": operation, "gen_ai.request.model": model}
        if attributes:
            attrs.update(attributes)
        span = self.tracer.start_span(
            f"{operation} {model}",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=self.wall_ns(arrived),
            attributes=attrs,
        )
        return RequestTrace(self, span, operation)

    def shutdown(self) -> None:
        """Export what is pending and stop the exporter (blocking: call off the event loop)."""
        self.provider.shutdown()


def _messages_json(messages: Sequence[Message]) -> str:
    return orjson.dumps(
        [{"role": m.role, "content": m.text} for m in messages if m.text or m.role != "assistant"]
    ).decode()


class AttemptSpan:
    """The client span of one attempt."""

    __slots__ = ("_tracing", "span")

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self.span = span

    def active(self) -> AbstractContextManager[object]:
        return trace.use_span(
            self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def end(self, attempt: Attempt, usage: Usage | None = None, finish_reason: str | None = None) -> None:
        span = self.span
        clock = self._tracing.clock
        if span.is_recording():
            attrs: dict[str, Any] = {
                "hybridgate.attempt.outcome": attempt.outcome,
                "hybridgate.attempt.first_event_ms": round(attempt.duration * 1000, 3),
            }
            if usage is not None:
                attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
                attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
            if finish_reason is not None:
                attrs["gen_ai.response.finish_reasons"] = (finish_reason,)
            error = attempt.error
            if error is not None:
                attrs["error.type"] = error.kind.value
                if error.upstream_status is not None:
                    attrs["http.response.status_code"] = error.upstream_status
                span.set_status(Status(StatusCode.ERROR, error.kind.value))
            span.set_attributes(attrs)
        span.end(end_time=self._tracing.wall_ns(clock.monotonic()))


class RequestTrace:
    """The server span of one request; makes its attempts' spans (an ``AttemptTracer``)."""

    __slots__ = ("_context", "_done", "_tracing", "content", "operation", "span")

    def __init__(self, tracing: Tracing, span: Span, operation: str) -> None:
        self._tracing = tracing
        self.span = span
        self.operation = operation
        self._context = trace.set_span_in_context(span)
        self._done = False
        self.content = False  # prompts and completions may be recorded (set once planned)

    @property
    def trace_id(self) -> str:
        return f"{self.span.get_span_context().trace_id:032x}"

    def attempt(self, attempt: Attempt) -> AttemptSpan:
        tracing = self._tracing
        traits = tracing.deployments.get(attempt.deployment)
        model = traits.model if traits is not None else attempt.deployment
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.request.model": model,
            "hybridgate.deployment": attempt.deployment,
            "hybridgate.attempt.hedge": attempt.hedge,
            "hybridgate.attempt.reason": attempt.reason or "first",
        }
        if attempt.after:
            attrs["hybridgate.attempt.after"] = attempt.after
        if traits is not None:
            attrs["gen_ai.system"] = traits.system
            attrs["hybridgate.placement"] = traits.placement
            attrs["hybridgate.region"] = traits.region
        span = tracing.tracer.start_span(
            f"{self.operation} {model}",
            context=self._context,
            kind=SpanKind.CLIENT,
            start_time=tracing.wall_ns(attempt.started),
            attributes=attrs,
        )
        return AttemptSpan(tracing, span)

    def planned(
        self, plan: RoutePlan, *, sensitive: bool, record_content: bool, messages: Sequence[Message] = ()
    ) -> None:
        """The routing decision; the prompt too, when content may be recorded."""
        span = self.span
        if not span.is_recording():
            return
        explanation = plan.explanation
        self.content = record_content and not sensitive
        attrs: dict[str, Any] = {
            "hybridgate.class": plan.workload_class,
            "hybridgate.placement_preference": explanation.placement,
            "hybridgate.decision.reason": explanation.summary,
            "hybridgate.route": explanation.order,
            "hybridgate.sensitive": sensitive,
        }
        if explanation.data.kinds:
            attrs["hybridgate.sensitive.kinds"] = tuple(sorted(explanation.data.kinds))
        if explanation.data.redact:
            attrs["hybridgate.sensitive.action"] = "redact"
        if self.content and messages:
            attrs["gen_ai.input.messages"] = _messages_json(messages)
        span.set_attributes(attrs)

    def finish(
        self,
        *,
        outcome: str,
        latency_s: float,
        deployment: str = "",
        attempts: Sequence[Attempt] = (),
        explanation: Explanation | None = None,
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
        span = self.span
        tracing = self._tracing
        if span.is_recording():
            traits = tracing.deployments.get(deployment)
            attrs: dict[str, Any] = {
                "hybridgate.outcome": outcome,
                "hybridgate.attempts": len(attempts),
                "hybridgate.hedged": any(a.hedge for a in attempts),
                "hybridgate.latency.actual_ms": round(latency_s * 1000, 3),
            }
            if deployment:
                attrs["hybridgate.deployment"] = deployment
            if traits is not None:
                attrs["gen_ai.system"] = traits.system
                attrs["hybridgate.placement"] = traits.placement
                attrs["gen_ai.response.model"] = response_model or traits.model
            failed = [f"{a.deployment}: {a.outcome}" for a in attempts if a.error is not None]
            if failed:
                attrs["hybridgate.fallback.reason"] = "; ".join(failed)
            if explanation is not None and deployment:
                predicted = _predicted_ms(explanation, deployment)
                if predicted is not None:
                    attrs["hybridgate.latency.predicted_ms"] = predicted
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
            if outcome != "ok" and not outcome.startswith("cache_") and outcome != "idempotent_replay":
                attrs["error.type"] = outcome
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.set_attributes(attrs)
        span.end(end_time=tracing.wall_ns(tracing.clock.monotonic()))


def _predicted_ms(explanation: Explanation, deployment: str) -> float | None:
    for verdict in explanation.verdicts:
        if verdict.deployment == deployment:
            return verdict.predicted_ms
    return None

"""Tracing in process: a Gateway (no HTTP server) in front of a real SANDBOX upstream, spans
exported by the real exporters (the JSON-lines file exporter; OTLP/HTTP to a receiver the test
runs, decoding the protobuf). Closing a gateway flushes its spans, so nothing waits on timers."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

from hybridgate.config.loader import load_config
from hybridgate.gateway import Gateway
from hybridgate.policy.context import ANONYMOUS
from hybridgate.privacy.guard import build_guard
from hybridgate.telemetry.span_file import JsonLinesSpanExporter
from hybridgate.telemetry.span_pipeline import SpanPipeline, SpanRecord
from hybridgate.types import EmbeddingRequest, InferenceRequest, Message
from tests.support.processes import start_sandbox

PROMPT = "Tell me about the weather today in a few words"
CALLER = "00-" + "e" * 32 + "-" + "f" * 16 + "-01"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[str]:
    proc, url = start_sandbox("instant", seed=5)
    try:
        yield url
    finally:
        proc.stop()


def reset(sandbox: str) -> None:
    httpx.post(f"{sandbox}/sandbox/reset").raise_for_status()
    httpx.post(f"{sandbox}/sandbox/capture", json={"enabled": True, "echo": True}).raise_for_status()


def captured(sandbox: str) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = httpx.get(f"{sandbox}/sandbox/captured").json()["requests"]
    return requests


def config(folder: Path, sandbox: str, tracing: str, embeddings: bool = False) -> Path:
    path = folder / "gateway.yaml"
    path.write_text(
        f"""
version: 1
{tracing}
deployments:
  cloud:
    type: openai
    base_url: {sandbox}/v1
    model: sandbox-a
    api_key: sk-upstream-SECRET-abcdef
    region: us
    context_window: 128000
    embeddings: {"true" if embeddings else "false"}
models:
  chat: {{deployments: [cloud]}}
"""
    )
    return path


async def serve_one(path: Path, headers: dict[str, str] | None = None, text: str = PROMPT) -> str:
    """One request through a fresh gateway, closed (and so flushed) afterwards; the answer's text."""
    loaded = load_config(path)
    gateway = Gateway(loaded, guard=build_guard(loaded.config.governance.detection))
    await gateway.start()
    try:
        ctx = gateway.context(ANONYMOUS, headers or {}, {})
        request = InferenceRequest(model="chat", messages=(Message.of_text("user", text),), max_tokens=8)
        _, completion = await gateway.complete(request, ctx, gateway.clock.monotonic())
        return completion.text
    finally:
        await gateway.close()


def spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_content_is_not_recorded_by_default(tmp_path: Path, sandbox: str) -> None:
    reset(sandbox)
    path = config(tmp_path, sandbox, "tracing: {enabled: true, exporter: file, path: spans.jsonl}")
    answer = await serve_one(path)
    recorded = spans(tmp_path / "spans.jsonl")
    assert [s["kind"] for s in recorded] == ["CLIENT", "SERVER"]  # the attempt ends first
    server = recorded[1]
    assert server["attributes"]["hybridgate.sensitive"] is False
    assert not any(
        k.startswith("gen_ai.input") or k.startswith("gen_ai.output") for k in server["attributes"]
    )
    text = (tmp_path / "spans.jsonl").read_text()
    assert PROMPT not in text
    assert answer not in text
    assert "SECRET" not in text


async def test_two_gateways_keep_their_spans_apart(tmp_path: Path, sandbox: str) -> None:
    """Each gateway has its own tracer provider: nothing global is set."""
    reset(sandbox)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = config(tmp_path / "a", sandbox, "tracing: {enabled: true, exporter: file, path: spans.jsonl}")
    b = config(tmp_path / "b", sandbox, "tracing: {enabled: true, exporter: file, path: spans.jsonl}")
    loaded_b = load_config(b)
    other = Gateway(loaded_b, guard=build_guard(loaded_b.config.governance.detection))
    await other.start()
    try:
        await serve_one(a)
    finally:
        await other.close()
    assert len(spans(tmp_path / "a" / "spans.jsonl")) == 2
    assert spans(tmp_path / "b" / "spans.jsonl") == []


async def test_an_unsampled_trace_records_nothing_but_still_propagates(tmp_path: Path, sandbox: str) -> None:
    reset(sandbox)
    tracing = "tracing: {enabled: true, exporter: file, path: spans.jsonl, sample_ratio: 0}"
    await serve_one(config(tmp_path, sandbox, tracing))
    assert spans(tmp_path / "spans.jsonl") == []
    [seen] = captured(sandbox)
    flags = seen["trace"]["traceparent"].rsplit("-", 1)[1]
    assert not int(flags, 16) & 1, "not sampled, and says so"


async def test_a_sampled_caller_is_recorded_even_at_ratio_zero(tmp_path: Path, sandbox: str) -> None:
    reset(sandbox)
    tracing = "tracing: {enabled: true, exporter: file, path: spans.jsonl, sample_ratio: 0}"
    caller = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    await serve_one(config(tmp_path, sandbox, tracing), {"traceparent": caller})
    assert {s["trace_id"] for s in spans(tmp_path / "spans.jsonl")} == {"a" * 32}


async def test_tracing_off_sends_no_trace_context(tmp_path: Path, sandbox: str) -> None:
    reset(sandbox)
    await serve_one(config(tmp_path, sandbox, ""), {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
    [seen] = captured(sandbox)
    assert seen["trace"] == {}


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP traces receiver: decodes each export request's protobuf."""

    received: list[tuple[dict[str, str], ExportTraceServiceRequest]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, request))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[dict[str, str], ExportTraceServiceRequest]]]]:
    received: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_spans_are_exported_over_otlp(
    tmp_path: Path,
    sandbox: str,
    collector: tuple[str, list[tuple[dict[str, str], ExportTraceServiceRequest]]],
) -> None:
    endpoint, received = collector
    reset(sandbox)
    tracing = f"""tracing:
  enabled: true
  exporter: otlp
  endpoint: {endpoint}
  service_name: gw-under-test
  headers: {{x-collector-token: tok-123}}"""
    await serve_one(config(tmp_path, sandbox, tracing))
    assert received, "the collector got no export"
    headers = received[0][0]
    assert headers["x-collector-token"] == "tok-123"
    assert headers["content-type"] == "application/x-protobuf"
    names: dict[str, int] = {}
    for _, request in received:
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert service["service.name"] == "gw-under-test"
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    names[span.name] = span.kind
    assert names == {"chat chat": 2, "chat sandbox-a": 3}  # SPAN_KIND_SERVER, SPAN_KIND_CLIENT


async def test_embeddings_are_traced_and_logged(tmp_path: Path, sandbox: str) -> None:
    reset(sandbox)
    tracing = "tracing: {enabled: true, exporter: file, path: spans.jsonl}\ndecision_log: {path: d.jsonl}"
    loaded = load_config(config(tmp_path, sandbox, tracing, embeddings=True))
    gateway = Gateway(loaded, guard=build_guard(loaded.config.governance.detection))
    await gateway.start()
    try:
        caller = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"
        ctx = gateway.context(ANONYMOUS, {"traceparent": caller}, {})
        await gateway.embed(EmbeddingRequest(model="chat", inputs=("a", "b")), ctx, gateway.clock.monotonic())
    finally:
        await gateway.close()
    attempt, server = spans(tmp_path / "spans.jsonl")
    assert server["name"] == "embeddings chat"
    assert server["attributes"]["gen_ai.operation.name"] == "embeddings"
    assert attempt["parent_span_id"] == server["span_id"]
    assert attempt["attributes"]["gen_ai.usage.input_tokens"] > 0
    [record] = spans(tmp_path / "d.jsonl")
    assert record["trace_id"] == "c" * 32
    assert record["attempts"][0]["outcome"] == "ok"
    assert len(record["prompt_hmac"]) == 64


async def test_with_tracing_off_the_log_still_names_the_callers_trace(tmp_path: Path, sandbox: str) -> None:
    reset(sandbox)
    await serve_one(config(tmp_path, sandbox, "decision_log: {path: d.jsonl}"), {"traceparent": CALLER})
    [record] = spans(tmp_path / "d.jsonl")
    assert record["trace_id"] == "e" * 32
    assert not (tmp_path / "spans.jsonl").exists()


async def test_the_anthropic_adapter_sends_the_attempts_traceparent(tmp_path: Path, sandbox: str) -> None:
    reset(sandbox)
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"""
version: 1
tracing: {{enabled: true, exporter: file, path: spans.jsonl}}
deployments:
  claude:
    type: anthropic
    base_url: {sandbox}
    model: sandbox-claude
    api_key: sk-ant-SECRET-abcdef
models:
  chat: {{deployments: [claude]}}
"""
    )
    await serve_one(path, {"traceparent": CALLER})
    attempt, server = spans(tmp_path / "spans.jsonl")
    [seen] = captured(sandbox)
    assert seen["endpoint"] == "messages"
    assert seen["trace"]["traceparent"] == f"00-{'e' * 32}-{attempt['span_id']}-01"
    assert attempt["attributes"]["gen_ai.system"] == "anthropic"
    assert server["parent_span_id"] == "f" * 16
    assert "SECRET" not in (tmp_path / "spans.jsonl").read_text()


def test_the_span_pipeline_drops_and_counts_when_full(tmp_path: Path) -> None:
    exporter = JsonLinesSpanExporter(tmp_path / "spans.jsonl")
    scope = InstrumentationScope("test")
    # A long delay: nothing is exported before shutdown, so the queue really fills up.
    pipeline = SpanPipeline(exporter, Resource.create({}), scope, delay_s=3600, max_queue=2)
    for i in range(5):
        record = SpanRecord(f"s{i}", SpanKind.SERVER, 1, i + 1, 0, False, 1, "", start_ns=1, end_ns=2)
        record.attributes = {"n": i, "dropped.none": None}
        pipeline.submit(record)
    pipeline.shutdown()
    assert (pipeline.exported, pipeline.dropped) == (2, 3)
    written = spans(tmp_path / "spans.jsonl")
    assert [(s["name"], s["attributes"]) for s in written] == [("s0", {"n": 0}), ("s1", {"n": 1})]


def test_a_span_file_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where a directory should be")
    exporter = JsonLinesSpanExporter(tmp_path / "blocked" / "spans.jsonl")
    pipeline = SpanPipeline(exporter, Resource.create({}), InstrumentationScope("test"), delay_s=3600)
    pipeline.submit(SpanRecord("s", SpanKind.SERVER, 1, 1, 0, False, 1, "", start_ns=1, end_ns=2))
    pipeline.shutdown()
    assert (pipeline.exported, pipeline.dropped) == (0, 1)  # the exporter logged why
    assert not (tmp_path / "blocked").is_dir()

"""Traces and the decision log end to end: a real ``hybridgate serve`` with the file span
exporter, in front of a SANDBOX cloud that records the trace headers it receives.

Checked on the spans the gateway wrote: one server span per request and a client span per
attempt (failover, hedge), GenAI attributes, the caller's trace id kept, the upstream given a
``traceparent`` naming the attempt's span; prompts recorded only when enabled and never for
sensitive requests; credentials never.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from hybridgate.telemetry.log_reader import read_log
from tests.support.processes import eventually, start_gateway, start_sandbox

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
UPSTREAM_KEY = "sk-upstream-SECRETVALUE-12345"
CLIENT_KEY = "client-key-SECRET-67890"
EMAIL = "jane.roe@example.org"
PROMPT = "Tell me about the weather today in a few words"


class Setup:
    def __init__(self, url: str, sandbox: str, folder: Path) -> None:
        self.url = url
        self.sandbox = sandbox
        self.folder = folder

    def reset(self, *faults: dict[str, Any]) -> None:
        httpx.delete(f"{self.sandbox}/sandbox/faults").raise_for_status()
        httpx.post(f"{self.sandbox}/sandbox/reset").raise_for_status()
        httpx.post(f"{self.sandbox}/sandbox/capture", json={"enabled": True, "echo": True}).raise_for_status()
        if faults:
            httpx.post(f"{self.sandbox}/sandbox/faults", json=list(faults)).raise_for_status()

    def captured(self) -> list[dict[str, Any]]:
        requests: list[dict[str, Any]] = httpx.get(f"{self.sandbox}/sandbox/captured").json()["requests"]
        return requests

    def client(self, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60, default_headers=headers
        )

    def spans(self) -> list[dict[str, Any]]:
        return _whole_lines(self.folder / "spans.jsonl")

    def decisions(self) -> list[dict[str, Any]]:
        return _whole_lines(self.folder / "decisions.jsonl")


def _whole_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a file another process appends to (a line being written is not one yet)."""
    if not path.exists():
        return []
    *complete, _partial = path.read_bytes().split(b"\n")
    return [json.loads(line) for line in complete]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    sandbox, sandbox_url = start_sandbox("test-fast", seed=3)
    folder = tmp_path_factory.mktemp("tracing")
    config = folder / "gateway.yaml"
    config.write_text(
        f"""
version: 1
server:
  auth: {{api_keys: ["{CLIENT_KEY}"]}}
classes:
  default:
    latency: {{p95_ms: 20000, p99_ms: 30000, ttft_ms: 5000}}
    placement: cloud-first
    on_sensitive: keep-local
  hedged:
    latency: {{p95_ms: 20000, p99_ms: 30000, ttft_ms: 5000}}
    placement: cloud-first
    hedge: true
resilience:
  retry: {{backoff_base_s: 0.05, backoff_max_s: 2.0, retry_budget_min: 1000}}
tracing:
  enabled: true
  exporter: file
  path: spans.jsonl
  record_content: true
decision_log:
  path: decisions.jsonl
deployments:
  cloud:
    type: openai
    base_url: {sandbox_url}/v1
    model: sandbox-a
    api_key: {UPSTREAM_KEY}
    region: us
    context_window: 128000
    timeouts: {{connect: 1, first_token: 1.5, idle: 1.0, total: 10}}
    expected: {{ttft_ms: 50, tokens_per_s: 400}}
    breaker: {{consecutive_failures: 1000, min_requests: 1000}}
  backup:
    type: openai
    base_url: {sandbox_url}/v1
    model: sandbox-b
    api_key: {UPSTREAM_KEY}
    placement: local
    context_window: 128000
    timeouts: {{connect: 1, first_token: 1.5, idle: 1.0, total: 10}}
    expected: {{ttft_ms: 60, tokens_per_s: 400}}
    price: {{input_per_mtok: 1, output_per_mtok: 2}}
models:
  pair: {{deployments: [cloud, backup]}}
"""
    )
    gateway, url = start_gateway(config)
    try:
        yield Setup(url, sandbox_url, folder)
    finally:
        gateway.stop()
        sandbox.stop()
        assert "Traceback" not in gateway.output, gateway.output[-3000:]


def ask(setup: Setup, text: str = PROMPT, **headers: str) -> Any:
    return setup.client(**headers).chat.completions.with_raw_response.create(
        model="pair", messages=[{"role": "user", "content": text}], max_tokens=12
    )


def only_request_span(setup: Setup, trace_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    def found() -> bool:
        return any(s["trace_id"] == trace_id and s["kind"] == "SERVER" for s in setup.spans())

    assert eventually(found, timeout=15), "the request's span was not exported"
    spans = [s for s in setup.spans() if s["trace_id"] == trace_id]
    [server] = [s for s in spans if s["kind"] == "SERVER"]
    children = sorted((s for s in spans if s["kind"] == "CLIENT"), key=lambda s: s["start_ns"])
    return server, children


def traceparent(trace_id: str, span_id: str = PARENT_ID) -> str:
    return f"00-{trace_id}-{span_id}-01"


def test_the_callers_trace_is_continued_to_the_upstream(setup: Setup) -> None:
    setup.reset()
    raw = ask(setup, traceparent=traceparent(TRACE_ID), tracestate="vendor=abc")
    assert raw.headers["x-hybridgate-deployment"] == "cloud"
    server, children = only_request_span(setup, TRACE_ID)
    assert server["parent_span_id"] == PARENT_ID
    assert server["name"] == "chat pair"
    attrs = server["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "pair"
    assert attrs["gen_ai.response.model"] == "sandbox-a"
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["gen_ai.response.finish_reasons"] in (["stop"], ["length"])
    assert attrs["hybridgate.class"] == "default"
    assert attrs["hybridgate.placement"] == "cloud"
    assert attrs["hybridgate.decision.reason"]
    assert attrs["hybridgate.latency.predicted_ms"] > 0
    assert attrs["hybridgate.latency.actual_ms"] > 0
    assert attrs["hybridgate.outcome"] == "ok"
    [attempt] = children
    assert attempt["parent_span_id"] == server["span_id"]
    assert attempt["name"] == "chat sandbox-a"
    assert attempt["attributes"]["hybridgate.deployment"] == "cloud"
    assert attempt["attributes"]["hybridgate.attempt.reason"] == "first"
    assert attempt["attributes"]["hybridgate.attempt.hedge"] is False
    assert attempt["attributes"]["hybridgate.attempt.outcome"] == "ok"
    assert attempt["start_ns"] >= server["start_ns"]
    assert attempt["end_ns"] <= server["end_ns"]
    # What the upstream received names the attempt's span, in the caller's trace.
    [seen] = setup.captured()
    assert seen["trace"]["traceparent"] == f"00-{TRACE_ID}-{attempt['span_id']}-01"
    assert seen["trace"]["tracestate"] == "vendor=abc"
    # The decision log names the trace.
    assert eventually(lambda: any(r["trace_id"] == TRACE_ID for r in setup.decisions()), timeout=10)
    [record] = [r for r in setup.decisions() if r["trace_id"] == TRACE_ID]
    assert record["attempts"][0]["deployment"] == "cloud"
    assert record["outcome"] == "ok"
    assert record["deployment_region"] == "us"
    assert record["egress_bytes"] > 0
    assert record["usage"]["completion_tokens"] == attrs["gen_ai.usage.output_tokens"]
    assert record["sensitive"]["action"] == "none"


def test_retries_and_a_failover_are_attempt_spans_with_their_reasons(setup: Setup) -> None:
    setup.reset({"kind": "server_error", "status": 503, "next": 5, "model": "sandbox-a"})
    trace_id = "1" * 32
    raw = ask(setup, traceparent=traceparent(trace_id))
    assert raw.headers["x-hybridgate-deployment"] == "backup"
    server, children = only_request_span(setup, trace_id)
    *failed, last = children
    assert failed
    assert int(raw.headers["x-hybridgate-attempts"]) == len(children)
    for i, span in enumerate(failed):
        assert span["attributes"]["hybridgate.deployment"] == "cloud"
        assert span["status"] == "ERROR"
        assert span["attributes"]["error.type"] == "server_error"
        assert span["attributes"]["http.response.status_code"] == 503
        assert span["attributes"]["hybridgate.attempt.reason"] == ("first" if i == 0 else "retry")
    assert last["attributes"]["hybridgate.deployment"] == "backup"
    assert last["attributes"]["hybridgate.attempt.reason"] == "failover"
    assert last["attributes"]["hybridgate.attempt.after"] == "server_error"
    assert server["attributes"]["hybridgate.fallback.reason"] == "; ".join(
        ["cloud: server_error"] * len(failed)
    )
    assert server["attributes"]["hybridgate.attempts"] == len(children)
    assert server["status"] == "UNSET"
    # Each attempt's upstream request carried its own span.
    assert [c["trace"]["traceparent"] for c in setup.captured()] == [
        f"00-{trace_id}-{s['span_id']}-01" for s in children
    ]
    # The decision log has every attempt, with its timing, outcome and error kind.
    assert eventually(lambda: any(r["trace_id"] == trace_id for r in setup.decisions()), timeout=10)
    [record] = [r for r in setup.decisions() if r["trace_id"] == trace_id]
    assert [(a["deployment"], a["outcome"], a["error"]) for a in record["attempts"]] == [
        *[("cloud", "server_error", "server_error")] * len(failed),
        ("backup", "ok", None),
    ]
    assert [a["reason"] for a in record["attempts"]][-1] == "failover"
    assert all(a["ms"] >= 0 and a["start_ms"] >= 0 for a in record["attempts"])
    assert record["deployment"] == "backup"
    assert record["placement"] == "local"
    assert record["egress_bytes"] == 0  # answered on premises
    assert len(record["prompt_hmac"]) == 64
    assert record["plan"]["order"] == ["cloud", "backup"]


def test_a_hedge_is_its_own_attempt_span(setup: Setup) -> None:
    setup.reset({"kind": "slow_first_token", "delay_s": 5, "next": 1, "model": "sandbox-a"})
    trace_id = "2" * 32
    raw = ask(setup, traceparent=traceparent(trace_id), **{"x-hybridgate-class": "hedged"})
    assert raw.headers["x-hybridgate-hedged"] == "1"
    server, children = only_request_span(setup, trace_id)
    primary, hedge = children
    assert primary["attributes"]["hybridgate.attempt.hedge"] is False
    assert primary["attributes"]["hybridgate.attempt.outcome"] == "cancelled"
    assert hedge["attributes"]["hybridgate.attempt.hedge"] is True
    assert hedge["attributes"]["hybridgate.attempt.reason"] == "hedge"
    assert hedge["attributes"]["hybridgate.attempt.outcome"] == "ok"
    assert server["attributes"]["hybridgate.hedged"] is True


def test_a_stream_span_ends_with_the_stream(setup: Setup) -> None:
    setup.reset()
    trace_id = "3" * 32
    stream = setup.client(traceparent=traceparent(trace_id)).chat.completions.create(
        model="pair",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    server, [attempt] = only_request_span(setup, trace_id)
    assert server["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert attempt["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert attempt["attributes"]["hybridgate.attempt.outcome"] == "ok"
    # The attempt's span lasts to the stream's end, not to its first token; the request's too.
    assert attempt["end_ns"] <= server["end_ns"]
    assert (
        attempt["attributes"]["hybridgate.attempt.first_event_ms"] * 1e6
        <= attempt["end_ns"] - attempt["start_ns"]
    )
    # record_content is on and nothing here is sensitive: the exchange is in the span.
    assert PROMPT in server["attributes"]["gen_ai.input.messages"]
    assert text in server["attributes"]["gen_ai.output.messages"]


def test_sensitive_requests_never_have_their_content_recorded(setup: Setup) -> None:
    setup.reset()
    found = f"Please write to {EMAIL} about the weather"
    declared = "Our quarterly plan is confidential, summarise it in a word"
    ask(setup, found, traceparent=traceparent("4" * 32))
    ask(setup, declared, traceparent=traceparent("5" * 32), **{"x-hybridgate-sensitivity": "confidential"})
    for trace_id in ("4" * 32, "5" * 32):
        server, children = only_request_span(setup, trace_id)
        assert server["attributes"]["hybridgate.sensitive"] is True
        assert "gen_ai.input.messages" not in server["attributes"]
        assert "gen_ai.output.messages" not in server["attributes"]
        assert [c["attributes"]["hybridgate.deployment"] for c in children] == ["backup"]
    assert eventually(lambda: any(r["trace_id"] == "5" * 32 for r in setup.decisions()), timeout=10)
    actions = {
        r["trace_id"]: r["sensitive"] for r in setup.decisions() if r["trace_id"] in ("4" * 32, "5" * 32)
    }
    assert actions["4" * 32]["action"] == "keep_local"
    assert actions["4" * 32]["kinds"] == ["email"]
    assert actions["5" * 32]["action"] == "keep_local"
    everything = (setup.folder / "spans.jsonl").read_text() + (setup.folder / "decisions.jsonl").read_text()
    assert EMAIL not in everything
    assert "quarterly plan" not in everything
    # Nor credentials, ever.
    assert UPSTREAM_KEY not in everything
    assert CLIENT_KEY not in everything


def test_a_malformed_traceparent_starts_a_new_trace(setup: Setup) -> None:
    setup.reset()
    raw = ask(setup, traceparent="00-not-a-trace-01")
    assert raw.status_code == 200
    [seen] = setup.captured()
    version, trace_id, span_id, flags = seen["trace"]["traceparent"].split("-")
    assert (version, len(trace_id)) == ("00", 32)
    assert int(flags, 16) & 1, "sampled"
    server, [attempt] = only_request_span(setup, trace_id)
    assert server["parent_span_id"] is None
    assert attempt["span_id"] == span_id


def test_a_failed_request_is_traced_and_logged_with_every_attempt(setup: Setup) -> None:
    setup.reset({"kind": "server_error", "status": 500, "next": 50})
    trace_id = "6" * 32
    with pytest.raises(openai.InternalServerError):
        ask(setup, traceparent=traceparent(trace_id))
    server, children = only_request_span(setup, trace_id)
    assert server["status"] == "ERROR"
    assert server["attributes"]["error.type"] == "no_route_available"
    assert {c["attributes"]["hybridgate.deployment"] for c in children} == {"cloud", "backup"}
    assert all(c["attributes"]["error.type"] == "server_error" for c in children)
    assert eventually(lambda: any(r["trace_id"] == trace_id for r in setup.decisions()), timeout=10)
    [record] = [r for r in setup.decisions() if r["trace_id"] == trace_id]
    assert record["outcome"] == "no_route_available"
    assert [a["outcome"] for a in record["attempts"]] == ["server_error"] * len(children)
    assert record["plan"]["order"] == ["cloud", "backup"]
    assert record["deployment"] is None


def test_a_request_refused_before_planning_is_logged(setup: Setup) -> None:
    setup.reset()
    trace_id = "7" * 32
    with pytest.raises(openai.NotFoundError):
        setup.client(traceparent=traceparent(trace_id)).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": PROMPT}], max_tokens=4
        )
    server, children = only_request_span(setup, trace_id)
    assert children == []
    assert server["attributes"]["error.type"] == "model_not_found"
    assert eventually(lambda: any(r["trace_id"] == trace_id for r in setup.decisions()), timeout=10)
    [record] = [r for r in setup.decisions() if r["trace_id"] == trace_id]
    assert (record["outcome"], record["plan"], record["attempts"]) == ("model_not_found", None, [])
    assert setup.captured() == []


def test_a_stream_continued_elsewhere_has_a_continuation_span(setup: Setup) -> None:
    setup.reset({"kind": "stream_cut", "after_tokens": 3, "model": "sandbox-a"})
    trace_id = "8" * 32
    stream = setup.client(traceparent=traceparent(trace_id)).chat.completions.create(
        model="pair", messages=[{"role": "user", "content": PROMPT}], max_tokens=12, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    server, (cut, continued) = only_request_span(setup, trace_id)
    assert cut["attributes"]["hybridgate.deployment"] == "cloud"
    assert cut["status"] == "ERROR"
    assert continued["attributes"]["hybridgate.deployment"] == "backup"
    assert continued["attributes"]["hybridgate.attempt.reason"] == "continuation"
    assert continued["attributes"]["hybridgate.attempt.after"] == cut["attributes"]["error.type"]
    assert server["attributes"]["hybridgate.outcome"] == "ok"


def test_a_client_that_leaves_mid_stream_ends_the_spans(setup: Setup) -> None:
    setup.reset({"kind": "stream_stall", "after_tokens": 2, "delay_s": 5, "model": "sandbox-a"})
    trace_id = "9" * 32
    body = {
        "model": "pair",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 12,
        "stream": True,
    }
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "traceparent": traceparent(trace_id)}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{setup.url}/v1/chat/completions", json=body, headers=headers) as response,
    ):
        for line in response.iter_lines():
            if '"content"' in line:
                break  # leave after the first token: the stall is still to come
    server, children = only_request_span(setup, trace_id)
    assert server["attributes"]["hybridgate.outcome"] == "client_closed"
    assert children[0]["attributes"]["hybridgate.attempt.outcome"] == "cancelled"


def test_several_workers_trace_and_log_every_request(tmp_path: Path) -> None:
    """``serve --workers 2``: each worker has its own tracing pipeline; spans and records of both
    land in the one span file and the one decision log, whole and complete."""
    sandbox, sandbox_url = start_sandbox("instant", seed=4)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""
version: 1
server: {{auth: {{disabled: true}}}}
tracing: {{enabled: true, exporter: file, path: spans.jsonl}}
decision_log: {{path: decisions.jsonl, max_bytes: 4000, keep: 1000}}
deployments:
  cloud: {{type: openai, base_url: "{sandbox_url}/v1", model: sandbox-a, region: us}}
models:
  pair: {{deployments: [cloud]}}
"""
    )
    gateway, url = start_gateway(config, extra_args=["--workers", "2"])
    try:
        with httpx.Client(timeout=30) as http:  # a new connection per request: both workers serve
            for i in range(40):
                response = http.post(
                    f"{url}/v1/chat/completions",
                    json={
                        "model": "pair",
                        "messages": [{"role": "user", "content": PROMPT}],
                        "max_tokens": 4,
                    },
                    headers={"traceparent": traceparent(f"{i + 1:032x}"), "connection": "close"},
                )
                assert response.status_code == 200
    finally:
        gateway.stop()  # SIGTERM: every worker flushes its spans and records
        sandbox.stop()
    assert "Traceback" not in gateway.output, gateway.output[-3000:]
    records = read_log(tmp_path / "decisions.jsonl")
    assert records.corrupt == 0
    assert sorted(r["trace_id"] for r in records.records) == [f"{i + 1:032x}" for i in range(40)]
    assert len(records.files) > 1  # rotated while both workers wrote
    spans = _whole_lines(tmp_path / "spans.jsonl")
    assert sorted(s["trace_id"] for s in spans if s["kind"] == "SERVER") == [
        f"{i + 1:032x}" for i in range(40)
    ]
    assert len(spans) == 80
    assert len({r["id"] for r in records.records}) == 40  # request ids unique across workers
    assert len({r["id"][:12] for r in records.records}) == 2, "both workers served and logged"

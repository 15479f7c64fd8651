"""Gateway behaviour end to end, with real upstreams the test controls.

Upstreams: SANDBOX processes (a stand-in cloud whose faults the test injects through its control
API, reached through the real ``openai`` adapter) and llama.cpp's own server. Clients: the
official SDKs and raw HTTP. Each test checks what the client got and, where it matters, what
the upstream saw.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.processes import ManagedProcess, free_port, start_gateway, start_sandbox


class Upstream:
    """A sandbox the test drives: install faults, read what it saw."""

    def __init__(self, url: str) -> None:
        self.url = url

    def faults(self, *rules: dict[str, Any]) -> None:
        httpx.delete(f"{self.url}/sandbox/faults").raise_for_status()
        if rules:
            httpx.post(f"{self.url}/sandbox/faults", json=list(rules)).raise_for_status()

    def reset(self) -> None:
        self.faults()
        httpx.post(f"{self.url}/sandbox/reset").raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = httpx.get(f"{self.url}/sandbox/stats").json()["requests"]
        return log


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    procs: list[ManagedProcess] = []
    try:
        first, first_url = start_sandbox("instant", seed=1)
        procs.append(first)
        second, second_url = start_sandbox("instant", seed=2)
        procs.append(second)
        yield Upstream(first_url), Upstream(second_url)
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstreams: tuple[Upstream, Upstream],
    llama_server: tuple[ManagedProcess, str],
) -> Iterator[str]:
    first, second = upstreams
    config = tmp_path_factory.mktemp("behaviour") / "gateway.yaml"
    config.write_text(
        f"""
version: 1
server: {{auth: {{disabled: true}}}}
deployments:
  cloud-a:
    type: openai
    base_url: {first.url}/v1
    model: sandbox-a
    region: us
    context_window: 128000
    timeouts: {{connect: 2, first_token: 0.5, idle: 0.5, total: 5}}
    # these tests inject failures on purpose, one after the other: keep the breaker closed
    breaker: {{consecutive_failures: 1000, min_requests: 1000}}
  cloud-b:
    type: openai
    base_url: {second.url}/v1
    model: sandbox-b
    region: eu
    context_window: 128000
  llama:
    type: openai
    base_url: {llama_server[1]}/v1
    model: tiny
    placement: local
    context_window: 2048
  broken-local:
    type: llamacpp
    model_path: {tmp_path_factory.getbasetemp() / "no-such-model.gguf"}
models:
  single:
    deployments: [cloud-a]
  pair:
    deployments: [cloud-a, cloud-b]
  llama:
    deployments: [llama]
  broken:
    deployments: [broken-local]
"""
    )
    proc, url = start_gateway(config)
    try:
        yield url
    finally:
        proc.stop()
        assert "Traceback" not in proc.output, proc.output[-3000:]


@pytest.fixture
def client(gateway: str, upstreams: tuple[Upstream, Upstream]) -> openai.OpenAI:
    for upstream in upstreams:
        upstream.reset()
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="x", max_retries=0, timeout=30)


HI: list[Any] = [{"role": "user", "content": "Say something"}]


def test_stop_sequences_pass_through(client: openai.OpenAI, upstreams: tuple[Upstream, Upstream]) -> None:
    reply = client.chat.completions.create(model="single", messages=HI, stop=[" "], max_tokens=50)
    assert reply.choices[0].finish_reason == "stop"
    assert " " not in (reply.choices[0].message.content or "")
    assert upstreams[0].requests()[-1]["finish_reason"] == "stop"


def test_response_format_passes_through(client: openai.OpenAI) -> None:
    # llama.cpp constrains its output with a grammar built from the schema it received, so a
    # valid JSON answer from a random-weight model proves the parameter reached the runtime.
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    reply = client.chat.completions.create(
        model="llama",
        messages=HI,
        max_tokens=60,
        # llama.cpp's extension of json_object (a schema) is not in the SDK's types: send it raw.
        extra_body={"response_format": {"type": "json_object", "schema": schema}},
    )
    assert isinstance(json.loads(reply.choices[0].message.content or "")["ok"], bool)


def test_rate_limit_is_429_with_retry_after(
    client: openai.OpenAI, upstreams: tuple[Upstream, Upstream]
) -> None:
    upstreams[0].faults({"kind": "rate_limit", "retry_after_s": 7})
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="single", messages=HI, max_tokens=5)
    assert info.value.response.headers["retry-after"] == "7"
    assert len(upstreams[0].requests()) == 1, "the gateway does not hammer a rate-limited provider"


def test_rate_limit_in_anthropic_format(gateway: str, upstreams: tuple[Upstream, Upstream]) -> None:
    upstreams[0].reset()
    upstreams[0].faults({"kind": "rate_limit", "retry_after_s": 3})
    client = anthropic.Anthropic(base_url=gateway, api_key="x", max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="single", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert info.value.response.headers["retry-after"] == "3"
    assert info.value.response.json()["error"]["type"] == "rate_limit_error"


def test_failover_to_the_next_deployment(client: openai.OpenAI, upstreams: tuple[Upstream, Upstream]) -> None:
    upstreams[0].faults({"kind": "server_error", "status": 503})
    raw = client.chat.completions.with_raw_response.create(model="pair", messages=HI, max_tokens=5)
    assert raw.headers["x-hybridgate-deployment"] == "cloud-b"
    assert raw.parse().choices[0].message.content
    # a 5xx is retried once on the same deployment, then the next one answers
    assert [r["outcome"] for r in upstreams[0].requests()] == ["error", "error"]
    assert [r["outcome"] for r in upstreams[1].requests()] == ["ok"]


def test_content_policy_refusal_is_returned_not_routed_around(
    client: openai.OpenAI, upstreams: tuple[Upstream, Upstream]
) -> None:
    upstreams[0].faults({"kind": "content_policy"})
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="pair", messages=HI, max_tokens=5)
    assert info.value.response.json()["error"]["code"] == "content_policy_violation"
    assert upstreams[1].requests() == [], "another provider must not be asked to do what one refused"


def test_silent_upstream_is_504_within_its_deadline(
    client: openai.OpenAI, upstreams: tuple[Upstream, Upstream]
) -> None:
    upstreams[0].faults({"kind": "hang"})
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="single", messages=HI, max_tokens=5)
    assert info.value.status_code == 504
    assert "timeout" in info.value.response.json()["error"]["message"]


def test_no_available_deployment_is_503(client: openai.OpenAI, gateway: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="broken", messages=HI, max_tokens=5)
    assert info.value.status_code == 503
    assert "broken-local" in info.value.response.json()["error"]["message"]
    ready = httpx.get(f"{gateway}/readyz")
    assert ready.status_code == 503
    assert ready.json()["deployments"]["broken-local"]["state"] == "failed"


def test_stream_cut_mid_answer_ends_with_an_error_not_success(
    client: openai.OpenAI, upstreams: tuple[Upstream, Upstream]
) -> None:
    upstreams[0].faults({"kind": "stream_cut", "after_tokens": 3})
    stream = client.chat.completions.create(model="single", messages=HI, max_tokens=40, stream=True)
    received: list[str] = []

    def consume() -> None:
        for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError):
        consume()
    assert received, "the tokens before the cut did arrive"


def test_stream_cut_in_anthropic_format(gateway: str, upstreams: tuple[Upstream, Upstream]) -> None:
    upstreams[0].reset()
    upstreams[0].faults({"kind": "stream_cut", "after_tokens": 3})
    client = anthropic.Anthropic(base_url=gateway, api_key="x", max_retries=0)
    with (
        pytest.raises(anthropic.APIError),
        client.messages.stream(
            model="single", max_tokens=40, messages=[{"role": "user", "content": "hi"}]
        ) as s,
    ):
        for _ in s.text_stream:
            pass


def test_failure_before_the_first_token_fails_over_transparently(
    client: openai.OpenAI, upstreams: tuple[Upstream, Upstream]
) -> None:
    upstreams[0].faults({"kind": "reset"})
    chunks = list(client.chat.completions.create(model="pair", messages=HI, max_tokens=10, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert [r["outcome"] for r in upstreams[1].requests()] == ["ok"]


def test_unused_port_gives_502(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"""
version: 1
server: {{auth: {{disabled: true}}}}
deployments:
  gone: {{type: openai, base_url: "http://127.0.0.1:{free_port()}/v1", model: x}}
models:
  gone: {{deployments: [gone]}}
"""
    )
    proc, url = start_gateway(config)
    try:
        response = httpx.post(f"{url}/v1/chat/completions", json={"model": "gone", "messages": HI})
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "no_route_available"
    finally:
        proc.stop()

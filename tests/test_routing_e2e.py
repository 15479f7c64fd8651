"""Routing policy end to end: classes, data governance, residency, explanations.

A real gateway routes between llama.cpp's server (local) and a SANDBOX stand-in cloud that the
test controls: it can record the request bodies it receives (so the test sees exactly what left
the device) and echo the prompt back (so the test sees what the client gets after restoration).
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
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from hybridgate.cli import app
from tests.support.processes import ManagedProcess, eventually, start_gateway, start_sandbox

EMAIL = "jane.roe@example.org"
CARD = "4111 1111 1111 1111"
SECRET_PROMPT = f"Email {EMAIL} the receipt for card {CARD} today."


class Cloud:
    def __init__(self, url: str) -> None:
        self.url = url

    def reset(self, *, echo: bool = True) -> None:
        httpx.post(f"{self.url}/sandbox/reset").raise_for_status()
        httpx.post(f"{self.url}/sandbox/capture", json={"enabled": True, "echo": echo}).raise_for_status()

    def received(self) -> list[dict[str, Any]]:
        bodies: list[dict[str, Any]] = [
            r["body"] for r in httpx.get(f"{self.url}/sandbox/captured").json()["requests"]
        ]
        return bodies


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, llama_server: tuple[ManagedProcess, str]
) -> Iterator[tuple[str, Cloud, Path]]:
    sandbox, sandbox_url = start_sandbox("instant")
    folder = tmp_path_factory.mktemp("routing")
    config = folder / "gateway.yaml"
    config.write_text(
        f"""
version: 1
server: {{auth: {{disabled: true}}}}
classes:
  private:
    latency: {{p95_ms: 20000, p99_ms: 40000, ttft_ms: 10000}}
    placement: local-first
    on_sensitive: keep-local
  redacting:
    latency: {{p95_ms: 20000, p99_ms: 40000, ttft_ms: 10000}}
    placement: cloud-only
    on_sensitive: redact
  strict:
    latency: {{p95_ms: 20000, p99_ms: 40000, ttft_ms: 10000}}
    on_sensitive: refuse
default_class: redacting
governance:
  residency: {{eu: [eu]}}
decision_log:
  path: decisions.jsonl
deployments:
  local:
    type: openai
    base_url: {llama_server[1]}/v1
    model: tiny
    placement: local
    context_window: 2048
  cloud-us:
    type: openai
    base_url: {sandbox_url}/v1
    model: sandbox-us
    region: us
    context_window: 128000
  cloud-eu:
    type: openai
    base_url: {sandbox_url}/v1
    model: sandbox-eu
    region: eu
    context_window: 128000
models:
  hybrid:
    deployments: [cloud-us, cloud-eu, local]
"""
    )
    gateway, url = start_gateway(config)
    try:
        yield url, Cloud(sandbox_url), folder
    finally:
        gateway.stop()
        sandbox.stop()
        assert "Traceback" not in gateway.output, gateway.output[-3000:]


@pytest.fixture
def cloud(setup: tuple[str, Cloud, Path]) -> Cloud:
    setup[1].reset()
    return setup[1]


def client(setup: tuple[str, Cloud, Path], cls: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{setup[0]}/v1",
        api_key="x",
        max_retries=0,
        timeout=60,
        default_headers={"X-Hybridgate-Class": cls, **headers},
    )


def chat(c: openai.OpenAI, text: str, **kwargs: Any) -> Any:
    return c.chat.completions.with_raw_response.create(
        model="hybrid", messages=[{"role": "user", "content": text}], max_tokens=40, **kwargs
    )


def test_explanation_headers(setup: tuple[str, Cloud, Path], cloud: Cloud) -> None:
    raw = chat(client(setup, "redacting"), "Hello there")
    assert raw.headers["x-hybridgate-class"] == "redacting"
    assert raw.headers["x-hybridgate-deployment"] == "cloud-us"
    assert raw.headers["x-hybridgate-route"].startswith("cloud-us>")
    assert "cloud-only" in raw.headers["x-hybridgate-reason"]
    assert 0 <= float(raw.headers["x-hybridgate-overhead-ms"]) < 1000
    assert len(cloud.received()) == 1


def test_keep_local_never_reaches_the_cloud(setup: tuple[str, Cloud, Path], cloud: Cloud) -> None:
    raw = chat(client(setup, "private"), SECRET_PROMPT)
    assert raw.headers["x-hybridgate-deployment"] == "local"
    assert cloud.received() == []


def test_redacted_before_the_cloud_and_restored_for_the_client(
    setup: tuple[str, Cloud, Path], cloud: Cloud
) -> None:
    raw = chat(client(setup, "redacting"), SECRET_PROMPT)
    assert raw.headers["x-hybridgate-deployment"] == "cloud-us"
    [sent] = cloud.received()
    text = json.dumps(sent)
    assert EMAIL not in text
    assert CARD not in text
    assert CARD.replace(" ", "") not in text
    answer = raw.parse().choices[0].message.content
    assert EMAIL in answer, "the echoed placeholder was restored"
    assert CARD in answer
    assert "[EMAIL" not in answer
    assert "[PAYMENT" not in answer


def test_redaction_restores_a_stream_whatever_its_chunking(
    setup: tuple[str, Cloud, Path], cloud: Cloud
) -> None:
    stream = client(setup, "redacting").chat.completions.create(
        model="hybrid", messages=[{"role": "user", "content": SECRET_PROMPT}], max_tokens=40, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert EMAIL in text
    assert CARD in text
    assert "[" not in text
    assert EMAIL not in json.dumps(cloud.received())


def test_redaction_with_the_anthropic_api(setup: tuple[str, Cloud, Path], cloud: Cloud) -> None:
    c = anthropic.Anthropic(
        base_url=setup[0], api_key="x", max_retries=0, default_headers={"X-Hybridgate-Class": "redacting"}
    )
    with c.messages.stream(
        model="hybrid", max_tokens=40, messages=[{"role": "user", "content": SECRET_PROMPT}]
    ) as s:
        text = "".join(s.text_stream)
    assert EMAIL in text
    assert EMAIL not in json.dumps(cloud.received())


def test_refuse_rule_is_422_without_the_value(setup: tuple[str, Cloud, Path], cloud: Cloud) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        chat(client(setup, "strict"), SECRET_PROMPT)
    error = info.value.response.json()["error"]
    assert error["code"] == "sensitive_data_refused"
    assert "email" in error["message"]
    assert "payment_card" in error["message"]
    assert EMAIL not in info.value.response.text
    assert cloud.received() == []


def test_confidential_with_a_cloud_only_class_fails_closed(
    setup: tuple[str, Cloud, Path], cloud: Cloud
) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        chat(client(setup, "redacting", **{"X-Hybridgate-Sensitivity": "confidential"}), "Nothing to see")
    assert info.value.status_code == 503
    assert "data governance" in info.value.response.json()["error"]["message"]
    assert cloud.received() == []


def test_residency_keeps_eu_data_in_eu(setup: tuple[str, Cloud, Path], cloud: Cloud) -> None:
    raw = chat(client(setup, "redacting", **{"X-Hybridgate-Region": "eu"}), "Hello")
    assert raw.headers["x-hybridgate-deployment"] == "cloud-eu"
    assert [b["model"] for b in cloud.received()] == ["sandbox-eu"]


def test_unknown_class_is_400(setup: tuple[str, Cloud, Path], cloud: Cloud) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(client(setup, "nonsense"), "Hello")
    assert info.value.response.json()["error"]["param"] == "x-hybridgate-class"


def test_route_explain_endpoint(setup: tuple[str, Cloud, Path], cloud: Cloud) -> None:
    response = httpx.post(
        f"{setup[0]}/v1/route/explain",
        json={"model": "hybrid", "messages": [{"role": "user", "content": SECRET_PROMPT}], "max_tokens": 10},
        headers={"X-Hybridgate-Class": "private"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["context"]["class"] == "private"
    explanation = body["explanation"]
    assert explanation["order"] == ["local"]
    assert explanation["data"]["kinds"] == ["email", "payment_card"]
    reasons = {c["deployment"]: c["reason"] for c in explanation["candidates"]}
    assert reasons["cloud-us"].startswith("data governance")
    assert EMAIL not in response.text
    assert cloud.received() == [], "explain runs nothing"


def test_decision_log_has_the_decision_and_no_content(setup: tuple[str, Cloud, Path], cloud: Cloud) -> None:
    chat(client(setup, "redacting"), SECRET_PROMPT)
    log = setup[2] / "decisions.jsonl"

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    # The gateway's writer thread appends it right after the answer; wait for the file, bounded.
    assert eventually(lambda: any('"redact":true' in line for line in lines()), timeout=10)
    records = [json.loads(line) for line in lines()]
    # Failed requests (refused, no route) are logged too, some before any plan was made.
    mine = [r for r in records if r["class"] == "redacting" and r["plan"] and r["plan"]["data"]["redact"]]
    assert mine
    record = mine[-1]
    assert record["deployment"] == "cloud-us"
    assert record["outcome"] == "ok"
    assert record["usage"]["completion_tokens"] > 0
    assert set(record["cost_usd"]) == {"total", "tokens", "egress", "compute"}
    assert EMAIL not in log.read_text()
    assert CARD not in log.read_text()


def test_explain_command_offline(setup: tuple[str, Cloud, Path], tmp_path: Path) -> None:
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"model": "hybrid", "messages": [{"role": "user", "content": "hi"}]}))
    config = setup[2] / "gateway.yaml"
    runner = CliRunner()
    table = runner.invoke(
        app, ["explain", "-c", str(config), str(request), "-H", "X-Hybridgate-Class: private"]
    )
    assert table.exit_code == 0, table.output
    assert "local-first" in table.output
    as_json = runner.invoke(app, ["explain", "-c", str(config), str(request), "--json"])
    assert as_json.exit_code == 0, as_json.output
    explanation = json.loads(as_json.output)
    assert explanation["class"] == "redacting"
    assert explanation["order"][0] in ("cloud-us", "cloud-eu")
    refused = runner.invoke(
        app, ["explain", "-c", str(config), str(request), "-H", "X-Hybridgate-Class: nope"]
    )
    assert refused.exit_code == 3


def _sensitive_counts(url: str) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if family.name == "hybridgate_sensitive_data":
            for s in family.samples:
                if s.name.endswith("_total"):
                    counts[(s.labels["class"], s.labels["action"])] = s.value
    return counts


def test_sensitive_data_actions_are_counted_by_class(setup: tuple[str, Cloud, Path], cloud: Cloud) -> None:
    before = _sensitive_counts(setup[0])
    chat(client(setup, "private"), SECRET_PROMPT)
    chat(client(setup, "redacting"), SECRET_PROMPT)
    chat(client(setup, "redacting"), "Nothing sensitive here")
    with pytest.raises(openai.UnprocessableEntityError):
        chat(client(setup, "strict"), SECRET_PROMPT)
    after = _sensitive_counts(setup[0])
    changes = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert changes == {
        ("private", "kept_local"): 1,
        ("redacting", "redacted"): 1,
        ("strict", "refused"): 1,
    }

"""Resilience against real faults from real processes.

Upstreams are SANDBOX processes whose faults the test injects (reset, hang, 429, 5xx, cuts,
stalls, malformed chunks...) plus llama.cpp's own server and the in-process llama.cpp runtime.
Each test asserts on what the client got and on what the upstream saw (how many attempts, and
their bodies or timing where it matters).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.processes import (
    ManagedProcess,
    eventually,
    start_gateway,
    start_llama_server,
    start_sandbox,
)

HI: list[Any] = [{"role": "user", "content": "Tell me about the weather today in a few words"}]


class Upstream:
    def __init__(self, url: str) -> None:
        self.url = url

    def reset(self, *faults: dict[str, Any], echo: bool = False) -> None:
        httpx.delete(f"{self.url}/sandbox/faults").raise_for_status()
        httpx.post(f"{self.url}/sandbox/reset").raise_for_status()
        httpx.post(f"{self.url}/sandbox/capture", json={"enabled": True, "echo": echo}).raise_for_status()
        if faults:
            httpx.post(f"{self.url}/sandbox/faults", json=list(faults)).raise_for_status()

    def log(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = httpx.get(f"{self.url}/sandbox/stats").json()["requests"]
        return records

    def bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in httpx.get(f"{self.url}/sandbox/captured").json()["requests"]]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[dict[str, Any]]:
    procs: list[ManagedProcess] = []
    try:
        a_proc, a_url = start_sandbox("test-fast", seed=11)
        procs.append(a_proc)
        b_proc, b_url = start_sandbox("test-fast", seed=12)
        procs.append(b_proc)
        folder = tmp_path_factory.mktemp("resilience")
        config = folder / "gateway.yaml"
        config.write_text(
            f"""
version: 1
server: {{auth: {{disabled: true}}}}
classes:
  default:
    latency: {{p95_ms: 20000, p99_ms: 30000, ttft_ms: 5000}}
    placement: cloud-first
  hedged:
    latency: {{p95_ms: 20000, p99_ms: 30000, ttft_ms: 5000}}
    placement: cloud-first
    hedge: true
  local-first:
    latency: {{p95_ms: 20000, p99_ms: 30000, ttft_ms: 5000}}
    placement: local-first
resilience:
  # The tests here retry on purpose, one after another: a budget sized for production traffic
  # would (rightly) run dry. The budget itself is tested in test_executor.py.
  retry: {{backoff_base_s: 0.05, backoff_max_s: 2.0, retry_budget_min: 1000}}
deployments:
  a:
    type: openai
    base_url: {a_url}/v1
    model: sandbox-a
    region: us
    context_window: 4096
    timeouts: {{connect: 1, first_token: 1.5, idle: 1.0, total: 10}}
    expected: {{ttft_ms: 50, tokens_per_s: 400}}
    # Tests here inject failures one after another on purpose: the breaker stays out of the way
    # (it has its own test below, on a gateway of its own).
    breaker: {{consecutive_failures: 1000, min_requests: 1000}}
  b:
    type: openai
    base_url: {b_url}/v1
    model: sandbox-b
    region: us
    context_window: 128000
    assistant_prefill: true
    timeouts: {{connect: 1, first_token: 1.5, idle: 1.0, total: 10}}
    expected: {{ttft_ms: 60, tokens_per_s: 400}}
    # The fallback costs more, so a healthy "a" is always ranked first (both meet the budget;
    # the cheaper one wins, whatever latencies earlier tests left in the predictor).
    price: {{input_per_mtok: 1, output_per_mtok: 2}}
  local:
    type: llamacpp
    model_path: {models_dir / "tiny.gguf"}
    context_window: 2048
    max_queue: 0
    n_threads: 1
models:
  pair: {{deployments: [a, b]}}
  solo: {{deployments: [a]}}
  spill: {{deployments: [local, b]}}
"""
        )
        gateway, url = start_gateway(config)
        procs.append(gateway)
        yield {"url": url, "a": Upstream(a_url), "b": Upstream(b_url), "gateway": gateway}
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture
def a(env: dict[str, Any]) -> Upstream:
    upstream: Upstream = env["a"]
    upstream.reset()
    return upstream


@pytest.fixture
def b(env: dict[str, Any]) -> Upstream:
    upstream: Upstream = env["b"]
    upstream.reset()
    return upstream


def client(env: dict[str, Any], cls: str = "default") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{env['url']}/v1",
        api_key="x",
        max_retries=0,
        timeout=30,
        default_headers={"X-Hybridgate-Class": cls},
    )


def ask(env: dict[str, Any], model: str, cls: str = "default", **kwargs: Any) -> Any:
    return client(env, cls).chat.completions.with_raw_response.create(
        model=model, messages=HI, max_tokens=12, **kwargs
    )


def test_429_with_retry_after_is_honoured(env: dict[str, Any], a: Upstream) -> None:
    a.reset({"kind": "rate_limit", "retry_after_s": 0.3, "next": 1})
    raw = ask(env, "solo")
    assert raw.http_response.status_code == 200
    log = a.log()
    assert [r["outcome"] for r in log] == ["error", "ok"]
    assert log[1]["arrival"] - log[0]["arrival"] >= 0.3, "not before the provider's Retry-After"


def test_429_without_retry_after_backs_off(env: dict[str, Any], a: Upstream) -> None:
    a.reset({"kind": "rate_limit", "next": 1})
    ask(env, "solo")
    log = a.log()
    assert [r["outcome"] for r in log] == ["error", "ok"]


def test_429_goes_to_another_deployment_at_once(env: dict[str, Any], a: Upstream, b: Upstream) -> None:
    a.reset({"kind": "rate_limit", "retry_after_s": 30})
    raw = ask(env, "pair")
    assert raw.headers["x-hybridgate-deployment"] == "b"
    assert len(a.log()) == 1
    assert len(b.log()) == 1


def test_500_once_is_retried_on_the_same_deployment(env: dict[str, Any], a: Upstream, b: Upstream) -> None:
    a.reset({"kind": "server_error", "status": 500, "next": 1})
    raw = ask(env, "pair")
    assert raw.headers["x-hybridgate-deployment"] == "a"
    assert [r["outcome"] for r in a.log()] == ["error", "ok"]
    assert b.log() == []


def test_persistent_503_fails_over_after_one_retry(env: dict[str, Any], a: Upstream, b: Upstream) -> None:
    a.reset({"kind": "server_error", "status": 503})
    raw = ask(env, "pair")
    assert raw.headers["x-hybridgate-deployment"] == "b"
    assert raw.headers["x-hybridgate-attempts"] == "3"
    assert len(a.log()) == 2


def test_reset_before_headers_is_retried(env: dict[str, Any], a: Upstream) -> None:
    a.reset({"kind": "reset", "next": 1})
    raw = ask(env, "solo")
    assert raw.http_response.status_code == 200
    assert [r["outcome"] for r in a.log()] == ["reset", "ok"]


def test_silent_deployment_times_out_and_fails_over_without_a_retry(
    env: dict[str, Any], a: Upstream, b: Upstream
) -> None:
    a.reset({"kind": "hang", "next": 1})
    raw = ask(env, "pair")
    assert raw.headers["x-hybridgate-deployment"] == "b"
    assert len(a.log()) == 1, "a silent deployment is not asked again"


def test_a_whole_answer_may_take_longer_than_the_first_token_deadline(
    env: dict[str, Any], a: Upstream
) -> None:
    """An upstream sends a whole answer's first byte when the answer is complete: it is bounded by
    the total deadline (10 s here), not the first-token one (1.5 s), or every answer longer than
    that would fail. A stream's first token still has the first-token deadline."""
    a.reset({"kind": "slow_first_token", "delay_s": 2.5, "next": 1})
    raw = ask(env, "solo")
    assert raw.http_response.status_code == 200
    assert [r["outcome"] for r in a.log()] == ["ok"]
    a.reset({"kind": "slow_first_token", "delay_s": 2.5, "next": 1})
    with pytest.raises(openai.APIStatusError) as caught:
        list(client(env).chat.completions.create(model="solo", messages=HI, max_tokens=12, stream=True))
    assert caught.value.status_code == 504
    assert caught.value.response.json()["error"]["message"].endswith("(a: timeout)")


def test_slow_first_token_is_hedged(env: dict[str, Any], a: Upstream, b: Upstream) -> None:
    a.reset({"kind": "slow_first_token", "delay_s": 5, "next": 1})
    raw = ask(env, "pair", cls="hedged")
    assert raw.headers["x-hybridgate-deployment"] == "b"
    assert raw.headers["x-hybridgate-hedged"] == "1"
    assert eventually(lambda: [r["outcome"] for r in a.log()] == ["disconnected"], timeout=5), a.log()


def test_stream_cut_mid_answer_is_continued_elsewhere(env: dict[str, Any], a: Upstream, b: Upstream) -> None:
    a.reset({"kind": "stream_cut", "after_tokens": 3})
    stream = client(env).chat.completions.create(model="pair", messages=HI, max_tokens=12, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert [r["outcome"] for r in a.log()] == ["cut"]
    [continued] = b.bodies()
    assert continued["messages"][-1]["role"] == "assistant"
    partial = continued["messages"][-1]["content"]
    assert partial
    assert text.startswith(partial)
    assert len(text) > len(partial)


def test_stream_stall_is_continued_elsewhere(env: dict[str, Any], a: Upstream, b: Upstream) -> None:
    a.reset({"kind": "stream_stall", "after_tokens": 2, "delay_s": 5})
    stream = client(env).chat.completions.create(model="pair", messages=HI, max_tokens=12, stream=True)
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert len(b.bodies()) == 1


def test_a_malformed_chunk_is_skipped_and_counted(env: dict[str, Any], a: Upstream) -> None:
    before = _metric(env, 'hybridgate_deployment_malformed_chunks{deployment="a"}')
    a.reset({"kind": "malformed_chunk", "after_tokens": 2, "next": 1})
    stream = client(env).chat.completions.create(model="solo", messages=HI, max_tokens=12, stream=True)
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert _metric(env, 'hybridgate_deployment_malformed_chunks{deployment="a"}') == before + 1


def test_a_stream_without_done_is_finalised(env: dict[str, Any], a: Upstream) -> None:
    a.reset({"kind": "missing_done", "next": 1})
    stream = client(env).chat.completions.create(
        model="solo", messages=HI, max_tokens=12, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert any(c.usage is not None for c in chunks)


def test_context_length_skips_to_a_larger_window(env: dict[str, Any], a: Upstream, b: Upstream) -> None:
    a.reset({"kind": "context_length", "next": 1})
    raw = ask(env, "pair")
    assert raw.headers["x-hybridgate-deployment"] == "b"
    assert len(a.log()) == 1


def test_content_policy_refusal_is_returned_not_routed_around(
    env: dict[str, Any], a: Upstream, b: Upstream
) -> None:
    a.reset({"kind": "content_policy", "next": 1})
    with pytest.raises(openai.BadRequestError) as caught:
        ask(env, "pair")
    assert caught.value.status_code == 400
    assert caught.value.code == "content_policy_violation"
    assert "safety system" in caught.value.message, "the provider's own words reach the client"
    assert len(a.log()) == 1
    assert b.log() == [], "a refusal is the provider's answer: another provider is not asked"


def test_flapping_deployment_opens_its_breaker_and_comes_back(
    tmp_path: Path, a: Upstream, b: Upstream
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"""
version: 1
server: {{auth: {{disabled: true}}}}
classes:
  default: {{latency: {{p95_ms: 20000, p99_ms: 30000, ttft_ms: 5000}}, placement: cloud-first}}
deployments:
  a: {{type: openai, base_url: "{a.url}/v1", model: sandbox-a, region: us, expected: {{ttft_ms: 50}},
      breaker: {{consecutive_failures: 2, open_s: 0.5, max_open_s: 2}}}}
  b: {{type: openai, base_url: "{b.url}/v1", model: sandbox-b, region: us, expected: {{ttft_ms: 60}},
      price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
models:
  pair: {{deployments: [a, b]}}
"""
    )
    gateway, url = start_gateway(config)
    try:
        env = {"url": url}
        a.reset({"kind": "flapping", "down_s": 1.5, "up_s": 60})
        served = [ask(env, "pair").headers["x-hybridgate-deployment"] for _ in range(6)]
        assert set(served) == {"b"}, "served by the fallback while the deployment is down"
        assert len(a.log()) == 2, "after two failures the open breaker kept requests off it"
        assert httpx.get(f"{url}/readyz").json()["deployments"]["a"]["health"]["breaker"]["state"] == "open"
        # When the outage ends and the open period has passed, a single trial closes the breaker.
        assert eventually(lambda: ask(env, "pair").headers["x-hybridgate-deployment"] == "a", timeout=15)
        assert [r["outcome"] for r in a.log()][-1] == "ok"
    finally:
        gateway.stop()


def test_client_disconnect_mid_stream_cancels_upstream(env: dict[str, Any], a: Upstream) -> None:
    a.reset({"kind": "stream_stall", "after_tokens": 2, "delay_s": 20})
    body = {"model": "solo", "messages": HI, "max_tokens": 12, "stream": True}
    with httpx.stream("POST", f"{env['url']}/v1/chat/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if '"content":"' in line.replace(" ", "") and "role" not in line:
                break
    assert eventually(lambda: [r["outcome"] for r in a.log()] == ["disconnected"], timeout=5), a.log()


def test_local_queue_overload_spills_to_the_cloud(env: dict[str, Any], b: Upstream) -> None:
    results: list[str] = []

    def one() -> None:
        raw = client(env, "local-first").chat.completions.with_raw_response.create(
            model="spill", messages=HI, max_tokens=300
        )
        results.append(raw.headers["x-hybridgate-deployment"])

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "local" in results
    assert "b" in results, "with one slot and no queue, the others went to the cloud"


def test_killed_llama_server_mid_stream(
    env: dict[str, Any], tmp_path: Path, models_dir: Path, b: Upstream
) -> None:
    llama, llama_url = start_llama_server(models_dir / "tiny.gguf")
    port = llama_url.rsplit(":", 1)[1]
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"""
version: 1
server: {{auth: {{disabled: true}}}}
classes:
  default: {{latency: {{p95_ms: 60000, p99_ms: 90000, ttft_ms: 20000}}, placement: local-first}}
deployments:
  llama: {{type: openai, base_url: "{llama_url}/v1", model: tiny, placement: local, context_window: 2048,
          timeouts: {{connect: 1, first_token: 10, idle: 2, total: 60}}}}
  cloud: {{type: openai, base_url: "{b.url}/v1", model: sandbox-b, region: us, assistant_prefill: true,
          context_window: 128000}}
models:
  m: {{deployments: [llama, cloud]}}
"""
    )
    gateway, url = start_gateway(config)
    try:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        stream = c.chat.completions.create(model="m", messages=HI, max_tokens=1500, stream=True)
        pieces: list[str] = []
        finish: str | None = None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                if len(pieces) == 5:
                    assert llama.proc is not None
                    llama.proc.send_signal(signal.SIGKILL)
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        assert len(pieces) > 5, "the answer went on after the local server died"
        assert finish in ("stop", "length")
        assert len(b.bodies()) == 1, "continued on the cloud deployment"
        # The local server comes back on the same port; the gateway routes to it again.
        llama.stop()
        llama2, _ = start_llama_server(models_dir / "tiny.gguf", port=int(port))
        try:
            assert eventually(
                lambda: (
                    c.chat.completions.with_raw_response.create(model="m", messages=HI, max_tokens=3).headers[
                        "x-hybridgate-deployment"
                    ]
                    == "llama"
                ),
                timeout=30,
            )
        finally:
            llama2.stop()
    finally:
        gateway.stop()
        llama.stop()


def _metric(env: dict[str, Any], name: str) -> float:
    text = httpx.get(f"{env['url']}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_expose_the_extra_load(env: dict[str, Any]) -> None:
    text = httpx.get(f"{env['url']}/metrics").text
    for name in (
        "hybridgate_extra_attempts_total",
        "hybridgate_requests_total",
        "hybridgate_request_duration_seconds",
    ):
        assert name in text

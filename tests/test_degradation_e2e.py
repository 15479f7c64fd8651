"""Degraded service against real processes: Idempotency-Key, the response cache (stale answers in
an outage), offline mode, and priority admission on the in-process llama.cpp runtime.

Upstreams are SANDBOX processes whose faults each test injects; clients are the official openai
and anthropic SDKs. What could leak between tests sharing a gateway is kept apart explicitly:
every test asks its own prompt (``fresh()``) under its own Idempotency-Keys, so no cache entry or
key of one test can answer another's request, and each resets its sandbox (faults and request
log) first. The unit behaviour of the same pieces is in tests/test_memo.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.processes import ManagedProcess, eventually, free_port, start_gateway, start_sandbox

KEY_A, KEY_B = "key-of-tenant-a", "key-of-tenant-b"
LONG = {"p95_ms": 600000, "p99_ms": 600000, "ttft_ms": 600000}
AUTH = f"""
server:
  auth:
    api_keys:
      - {{key: {KEY_A}, tenant: tenant-a}}
      - {{key: {KEY_B}, tenant: tenant-b}}
"""


def fresh(words: str = "Tell me about the weather") -> list[Any]:
    """A prompt no other test asks (so no other test's cache entry or key can answer it)."""
    return [{"role": "user", "content": f"{words} ({uuid.uuid4().hex[:12]})"}]


class Upstream:
    """A SANDBOX: inject faults, read what it was asked."""

    def __init__(self, url: str) -> None:
        self.url = url

    def reset(self, *faults: dict[str, Any]) -> None:
        httpx.delete(f"{self.url}/sandbox/faults").raise_for_status()
        httpx.post(f"{self.url}/sandbox/reset").raise_for_status()
        if faults:
            httpx.post(f"{self.url}/sandbox/faults", json=list(faults)).raise_for_status()

    def log(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = httpx.get(f"{self.url}/sandbox/stats").json()["requests"]
        return records

    def outcomes(self) -> list[str]:
        return [r["outcome"] for r in self.log()]


@dataclass
class Env:
    url: str
    upstream: Upstream

    def openai(self, cls: str = "default", key: str = KEY_A, timeout: float = 30) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=key,
            max_retries=0,
            timeout=timeout,
            default_headers={"X-Hybridgate-Class": cls},
        )

    def anthropic(self, cls: str = "default", key: str = KEY_A) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.url,
            api_key=key,
            max_retries=0,
            timeout=30,
            default_headers={"X-Hybridgate-Class": cls},
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {KEY_A}"})


def _gateway(folder: Path, text: str) -> tuple[ManagedProcess, str]:
    config = folder / "gateway.yaml"
    config.write_text(text)
    return start_gateway(config)


def _stopping(procs: list[ManagedProcess]) -> None:
    for proc in reversed(procs):
        proc.stop()


def _metric(env: Env, name: str) -> float | None:
    for line in env.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def _streamed_text(chunks: Any) -> tuple[str, set[str], str | None]:
    """(text, chunk ids, finish reason) of an OpenAI stream."""
    text, ids, finish = [], set(), None
    for chunk in chunks:
        ids.add(chunk.id)
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(text), ids, finish


# ============================================================================ memory: keys and cache


@pytest.fixture(scope="module")
def memo_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    procs: list[ManagedProcess] = []
    try:
        proc, url = start_sandbox("test-fast", seed=21)
        procs.append(proc)
        gateway, gateway_url = _gateway(
            tmp_path_factory.mktemp("memo"),
            f"""
version: 1
{AUTH}
classes:
  default: {{latency: {LONG}, placement: cloud-first}}
  cached: {{latency: {LONG}, placement: cloud-first, cache: true}}
  action: {{latency: {LONG}, placement: cloud-first, idempotent: true}}
resilience:
  retry: {{backoff_base_s: 0.01, backoff_max_s: 0.1, retry_budget_min: 1000}}
  cache: {{enabled: true}}
deployments:
  s:
    type: openai
    base_url: {url}/v1
    model: sandbox-test
    region: us
    timeouts: {{connect: 1, first_token: 10, idle: 5, total: 20}}
    # Failures are injected on purpose, test after test: the breaker stays out of the way.
    breaker: {{consecutive_failures: 1000, min_requests: 1000}}
models:
  solo: {{deployments: [s]}}
  twin: {{deployments: [s]}}
""",
        )
        procs.append(gateway)
        yield Env(gateway_url, Upstream(url))
    finally:
        _stopping(procs)


@pytest.fixture
def env(memo_env: Env) -> Env:
    memo_env.upstream.reset()
    return memo_env


def _ask(client: openai.OpenAI, messages: list[Any], key: str | None = None, **kwargs: Any) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.chat.completions.with_raw_response.create(
        model=kwargs.pop("model", "solo"), messages=messages, max_tokens=12, extra_headers=headers, **kwargs
    )


# ---------------------------------------------------------------------------- Idempotency-Key


def test_a_repeated_idempotency_key_gets_the_first_answer(env: Env) -> None:
    client, prompt, key = env.openai(), fresh(), uuid.uuid4().hex
    first = _ask(client, prompt, key)
    again = _ask(client, prompt, key)
    assert "x-hybridgate-cache" not in first.headers
    assert again.headers["x-hybridgate-cache"] == "replay"
    one, two = first.parse(), again.parse()
    assert two.id == one.id
    assert two.choices[0].message == one.choices[0].message
    assert len(env.upstream.log()) == 1, "the action ran once"
    # Without the key the same request runs again (the default class is not cached).
    assert _ask(client, prompt).parse().id != one.id
    assert len(env.upstream.log()) == 2


def test_concurrent_requests_with_one_key_run_once(env: Env) -> None:
    env.upstream.reset({"kind": "slow_first_token", "delay_s": 1.5, "next": 1})
    client, prompt, key = env.openai(), fresh(), uuid.uuid4().hex
    finished: dict[str, float] = {}

    def one(name: str) -> Any:
        raw = _ask(client, prompt, key)
        finished[name] = time.monotonic()
        return raw

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(one, "first")
        assert eventually(lambda: len(env.upstream.log()) == 1, timeout=10), "the first is upstream"
        second_sent = time.monotonic()
        second = pool.submit(one, "second")
        a, b = first.result(timeout=30), second.result(timeout=30)
    assert second_sent < finished["first"], "the second was sent while the first was in flight"
    assert b.headers["x-hybridgate-cache"] == "replay"
    assert b.parse().id == a.parse().id
    assert b.parse().choices[0].message == a.parse().choices[0].message
    assert env.upstream.outcomes() == ["ok"], "one upstream request for both"


def test_the_same_key_with_another_body_is_422_openai(env: Env) -> None:
    client, key = env.openai(), uuid.uuid4().hex
    _ask(client, fresh(), key)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        _ask(client, fresh(), key)
    body = caught.value.response.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "unprocessable_entity"
    assert body["error"]["param"] == "idempotency-key"
    assert "Idempotency-Key" in body["error"]["message"]
    with pytest.raises(openai.UnprocessableEntityError):
        _ask(client, fresh()[:1], key, temperature=0.1)  # any parameter counts
    assert len(env.upstream.log()) == 1


def test_an_idempotent_class_requires_a_key(env: Env) -> None:
    prompt = fresh()
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(env.openai("action"), prompt)
    body = caught.value.response.json()["error"]
    assert body["param"] == "idempotency-key"
    assert "Idempotency-Key" in body["message"]
    assert "'action'" in body["message"]
    with pytest.raises(anthropic.BadRequestError) as refused:
        env.anthropic("action").messages.create(model="solo", max_tokens=12, messages=prompt)
    assert refused.value.response.json()["error"]["type"] == "invalid_request_error"
    assert env.upstream.log() == [], "refused before anything ran"
    key = uuid.uuid4().hex
    first, again = _ask(env.openai("action"), prompt, key), _ask(env.openai("action"), prompt, key)
    assert again.headers["x-hybridgate-cache"] == "replay"
    assert again.parse().id == first.parse().id
    assert len(env.upstream.log()) == 1


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_an_idempotency_key_out_of_bounds_is_400(env: Env, key: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(env.openai(), fresh(), key)
    assert caught.value.response.json()["error"]["param"] == "idempotency-key"
    assert env.upstream.log() == []


def test_idempotency_key_with_the_anthropic_api(env: Env) -> None:
    client, key = env.anthropic(), uuid.uuid4().hex
    prompt = fresh()

    def ask(messages: list[Any]) -> Any:
        return client.messages.with_raw_response.create(
            model="solo", max_tokens=12, messages=messages, extra_headers={"Idempotency-Key": key}
        )

    first, again = ask(prompt), ask(prompt)
    assert again.headers["x-hybridgate-cache"] == "replay"
    one, two = first.parse(), again.parse()
    assert two.id == one.id
    assert two.id.startswith("msg_")
    assert two.content == one.content
    with pytest.raises(anthropic.UnprocessableEntityError) as caught:
        ask(fresh())
    body = caught.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "Idempotency-Key" in body["error"]["message"]
    assert len(env.upstream.log()) == 1


@pytest.mark.parametrize("first_streamed", [False, True], ids=["whole-then-stream", "stream-then-whole"])
def test_a_completed_key_replays_in_either_form(env: Env, first_streamed: bool) -> None:
    """The answer is the same whichever way it is asked for again: text, finish and id."""
    client, prompt, key = env.openai(), fresh(), uuid.uuid4().hex
    streamed_raw = None
    if first_streamed:
        streamed_raw = _ask(client, prompt, key, stream=True)
        text, ids, finish = _streamed_text(streamed_raw.parse())
        whole = _ask(client, prompt, key)
        assert whole.headers["x-hybridgate-cache"] == "replay"
    else:
        whole = _ask(client, prompt, key)
        streamed_raw = _ask(client, prompt, key, stream=True)
        assert streamed_raw.headers["x-hybridgate-cache"] == "replay"
        text, ids, finish = _streamed_text(streamed_raw.parse())
    answer = whole.parse()
    assert text
    assert text == answer.choices[0].message.content
    assert finish == answer.choices[0].finish_reason
    assert ids == {answer.id}, "one id, the first answer's"
    assert len(env.upstream.log()) == 1


@pytest.mark.parametrize(
    ("fault", "upstream"),
    [
        ({"kind": "server_error", "status": 503, "next": 2}, ["error", "error", "ok"]),
        ({"kind": "content_policy", "next": 1}, ["error", "ok"]),
    ],
    ids=["5xx-exhausted", "4xx-returned"],
)
def test_a_failed_first_attempt_frees_the_key(env: Env, fault: dict[str, Any], upstream: list[str]) -> None:
    env.upstream.reset(fault)
    client, prompt, key = env.openai(), fresh(), uuid.uuid4().hex
    with pytest.raises(openai.APIStatusError) as caught:
        _ask(client, prompt, key)
    assert caught.value.status_code in (400, 502)
    retried = _ask(client, prompt, key)
    assert "x-hybridgate-cache" not in retried.headers, "it ran again"
    assert env.upstream.outcomes() == upstream
    assert _ask(client, prompt, key).headers["x-hybridgate-cache"] == "replay", "and is remembered now"


def test_a_first_attempt_whose_client_went_away_frees_the_key(env: Env) -> None:
    """An agent times out and retries with the same key: the retry must run, not wait forever."""
    env.upstream.reset({"kind": "slow_first_token", "delay_s": 30, "next": 1})
    prompt, key = fresh(), uuid.uuid4().hex
    with pytest.raises(openai.APITimeoutError):
        _ask(env.openai(timeout=0.5), prompt, key)
    assert eventually(lambda: env.upstream.outcomes() == ["disconnected"], timeout=10), env.upstream.log()
    retried = _ask(env.openai(timeout=15), prompt, key)
    assert retried.http_response.status_code == 200
    assert env.upstream.outcomes() == ["disconnected", "ok"]


# ---------------------------------------------------------------------------- response cache


_CACHE_HITS_SERVED = (
    'hybridgate_requests_total{class="cached",deployment="s",model="solo",outcome="cache_hit",'
    'placement="cloud"}'
)


def test_an_identical_request_is_served_from_the_cache(env: Env) -> None:
    client, prompt = env.openai("cached"), fresh()
    first = _ask(client, prompt)
    hits_before = _metric(env, 'hybridgate_memory_total{result="cache_hit"}')
    served_before = _metric(env, _CACHE_HITS_SERVED)
    again = _ask(client, prompt)
    assert "x-hybridgate-cache" not in first.headers
    assert again.headers["x-hybridgate-cache"] == "hit"
    assert again.headers["x-hybridgate-deployment"] == "s"
    assert again.parse().id == first.parse().id
    assert again.parse().choices[0].message == first.parse().choices[0].message
    assert len(env.upstream.log()) == 1
    assert _metric(env, 'hybridgate_memory_total{result="cache_hit"}') == (hits_before or 0) + 1
    # Accounted like any request, with its own outcome.
    assert _metric(env, _CACHE_HITS_SERVED) == (served_before or 0) + 1


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.3},
        {"top_p": 0.5},
        {"max_tokens": 13},
        {"stop": ["zzz"]},
        {"seed": 5},
        {"model": "twin"},
        {"response_format": {"type": "json_object"}},
        {"messages": "another"},
        {"messages": "system"},
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
            ],
            "tool_choice": "none",
        },
    ],
    ids=lambda c: "+".join(c) if c.get("messages") is None else f"messages-{c['messages']}",
)
def test_any_difference_misses_the_cache(env: Env, change: dict[str, Any]) -> None:
    client, prompt = env.openai("cached"), fresh()
    base: dict[str, Any] = {"model": "solo", "messages": prompt, "max_tokens": 12}
    changed = {**base, **change}
    if change.get("messages") == "another":
        changed["messages"] = [{"role": "user", "content": prompt[0]["content"] + "!"}]
    elif change.get("messages") == "system":
        changed["messages"] = [{"role": "system", "content": "Be brief."}, *prompt]
    client.chat.completions.create(**base)
    raw = client.chat.completions.with_raw_response.create(**changed)
    assert "x-hybridgate-cache" not in raw.headers
    assert len(env.upstream.log()) == 2
    # Both are cached now, each under its own entry.
    assert client.chat.completions.with_raw_response.create(**changed).headers["x-hybridgate-cache"] == "hit"
    assert client.chat.completions.with_raw_response.create(**base).headers["x-hybridgate-cache"] == "hit"
    assert len(env.upstream.log()) == 2


def test_another_tenant_misses_the_cache(env: Env) -> None:
    prompt = fresh()
    _ask(env.openai("cached", key=KEY_A), prompt)
    other = _ask(env.openai("cached", key=KEY_B), prompt)
    assert "x-hybridgate-cache" not in other.headers, "one tenant never sees another's answers"
    assert _ask(env.openai("cached", key=KEY_B), prompt).headers["x-hybridgate-cache"] == "hit"
    assert len(env.upstream.log()) == 2


def test_a_class_without_cache_is_never_cached(env: Env) -> None:
    client, prompt = env.openai("default"), fresh()
    ids = {_ask(client, prompt).parse().id for _ in range(3)}
    assert len(ids) == 3
    assert len(env.upstream.log()) == 3
    # Nor does a cacheable class's entry answer it.
    _ask(env.openai("cached"), prompt)
    assert "x-hybridgate-cache" not in _ask(client, prompt).headers
    assert len(env.upstream.log()) == 5


def test_a_cache_hit_streams_as_valid_sse_in_both_formats(env: Env) -> None:
    prompt = fresh()
    first = env.openai("cached").chat.completions.create(model="solo", messages=prompt, max_tokens=12)
    raw = _ask(env.openai("cached"), prompt, stream=True, stream_options={"include_usage": True})
    assert raw.headers["x-hybridgate-cache"] == "hit"
    chunks = list(raw.parse())
    text, _, finish = _streamed_text(chunks)
    assert text == first.choices[0].message.content
    assert finish == first.choices[0].finish_reason
    assert chunks[-1].usage is not None
    assert first.usage is not None
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens
    # The same request in Anthropic's format is the same request: its answer, as Anthropic SSE.
    with env.anthropic("cached").messages.stream(model="solo", max_tokens=12, messages=prompt) as stream:
        anthropic_text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert anthropic_text == first.choices[0].message.content
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert len(env.upstream.log()) == 1


def test_a_streamed_answer_is_cached(env: Env) -> None:
    client, prompt = env.openai("cached"), fresh()
    text, ids, finish = _streamed_text(
        client.chat.completions.create(model="solo", messages=prompt, max_tokens=12, stream=True)
    )
    raw = _ask(client, prompt)
    assert raw.headers["x-hybridgate-cache"] == "hit"
    answer = raw.parse()
    assert answer.choices[0].message.content == text
    assert answer.choices[0].finish_reason == finish
    assert {answer.id} == ids
    assert len(env.upstream.log()) == 1


def test_a_key_first_answered_from_the_cache_is_remembered(env: Env) -> None:
    """A request with an Idempotency-Key answered by a cache hit settles its key (streamed too)."""
    client, prompt, key = env.openai("cached", timeout=10), fresh(), uuid.uuid4().hex
    _ask(client, prompt)
    streamed = _ask(client, prompt, key, stream=True)
    assert streamed.headers["x-hybridgate-cache"] == "hit"
    text, _, _ = _streamed_text(streamed.parse())
    again = _ask(client, prompt, key)
    assert again.headers["x-hybridgate-cache"] in ("replay", "hit")
    assert again.parse().choices[0].message.content == text
    assert len(env.upstream.log()) == 1


# ============================================================================ stale answers in an outage


@pytest.fixture(scope="module")
def stale_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Cache entries expire at once (a TTL of a microsecond) and stay usable as stale for an hour.

    Each test has a deployment of its own (``flaky``: its breaker opens on the second failure and
    stays open; ``down``: no breaker), and faults are injected per upstream model name.
    """
    procs: list[ManagedProcess] = []
    try:
        proc, url = start_sandbox("test-fast", seed=22)
        procs.append(proc)
        gateway, gateway_url = _gateway(
            tmp_path_factory.mktemp("stale"),
            f"""
version: 1
{AUTH}
classes:
  default: {{latency: {LONG}, placement: cloud-first, cache: true}}
resilience:
  retry: {{backoff_base_s: 0.01, backoff_max_s: 0.1, retry_budget_min: 1000}}
  cache: {{enabled: true, ttl_s: 0.000001, stale_ttl_s: 3600}}
deployments:
  flaky:
    type: openai
    base_url: {url}/v1
    model: sandbox-flaky
    region: us
    breaker: {{consecutive_failures: 2, open_s: 300, max_open_s: 300}}
  down:
    type: openai
    base_url: {url}/v1
    model: sandbox-down
    region: us
    breaker: {{consecutive_failures: 1000, min_requests: 1000}}
models:
  flaky: {{deployments: [flaky]}}
  down: {{deployments: [down]}}
""",
        )
        procs.append(gateway)
        yield Env(gateway_url, Upstream(url))
    finally:
        _stopping(procs)


def test_an_outage_is_bridged_with_a_stale_answer(stale_env: Env) -> None:
    env = stale_env
    env.upstream.reset()
    client, prompt = env.openai(), fresh()
    first = _ask(client, prompt, model="flaky")
    assert "x-hybridgate-cache" not in first.headers
    assert "x-hybridgate-cache" not in _ask(client, prompt, model="flaky").headers, "expired at once"
    env.upstream.reset({"kind": "server_error", "status": 503, "model": "sandbox-flaky"})
    # Every attempt fails; then the breaker opens and the planner has no route at all: either way
    # the expired answer is served, marked stale.
    reasons = []
    for _ in range(3):
        raw = _ask(client, prompt, model="flaky")
        assert raw.headers["x-hybridgate-cache"] == "stale"
        assert raw.parse().choices[0].message == first.parse().choices[0].message
        reasons.append(raw.headers["x-hybridgate-reason"])
    assert "answered from memory" not in reasons[0], "planned and tried: it failed"
    assert "circuit_open" in reasons[-1], "not even planned: no deployment was acceptable"
    flaky = env.get("/readyz").json()["deployments"]["flaky"]
    assert flaky["health"]["breaker"]["state"] == "open"
    assert flaky["state"] == "circuit_open"
    assert flaky["detail"].startswith("until "), flaky["detail"]
    assert env.upstream.outcomes() == ["error", "error"], "the open breaker kept requests off it"
    streamed = _ask(client, prompt, model="flaky", stream=True)
    assert streamed.headers["x-hybridgate-cache"] == "stale"
    assert _streamed_text(streamed.parse())[0] == first.parse().choices[0].message.content
    # A request never answered before has nothing to fall back on: a clean 503.
    with pytest.raises(openai.APIStatusError) as caught:
        _ask(client, fresh(), model="flaky")
    assert caught.value.status_code == 503
    assert caught.value.response.json()["error"]["code"] == "no_route_available"


def test_an_outage_without_a_cache_entry_is_a_clean_error_in_each_format(stale_env: Env) -> None:
    env = stale_env
    env.upstream.reset({"kind": "server_error", "status": 503, "model": "sandbox-down"})
    with pytest.raises(openai.APIStatusError) as caught:
        _ask(env.openai(), fresh(), model="down")
    assert caught.value.status_code == 502
    error = caught.value.response.json()["error"]
    assert (error["type"], error["code"]) == ("api_error", "no_route_available")
    assert "down" in error["message"]
    with pytest.raises(openai.APIStatusError) as caught:
        _ask(env.openai(), fresh(), model="down", stream=True)
    assert caught.value.status_code == 502
    assert caught.value.response.json()["error"]["code"] == "no_route_available"
    with pytest.raises(anthropic.APIStatusError) as anthropic_caught:
        env.anthropic().messages.create(model="down", max_tokens=12, messages=fresh())
    assert anthropic_caught.value.status_code == 502
    body = anthropic_caught.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert len(env.upstream.log()) == 6, "two attempts for each of the three requests"


# ============================================================================ offline mode


def test_offline_mode_serves_locally_and_comes_back(tmp_path: Path, models_dir: Path) -> None:
    """The cloud's port has nothing listening: connection failures take the gateway offline; a
    sandbox started on that port later is found by the probes, and the gateway is online again."""
    port = free_port()
    procs: list[ManagedProcess] = []
    try:
        gateway, url = _gateway(
            tmp_path,
            f"""
version: 1
{AUTH}
classes:
  default: {{latency: {LONG}, placement: cloud-first}}
resilience:
  retry: {{backoff_base_s: 0.01, backoff_max_s: 0.1, retry_budget_min: 1000}}
  offline: {{after_failures: 3}}
deployments:
  cloud:
    type: openai
    base_url: http://127.0.0.1:{port}/v1
    model: sandbox-test
    region: us
    timeouts: {{connect: 1, first_token: 10, idle: 5, total: 20}}
    breaker: {{consecutive_failures: 1000, min_requests: 1000}}
    probe: {{interval_s: 0.1}}  # cloud probes run only while offline
  local:
    type: llamacpp
    model_path: {models_dir / "tiny.gguf"}
    context_window: 2048
    n_threads: 1
models:
  m: {{deployments: [cloud, local]}}
""",
        )
        procs.append(gateway)
        env = Env(url, Upstream(f"http://127.0.0.1:{port}"))
        client = env.openai()
        assert env.get("/readyz").json()["offline"] == {"offline": False, "since": None, "reason": ""}
        assert _metric(env, "hybridgate_offline") == 0
        served = []
        for _ in range(3):  # two connection failures per request (one retry), three take it offline
            raw = client.chat.completions.with_raw_response.create(model="m", messages=fresh(), max_tokens=4)
            served.append(raw.headers["x-hybridgate-deployment"])
            if env.get("/readyz").json()["offline"]["offline"]:
                break
        assert set(served) == {"local"}, "each failed over to the local deployment"
        ready = env.get("/readyz")
        assert ready.status_code == 200
        offline = ready.json()["offline"]
        assert offline["offline"] is True
        assert isinstance(offline["since"], float)
        assert "connection failures" in offline["reason"]
        assert _metric(env, "hybridgate_offline") == 1
        raw = client.chat.completions.with_raw_response.create(model="m", messages=fresh(), max_tokens=4)
        assert raw.headers["x-hybridgate-deployment"] == "local"
        assert raw.headers["x-hybridgate-route"] == "local", "the cloud is not even tried"
        assert raw.headers["x-hybridgate-attempts"] == "1"
        assert "offline" in raw.headers["x-hybridgate-reason"]
        # The uplink comes back: the probes notice, and the cloud is preferred again.
        sandbox, _ = start_sandbox("test-fast", seed=23, port=port)
        procs.append(sandbox)
        assert eventually(lambda: not env.get("/readyz").json()["offline"]["offline"], timeout=20)
        assert _metric(env, "hybridgate_offline") == 0
        raw = client.chat.completions.with_raw_response.create(model="m", messages=fresh(), max_tokens=4)
        assert raw.headers["x-hybridgate-deployment"] == "cloud"
        assert env.upstream.outcomes() == ["ok"]
        assert "offline" not in raw.headers["x-hybridgate-reason"]
    finally:
        _stopping(procs)


# ============================================================================ priority admission


def test_a_higher_priority_request_takes_the_queued_place(tmp_path: Path, models_dir: Path) -> None:
    """One slot, a queue of one: a running background answer, a queued background request, then
    an interactive one. The queued background request fails at once (429 with Retry-After: there
    is no other deployment), the interactive one runs next."""
    procs: list[ManagedProcess] = []
    try:
        gateway, url = _gateway(
            tmp_path,
            f"""
version: 1
{AUTH}
classes:
  background: {{priority: 10, latency: {LONG}, placement: local-only}}
  interactive: {{priority: 90, latency: {LONG}, placement: local-only}}
deployments:
  local:
    type: llamacpp
    model_path: {models_dir / "tiny.gguf"}
    context_window: 2048
    n_threads: 1
    max_queue: 1
    probe: {{enabled: false}}  # a probe would take a queue place of its own
models:
  tiny: {{deployments: [local]}}
""",
        )
        procs.append(gateway)
        env = Env(url, Upstream(""))  # no upstream: local only

        def runtime() -> dict[str, Any]:
            described: dict[str, Any] = env.get("/readyz").json()["deployments"]["local"]["runtime"]
            return described

        def call(cls: str) -> Callable[[], Any]:
            return lambda: env.openai(cls).chat.completions.with_raw_response.create(
                model="tiny", messages=fresh(), max_tokens=4
            )

        # About three seconds of generation for one thread: it holds the slot while the rest queue.
        running = env.openai("background").chat.completions.create(
            model="tiny", messages=fresh(), max_tokens=1900, stream=True
        )
        with running, ThreadPoolExecutor(2) as pool:
            next(iter(running))
            queued: Future[Any] = pool.submit(call("background"))
            assert eventually(lambda: runtime()["queued"] == 1, timeout=10), runtime()
            urgent: Future[Any] = pool.submit(call("interactive"))
            with pytest.raises(openai.RateLimitError) as caught:
                queued.result(timeout=10)
            state = runtime()
            assert (state["in_flight"], state["queued"]) == (1, 1), "the first still runs, urgent waits"
            assert not urgent.done()
            running.close()  # the slot frees at once; the interactive request runs
            served = urgent.result(timeout=30)
        assert served.http_response.status_code == 200
        assert served.headers["x-hybridgate-class"] == "interactive"
        error = caught.value
        assert int(error.response.headers["retry-after"]) >= 1
        assert error.response.json()["error"]["code"] == "rate_limit_exceeded"
        assert "overloaded" in error.response.json()["error"]["message"]
    finally:
        _stopping(procs)

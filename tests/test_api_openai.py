"""The official ``openai`` SDK against a real gateway process.

Upstreams are real: llama.cpp's own HTTP server (through the ``openai`` adapter) and the
in-process llama.cpp worker. Nothing here is mocked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from tests.support.processes import ManagedProcess, free_port, start_gateway, start_llama_server

WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Berlin"]}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def tool_llama_server(models_dir: Path) -> Iterator[str]:
    """llama.cpp's server with a function-calling chat format (grammar-constrained tool calls)."""
    proc, base = start_llama_server(
        models_dir / "tiny.gguf", extra_args=["--chat_format", "chatml-function-calling"]
    )
    try:
        yield base
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    models_dir: Path,
    llama_server: tuple[ManagedProcess, str],
    tool_llama_server: str,
) -> Iterator[tuple[ManagedProcess, str]]:
    _, server_url = llama_server
    config = tmp_path_factory.mktemp("gw") / "gateway.yaml"
    config.write_text(
        f"""
version: 1
server:
  auth: {{disabled: true}}
  max_body_bytes: 65536
deployments:
  llama-server:
    type: openai
    base_url: {server_url}/v1
    model: tiny
    placement: local
    context_window: 2048
  llama-server-tools:
    type: openai
    base_url: {tool_llama_server}/v1
    model: tiny
    placement: local
    context_window: 2048
  nowhere:
    type: openai
    base_url: http://127.0.0.1:{free_port()}/v1
    model: nothing
    placement: local
    timeouts: {{connect: 1, first_token: 2, idle: 2, total: 5}}
  local-tiny:
    type: llamacpp
    model_path: {models_dir / "tiny.gguf"}
    context_window: 2048
  local-embed:
    type: llamacpp
    model_path: {models_dir / "minilm-embed.gguf"}
    embeddings: true
    context_window: 512
models:
  server:
    deployments: [llama-server]
  tools:
    deployments: [llama-server-tools]
  failover:
    deployments: [nowhere, llama-server]
  down:
    deployments: [nowhere]
  local:
    deployments: [local-tiny]
  embed:
    deployments: [local-embed]
"""
    )
    proc, base = start_gateway(config)
    try:
        yield proc, base
    finally:
        proc.stop()


@pytest.fixture
def client(gateway: tuple[ManagedProcess, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway[1]}/v1", api_key="sk-test", max_retries=0, timeout=60)


@pytest.mark.parametrize("model", ["server", "local"])
def test_chat_completion(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=8, temperature=0
    )
    assert reply.model == model
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.parametrize("model", ["server", "local"])
def test_streaming_with_usage(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish: list[str] = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert len(pieces) >= 2, "tokens arrive as separate chunks"
    assert finish in (["length"], ["stop"])
    assert usage is not None
    assert usage.completion_tokens > 0


def test_stream_without_usage_option_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="server", messages=[{"role": "user", "content": "x"}], max_tokens=4, stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason is not None


def test_tool_call_passes_through(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tools",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls
    call = message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Berlin")
    # The tool result goes back with the same id; the upstream accepts the conversation.
    follow = client.chat.completions.create(
        model="server",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
        ],
        max_tokens=6,
    )
    assert follow.choices[0].message.content


def test_failover_to_next_deployment(client: openai.OpenAI, gateway: tuple[ManagedProcess, str]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="failover", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert raw.headers["x-hybridgate-deployment"] == "llama-server"
    # a refused connection is tried once more (it may have been a blip), then the next deployment
    assert raw.headers["x-hybridgate-attempts"] == "3"
    assert raw.parse().choices[0].message.content


def test_all_deployments_down_is_502_in_openai_format(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="down", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert info.value.status_code == 502
    body = info.value.response.json()
    assert body["error"]["code"] == "no_route_available"
    assert "nowhere" in body["error"]["message"]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "hi"}])
    assert info.value.response.json()["error"]["param"] == "model"


def test_bad_parameter_is_400_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="server", messages=[{"role": "user", "content": "hi"}], temperature=7
        )
    error = info.value.response.json()["error"]
    assert error["param"] == "temperature"
    assert error["type"] == "invalid_request_error"


def test_models_list(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"server", "local", "embed", "failover"} <= set(models)
    local = models["local"].model_dump()
    assert local["context_window"] == 2048
    assert local["placement"] == ["local"]
    assert local["capabilities"]["streaming"] is True
    assert models["embed"].model_dump()["capabilities"]["embeddings"] is True


def test_embeddings_semantic(client: openai.OpenAI) -> None:
    result = client.embeddings.create(
        model="embed",
        input=[
            "A cat sits on the mat",
            "A kitten is sitting on a rug",
            "Quarterly revenue grew by five percent",
        ],
    )
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 3
    assert all(len(v) == 384 for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
    assert result.usage.prompt_tokens > 0


def test_embeddings_float_format(gateway: tuple[ManagedProcess, str]) -> None:
    response = httpx.post(
        f"{gateway[1]}/v1/embeddings", json={"model": "embed", "input": "hello"}, timeout=30
    )
    assert response.status_code == 200
    assert len(response.json()["data"][0]["embedding"]) == 384


def test_embeddings_on_chat_model_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="server", input="x")


def test_health_and_readiness(gateway: tuple[ManagedProcess, str]) -> None:
    base = gateway[1]
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz")
    detail = ready.json()
    assert detail["deployments"]["llama-server"]["state"] == "ready"
    assert detail["deployments"]["local-tiny"]["state"] == "ready"
    runtime = detail["deployments"]["local-tiny"]["runtime"]  # cold start measured and reported
    assert runtime["load_time_s"] > 0
    assert runtime["state"] == "ready"
    assert ready.status_code == 200

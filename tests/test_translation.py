"""Format translation end to end, with the official SDKs and real servers only.

Two gateways are chained so that every hop is a real protocol implementation:

    openai SDK ──► gateway A ──(anthropic adapter)──► gateway B /v1/messages
                                                   ──(openai adapter)──► llama.cpp server

The llama.cpp server runs a function-calling chat format, so tool calls are real
(grammar-constrained) and carry llama.cpp's own distinctive ids: seeing such an id arrive intact
at the client proves ids survive OpenAI → Anthropic → OpenAI translation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from anthropic.types import ToolParam
from openai.types.chat import ChatCompletionFunctionToolParam

from tests.support.processes import ManagedProcess, start_gateway, start_llama_server

SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Berlin"]}},
    "required": ["city"],
}
OPENAI_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather for a city", "parameters": SCHEMA},
}
ANTHROPIC_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": SCHEMA,
}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[str, str]]:
    """(gateway A base URL, gateway B base URL)."""
    llama, llama_url = start_llama_server(
        models_dir / "tiny.gguf", extra_args=["--chat_format", "chatml-function-calling"]
    )
    procs: list[ManagedProcess] = [llama]
    try:
        conf_dir = tmp_path_factory.mktemp("chain")
        b_conf = conf_dir / "b.yaml"
        b_conf.write_text(
            f"""
version: 1
server: {{auth: {{disabled: true}}}}
deployments:
  llama:
    type: openai
    base_url: {llama_url}/v1
    model: tiny
    placement: local
    context_window: 2048
models:
  tiny:
    deployments: [llama]
"""
        )
        gw_b, b_url = start_gateway(b_conf)
        procs.append(gw_b)
        a_conf = conf_dir / "a.yaml"
        a_conf.write_text(
            f"""
version: 1
server: {{auth: {{disabled: true}}}}
deployments:
  via-anthropic:
    type: anthropic
    base_url: {b_url}
    api_key: sk-ant-not-checked
    model: tiny
    region: eu
    context_window: 2048
models:
  remote:
    deployments: [via-anthropic]
"""
        )
        gw_a, a_url = start_gateway(a_conf)
        procs.append(gw_a)
        yield a_url, b_url
    finally:
        for proc in reversed(procs):
            proc.stop()


def _is_llama_call_id(call_id: str) -> bool:
    return call_id.startswith("call__0_get_weather_")


def test_openai_client_through_anthropic_backend_preserves_tool_ids(chain: tuple[str, str]) -> None:
    client = openai.OpenAI(base_url=f"{chain[0]}/v1", api_key="x", max_retries=0, timeout=60)
    reply = client.chat.completions.create(
        model="remote",
        messages=[
            {"role": "system", "content": "You call tools."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
        tools=[OPENAI_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert _is_llama_call_id(call.id), call.id
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Berlin")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0

    follow = client.chat.completions.create(
        model="remote",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
        ],
        max_tokens=5,
    )
    assert follow.choices[0].message.content


def test_openai_streaming_tool_call_through_anthropic_backend(chain: tuple[str, str]) -> None:
    client = openai.OpenAI(base_url=f"{chain[0]}/v1", api_key="x", max_retries=0, timeout=60)
    stream = client.chat.completions.create(
        model="remote",
        messages=[{"role": "user", "content": "Weather in Berlin?"}],
        tools=[OPENAI_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    ids: list[str] = []
    names: list[str] = []
    arguments = ""
    finish: str | None = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                if delta.id:
                    ids.append(delta.id)
                if delta.function and delta.function.name:
                    names.append(delta.function.name)
                if delta.function and delta.function.arguments:
                    arguments += delta.function.arguments
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert names == ["get_weather"]
    assert len(ids) == 1
    assert _is_llama_call_id(ids[0])
    assert json.loads(arguments)["city"] in ("Paris", "Berlin")


def test_anthropic_client_through_openai_backend(chain: tuple[str, str]) -> None:
    client = anthropic.Anthropic(base_url=chain[1], api_key="x", max_retries=0, timeout=60)
    message = client.messages.create(
        model="tiny",
        max_tokens=40,
        system="You call tools.",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[ANTHROPIC_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert message.stop_reason == "tool_use"
    blocks = [b for b in message.content if b.type == "tool_use"]
    assert len(blocks) == 1
    tool_use = blocks[0]
    assert _is_llama_call_id(tool_use.id)
    assert isinstance(tool_use.input, dict)
    assert tool_use.input["city"] in ("Paris", "Berlin")
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0

    reply = client.messages.create(
        model="tiny",
        max_tokens=5,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": tool_use.id, "name": "get_weather", "input": tool_use.input}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}],
            },
        ],
    )
    assert reply.content[0].type == "text"
    assert reply.content[0].text


def test_anthropic_streaming_text(chain: tuple[str, str]) -> None:
    client = anthropic.Anthropic(base_url=chain[1], api_key="x", max_retries=0, timeout=60)
    with client.messages.stream(
        model="tiny", max_tokens=10, messages=[{"role": "user", "content": "Tell me a story"}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) >= 2
    assert final.stop_reason in ("max_tokens", "end_turn")
    assert final.usage.output_tokens > 0
    block = final.content[0]
    assert block.type == "text"
    assert "".join(texts) == block.text


def test_anthropic_streaming_through_both_translations(chain: tuple[str, str]) -> None:
    # openai SDK (stream) -> A -> anthropic adapter (stream) -> B -> openai adapter (stream) -> llama
    client = openai.OpenAI(base_url=f"{chain[0]}/v1", api_key="x", max_retries=0, timeout=60)
    chunks = list(
        client.chat.completions.create(
            model="remote",
            messages=[{"role": "user", "content": "Count to ten"}],
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert text
    assert usage
    assert usage[0].completion_tokens > 0

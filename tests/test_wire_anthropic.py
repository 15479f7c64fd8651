"""The Anthropic Messages codec, both directions, checked against the official ``anthropic`` SDK.

The SDK runs against an in-memory transport (``httpx2.MockTransport``): it builds real request
bodies for our parser and parses our bytes with its own stream accumulator, with no network.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgate.errors import (
    BackendOverloaded,
    InvalidRequest,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
)
from hybridgate.types import (
    Completion,
    FinishReason,
    InferenceRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from hybridgate.wire import anthropic as wire
from hybridgate.wire import openai as oai

# --------------------------------------------------------------------------- helpers

Handler = Callable[[httpx2.Request], httpx2.Response]


def sdk_client(handler: Handler) -> anthropic.Anthropic:
    """The official client, talking to ``handler`` instead of the network."""
    transport = httpx2.MockTransport(handler)
    return anthropic.Anthropic(
        api_key="sk-test", base_url="http://gateway.test", http_client=httpx2.Client(transport=transport)
    )


def sse_response(data: bytes) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=data)

    return handler


def parse_sse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data object) pairs of an SSE byte stream."""
    out: list[tuple[str, dict[str, Any]]] = []
    for frame in data.decode().split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.split("\n"))
        out.append((fields["event"], orjson.loads(fields["data"])))
    return out


def encode_all(events: Iterable[StreamEvent], *, msg_id: str = "msg_1", model: str = "claude-test") -> bytes:
    enc = wire.EventEncoder(msg_id, model)
    return b"".join(enc.encode(e) for e in events)


def decode_all(data: bytes) -> tuple[list[StreamEvent], StreamEnd, wire.EventDecoder]:
    dec = wire.EventDecoder("up")
    events = [ev for _, obj in parse_sse(data) for ev in dec.feed(obj)]
    return events, dec.end(), dec


def accumulate(events: Sequence[StreamEvent]) -> tuple[str, list[ToolCall]]:
    """Text and tool calls of a normalised stream, the way a client would assemble them."""
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            entry = calls.setdefault(e.index, ["", "", ""])
            entry[0] = e.id or entry[0]
            entry[1] = e.name or entry[1]
            entry[2] += e.arguments
    return text, [ToolCall(*calls[i]) for i in sorted(calls)]


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude-test",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
    base.update(overrides)
    return base


WEATHER_TOOL = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}

# --------------------------------------------------------------------------- server side: parsing


def test_parse_lifts_system_and_keeps_unknown_params_in_extra() -> None:
    req = wire.parse_messages_request(
        body(
            system=[{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}],
            top_k=5,
            thinking={"type": "enabled", "budget_tokens": 1024},
            metadata={"user_id": "u-1", "tenant": "acme"},
            stop_sequences=["END"],
            temperature=0.5,
        )
    )
    assert req.source_format == "anthropic"
    assert [m.role for m in req.messages] == ["system", "user"]
    assert req.messages[0].content == (TextPart("be brief"), TextPart("be kind"))
    assert req.extra == {"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert req.user == "u-1"
    assert req.metadata == {"user_id": "u-1", "tenant": "acme"}
    assert req.stop == ("END",)
    assert req.temperature == 0.5
    assert req.max_tokens == 64
    assert req.include_usage


def test_tool_results_become_tool_messages_in_order() -> None:
    req = wire.parse_messages_request(
        body(
            messages=[
                {"role": "user", "content": "weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_a",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "call_b",
                            "name": "get_weather",
                            "input": {"city": "Rome"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_b",
                            "is_error": True,
                            "content": [{"type": "text", "text": "no"}, {"type": "text", "text": "data"}],
                        },
                        {"type": "text", "text": "and tomorrow?"},
                    ],
                },
            ]
        )
    )
    roles = [m.role for m in req.messages]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    assistant = req.messages[1]
    assert assistant.text == "Checking."  # the thinking block is dropped
    assert [(c.id, c.name, orjson.loads(c.arguments)) for c in assistant.tool_calls] == [
        ("toolu_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_weather", {"city": "Rome"}),
    ]
    first, second = req.messages[2], req.messages[3]
    assert (first.tool_call_id, first.text, first.is_error) == ("toolu_a", "sunny", False)
    assert (second.tool_call_id, second.text, second.is_error) == ("call_b", "no\ndata", True)
    assert req.messages[4].text == "and tomorrow?"


def test_images_by_base64_and_url() -> None:
    req = wire.parse_messages_request(
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                        {"type": "text", "text": "what are these?"},
                    ],
                }
            ]
        )
    )
    b64, url, _ = req.messages[0].content
    assert (getattr(b64, "data", None), getattr(b64, "media_type", None)) == ("AAAA", "image/png")
    assert getattr(url, "url", None) == "https://example.com/cat.jpg"


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, ToolChoice("auto"), None),
        ({"type": "any"}, ToolChoice("required"), None),
        ({"type": "none"}, ToolChoice("none"), None),
        ({"type": "tool", "name": "get_weather"}, ToolChoice("required", "get_weather"), None),
        ({"type": "auto", "disable_parallel_tool_use": True}, ToolChoice("auto"), False),
        ({"type": "any", "disable_parallel_tool_use": False}, ToolChoice("required"), True),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: ToolChoice, parallel: bool | None) -> None:
    req = wire.parse_messages_request(body(tools=[WEATHER_TOOL], tool_choice=choice))
    assert req.tools == (Tool("get_weather", "Weather", {"type": "object"}),)
    assert req.tool_choice == expected
    assert req.parallel_tool_calls is parallel


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        (
            {"messages": [{"role": "system", "content": "x"}]},
            "messages[0].role",
        ),  # tag error: "...using 'role'..."
        ({"temperature": 1.5}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"messages": [{"role": "user", "content": [{"type": "document"}]}]}, "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
            "messages[0].content[0].tool_use_id",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}
                ]
            },
            "messages[0].content[0].id",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "f", "input": {}}]}
                ]
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/bmp", "data": "A"},
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].source.media_type",
        ),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"tools": [{"name": "bad name", "input_schema": {}}]}, "tools[0].name"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool", "name": "other"}}, "tool_choice.name"),
    ],
)
def test_invalid_bodies_name_the_field(overrides: dict[str, Any], param: str) -> None:
    bad = {k: v for k, v in body(**overrides).items() if v is not None}
    with pytest.raises(InvalidRequest) as info:
        wire.parse_messages_request(bad)
    assert info.value.param == param
    assert info.value.message.startswith(param.split(".")[0].split("[")[0])


def test_parses_what_the_official_sdk_sends() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(orjson.loads(request.content))
        completion = Completion(id="x", model="m", text="ok", usage=Usage(3, 1))
        return httpx2.Response(200, json=wire.render_message(completion, "claude-test"))

    client = sdk_client(handler)
    message = client.messages.create(
        model="claude-test",
        max_tokens=32,
        system="be brief",
        extra_body={"top_k": 3},
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "cold"}],
            },
        ],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    assert message.content[0].type == "text"
    assert message.usage.input_tokens == 3
    req = wire.parse_messages_request(sent[0])
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool"]
    assert req.messages[2].tool_calls[0].id == "toolu_1"
    assert req.messages[3].tool_call_id == "toolu_1"
    assert req.extra == {"top_k": 3}
    assert req.parallel_tool_calls is False


# --------------------------------------------------------------------------- server side: rendering


@pytest.mark.parametrize(
    ("finish", "has_tools", "stop_reason"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("content_filter", False, "refusal"),
        ("error", False, "end_turn"),
        ("stop", True, "tool_use"),  # some OpenAI-compatible servers say "stop" after a tool call
        ("tool_calls", False, "end_turn"),  # no tool_use block to run: do not claim one
        ("length", True, "max_tokens"),
    ],
)
def test_render_message_stop_reason(finish: FinishReason, has_tools: bool, stop_reason: str) -> None:
    calls = (ToolCall("call_1", "f", "{}"),) if has_tools else ()
    out = wire.render_message(
        Completion(id="chatcmpl-9", model="m", text="t", tool_calls=calls, finish_reason=finish), "c"
    )
    assert out["stop_reason"] == stop_reason


def test_render_message_shape_and_sdk_parse() -> None:
    completion = Completion(
        id="chatcmpl-9",
        model="upstream",
        text="Let me look.",
        tool_calls=(ToolCall("call_abc", "get_weather", '{"city": "Paris"}'),),
        finish_reason="tool_calls",
        usage=Usage(prompt_tokens=100, completion_tokens=7, cached_prompt_tokens=60),
    )
    out = wire.render_message(completion, "claude-test")
    assert out["id"] == "msg_chatcmpl-9"
    assert out["model"] == "claude-test"
    assert out["usage"] == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }
    message = sdk_client(lambda r: httpx2.Response(200, json=out)).messages.create(
        model="claude-test", max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
    assert message.stop_reason == "tool_use"
    text, tool = message.content
    assert text.type == "text"
    assert text.text == "Let me look."
    assert tool.type == "tool_use"
    assert tool.id == "call_abc"
    assert tool.input == {"city": "Paris"}


def test_render_error() -> None:
    err = InvalidRequest("max_tokens: Field required", param="max_tokens")
    assert wire.render_error(err) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    assert wire.render_error(BackendOverloaded("busy"))["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ("", {}),
        ("  ", {}),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ('{"a": ', {"_raw_arguments": '{"a": '}),  # truncated by max_tokens
        ("[1, 2]", {"_raw_arguments": "[1, 2]"}),  # valid JSON, but not an object
    ],
)
def test_tool_input(arguments: str, expected: dict[str, Any]) -> None:
    assert wire.tool_input(arguments) == expected


# --------------------------------------------------------------------------- client side: rendering


def _req(*messages: Message, **kw: Any) -> InferenceRequest:
    return InferenceRequest(model="m", messages=messages, **kw)


def test_render_request_lifts_system_and_merges_turns() -> None:
    req = _req(
        Message.of_text("system", "rule one"),
        Message.of_text("user", "a"),
        Message.of_text("user", "b"),
        Message(
            role="assistant",
            content=(TextPart("calling"),),
            tool_calls=(ToolCall("call_1", "f", '{"x": 1}'), ToolCall("call_2", "g", "not json")),
        ),
        Message(role="tool", tool_call_id="call_1", content=(TextPart("r1"),)),
        Message(role="tool", tool_call_id="call_2", content=(TextPart("r2"),), is_error=True),
        Message.of_text("user", "thanks"),
        Message.of_text("system", "rule two"),
    )
    out = wire.render_messages_request(req, "claude-up", stream=False, default_max_tokens=99)
    assert out["model"] == "claude-up"
    assert out["max_tokens"] == 99
    assert out["system"] == [{"type": "text", "text": "rule one"}, {"type": "text", "text": "rule two"}]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "call_2", "name": "g", "input": {"_raw_arguments": "not json"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "r1"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "r2", "is_error": True},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    assert "stream" not in out


def test_render_request_parameters() -> None:
    req = _req(
        Message.of_text("user", "hi"),
        temperature=1.7,
        top_p=0.9,
        stop=("END", "STOP"),
        tools=(Tool("f", "does f", {"type": "object", "properties": {}}), Tool("g")),
        tool_choice=ToolChoice("required"),
        parallel_tool_calls=False,
        response_format={"type": "json_object"},
        user="u-7",
        max_tokens=12,
    )
    out = wire.render_messages_request(req, "up", stream=True, default_max_tokens=99)
    assert out["temperature"] == 1.0  # the Messages API caps temperature at 1
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END", "STOP"]
    assert out["tools"] == [
        {"name": "f", "input_schema": {"type": "object", "properties": {}}, "description": "does f"},
        {"name": "g", "input_schema": {"type": "object"}},
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["metadata"] == {"user_id": "u-7"}
    assert out["max_tokens"] == 12
    assert out["stream"] is True
    assert "system" not in out
    assert "response_format" not in out


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("none"), False, {"type": "none"}),
        (ToolChoice("required", "f"), True, {"type": "tool", "name": "f"}),
    ],
)
def test_render_tool_choice(
    choice: ToolChoice | None, parallel: bool | None, expected: dict[str, Any] | None
) -> None:
    req = _req(
        Message.of_text("user", "hi"), tools=(Tool("f"),), tool_choice=choice, parallel_tool_calls=parallel
    )
    out = wire.render_messages_request(req, "up", stream=False, default_max_tokens=8)
    assert out.get("tool_choice") == expected


def test_extras_pass_through_only_from_anthropic_clients() -> None:
    extra = {"top_k": 4, "thinking": {"type": "enabled", "budget_tokens": 2000}, "stream": True}
    anthropic_req = _req(Message.of_text("user", "hi"), source_format="anthropic", extra=extra)
    out = wire.render_messages_request(anthropic_req, "up", stream=False, default_max_tokens=8)
    assert out["top_k"] == 4
    assert "thinking" not in out  # thinking blocks cannot travel back through the normalised types
    assert "stream" not in out
    openai_req = _req(Message.of_text("user", "hi"), source_format="openai", extra={"seed": 1, "top_k": 4})
    out = wire.render_messages_request(openai_req, "up", stream=False, default_max_tokens=8)
    assert "seed" not in out
    assert "top_k" not in out


def test_final_assistant_prefill_loses_trailing_whitespace() -> None:
    req = _req(Message.of_text("user", "count"), Message.of_text("assistant", "1, 2, "))
    out = wire.render_messages_request(req, "up", stream=False, default_max_tokens=8)
    assert out["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "1, 2,"}]}
    blank = _req(Message.of_text("user", "count"), Message.of_text("assistant", " \n"))
    out = wire.render_messages_request(blank, "up", stream=False, default_max_tokens=8)
    assert [t["role"] for t in out["messages"]] == ["user"]


def test_render_images() -> None:
    req = oai.parse_chat_request(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                }
            ],
        }
    )
    out = wire.render_messages_request(req, "up", stream=False, default_max_tokens=8)
    assert out["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
    ]


def test_tool_ids_survive_openai_to_anthropic_and_back() -> None:
    """OpenAI client -> normalised -> Anthropic upstream body -> (Anthropic server) -> OpenAI again."""
    openai_body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"Oslo"}'},
                    },
                    {
                        "id": "call_def",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": "cold"},
            {"role": "tool", "tool_call_id": "call_def", "content": "warm"},
        ],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
    }
    normalised = oai.parse_chat_request(openai_body)
    anthropic_body = wire.render_messages_request(normalised, "up", stream=False, default_max_tokens=8)
    again = wire.parse_messages_request(anthropic_body)
    back = oai.render_chat_request(again, "m", stream=False)
    assert back["messages"][0] == {"role": "system", "content": "sys"}
    assert [t["id"] for t in back["messages"][2]["tool_calls"]] == ["call_abc", "call_def"]
    assert [m["tool_call_id"] for m in back["messages"][3:]] == ["call_abc", "call_def"]
    assert [orjson.loads(t["function"]["arguments"]) for t in back["messages"][2]["tool_calls"]] == [
        {"c": "Oslo"},
        {"c": "Rome"},
    ]


def test_tool_ids_survive_in_answers() -> None:
    upstream = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": [{"type": "tool_use", "id": "toolu_01X", "name": "w", "input": {"c": "Oslo"}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }
    completion = wire.parse_message(upstream, "up")
    as_openai = oai.render_completion(completion, "m")
    assert as_openai["choices"][0]["message"]["tool_calls"][0]["id"] == "toolu_01X"
    assert as_openai["choices"][0]["finish_reason"] == "tool_calls"
    openai_answer = oai.parse_completion(as_openai, "x")
    assert wire.render_message(openai_answer, "c")["content"][0]["id"] == "toolu_01X"


# --------------------------------------------------------------------------- client side: parsing


def test_parse_message() -> None:
    completion = wire.parse_message(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-up",
            "content": [
                {"type": "thinking", "thinking": "...", "signature": "s"},
                {"type": "text", "text": "Hello "},
                {"type": "text", "text": "there"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,
                "output_tokens": 4,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 5,
            },
        },
        "up",
    )
    assert completion.id == "msg_01"
    assert completion.model == "claude-up"
    assert completion.text == "Hello there"
    assert completion.tool_calls == (ToolCall("toolu_1", "f", '{"a":1}'),)
    assert completion.finish_reason == "tool_calls"
    assert completion.usage == Usage(prompt_tokens=115, completion_tokens=4, cached_prompt_tokens=100)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_parse_stop_reasons(stop_reason: str, finish: FinishReason) -> None:
    msg = {"id": "msg_1", "content": [], "stop_reason": stop_reason, "usage": {}}
    assert wire.parse_message(msg, "up").finish_reason == finish


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"content": "text"},
        {"content": [{"type": "text"}]},
        {"content": [{"type": "text", "text": 3}]},
    ],
)
def test_parse_message_malformed(bad: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        wire.parse_message(bad, "up")


# --------------------------------------------------------------------------- streaming

TEXT_AND_TOOLS: list[StreamEvent] = [
    TextDelta("Let me "),
    TextDelta("check."),
    ToolCallDelta(0, id="call_abc", name="get_weather", arguments=""),
    ToolCallDelta(0, arguments='{"city": '),
    ToolCallDelta(0, arguments='"Paris"}'),
    ToolCallDelta(1, id="toolu_2", name="get_time", arguments="{}"),
    StreamEnd("tool_calls", Usage(prompt_tokens=50, completion_tokens=20, cached_prompt_tokens=10)),
]


def test_stream_event_sequence() -> None:
    frames = parse_sse(encode_all(TEXT_AND_TOOLS))
    names = [name for name, _ in frames]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(obj["type"] == name for name, obj in frames)
    starts = [obj for name, obj in frames if name == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [
        (0, "text"),
        (1, "tool_use"),
        (2, "tool_use"),
    ]
    assert starts[1]["content_block"] == {
        "type": "tool_use",
        "id": "call_abc",
        "name": "get_weather",
        "input": {},
    }
    delta = frames[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["input_tokens"] == 40
    assert delta["usage"]["cache_read_input_tokens"] == 10


def test_stream_round_trips_through_our_decoder() -> None:
    events, end, dec = decode_all(encode_all(TEXT_AND_TOOLS))
    text, calls = accumulate(events)
    assert text == "Let me check."
    assert calls == [
        ToolCall("call_abc", "get_weather", '{"city": "Paris"}'),
        ToolCall("toolu_2", "get_time", "{}"),
    ]
    assert end == StreamEnd("tool_calls", Usage(50, 20, 10))
    assert dec.stopped


def test_stream_accumulated_by_the_official_sdk() -> None:
    client = sdk_client(sse_response(encode_all(TEXT_AND_TOOLS)))
    with client.messages.stream(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "x"}]
    ) as s:
        text = "".join(s.text_stream)
        message = s.get_final_message()
    assert text == "Let me check."
    assert message.id == "msg_1"
    assert message.stop_reason == "tool_use"
    kinds = [(b.type, getattr(b, "id", None), getattr(b, "input", None)) for b in message.content]
    assert kinds == [
        ("text", None, None),
        ("tool_use", "call_abc", {"city": "Paris"}),
        ("tool_use", "toolu_2", {}),
    ]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (40, 20)
    assert message.usage.cache_read_input_tokens == 10


def test_stream_error_event_is_raised_by_the_official_sdk() -> None:
    enc = wire.EventEncoder("msg_1", "claude-test")
    data = enc.encode(TextDelta("partial")) + enc.error(BackendOverloaded("all backends busy"))
    client = sdk_client(sse_response(data))
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded_error"),
        client.messages.stream(
            model="claude-test", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        ) as s,
    ):
        s.get_final_message()


def test_empty_answer_stream() -> None:
    enc = wire.EventEncoder("msg_1", "c", input_tokens=12)
    data = enc.start() + enc.encode(TextDelta("")) + enc.encode(StreamEnd("stop", Usage(12, 0)))
    frames = parse_sse(data)
    assert [n for n, _ in frames] == ["message_start", "ping", "message_delta", "message_stop"]
    assert frames[0][1]["message"]["usage"]["input_tokens"] == 12
    message = sdk_client(sse_response(data)).messages.stream(
        model="c", max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
    with message as s:
        assert s.get_final_message().content == []


def test_text_after_tool_call_opens_a_new_block() -> None:
    events: list[StreamEvent] = [
        ToolCallDelta(0, id="call_1", name="f", arguments="{}"),
        TextDelta("done"),
        StreamEnd("stop", Usage()),
    ]
    frames = parse_sse(encode_all(events))
    starts = [(o["index"], o["content_block"]["type"]) for n, o in frames if n == "content_block_start"]
    assert starts == [(0, "tool_use"), (1, "text")]
    assert frames[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_interleaved_tool_call_pieces_cannot_be_encoded() -> None:
    enc = wire.EventEncoder("msg_1", "c")
    enc.encode(ToolCallDelta(0, id="a", name="f", arguments="{"))
    enc.encode(ToolCallDelta(1, id="b", name="g", arguments="{"))
    with pytest.raises(UpstreamProtocolError):
        enc.encode(ToolCallDelta(0, arguments="}"))


def test_decoder_on_a_real_api_transcript() -> None:
    """Shapes as the API sends them: thinking before text, pings, tool_use at block index 2."""
    frames: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-up",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 472, "cache_read_input_tokens": 28, "output_tokens": 2},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "x"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "ping"},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Okay"}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_01T", "name": "get_weather", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"loc'},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '":"SF"}'},
        },
        {"type": "content_block_stop", "index": 2},
        {"type": "some_future_event", "index": 9},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
        {"type": "message_stop"},
    ]
    dec = wire.EventDecoder("up")
    events = [e for f in frames for e in dec.feed(f)]
    assert events == [
        TextDelta("Okay"),
        ToolCallDelta(0, id="toolu_01T", name="get_weather", arguments=""),
        ToolCallDelta(0, arguments='{"loc'),
        ToolCallDelta(0, arguments='":"SF"}'),
    ]
    assert dec.stopped
    assert dec.end() == StreamEnd(
        "tool_calls", Usage(prompt_tokens=500, completion_tokens=89, cached_prompt_tokens=28)
    )


def test_decoder_usage_without_stop_reason_is_not_finished() -> None:
    dec = wire.EventDecoder("up")
    dec.feed({"type": "message_start", "message": {"usage": {"input_tokens": 3}}})
    dec.feed({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    assert dec.feed({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}})
    assert dec.finish_reason is None
    assert not dec.stopped


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("overloaded_error", UpstreamServerError),
        ("api_error", UpstreamServerError),
        ("rate_limit_error", UpstreamRateLimited),
        ("invalid_request_error", UpstreamProtocolError),
    ],
)
def test_decoder_error_event(error_type: str, expected: type[Exception]) -> None:
    dec = wire.EventDecoder("up")
    with pytest.raises(expected, match="Overloaded"):
        dec.feed({"type": "error", "error": {"type": error_type, "message": "Overloaded"}})


@pytest.mark.parametrize(
    "event",
    [
        "not an object",
        {"no": "type"},
        {"type": "content_block_delta", "index": 5, "delta": {"type": "text_delta", "text": "x"}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{"},
        },
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "name": "f"}},
        {"type": "message_start"},
    ],
)
def test_decoder_malformed(event: Any) -> None:
    dec = wire.EventDecoder("up")
    dec.feed({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    with pytest.raises(UpstreamProtocolError):
        dec.feed(event)


# --------------------------------------------------------------------------- properties

_text = st.text(min_size=1, max_size=12)
_json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
_args = st.dictionaries(st.text(min_size=1, max_size=6), _json_scalars, max_size=3)
_tool_id = st.from_regex(r"(call_|toolu_)[A-Za-z0-9]{1,12}", fullmatch=True)


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points) if b > a]


@st.composite
def answer_streams(draw: st.DrawFn) -> tuple[list[StreamEvent], str, list[ToolCall]]:
    """A streamed answer: text runs and tool calls in any order, split into random pieces."""
    events: list[StreamEvent] = []
    text, calls = "", list[ToolCall]()
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            run = draw(_text)
            text += run
            events.extend(TextDelta(p) for p in _split(run, draw(st.lists(st.integers(0, 50), max_size=4))))
        else:
            call = ToolCall(draw(_tool_id), draw(st.from_regex(r"[a-z_]{1,10}", fullmatch=True)), "")
            arguments = orjson.dumps(draw(_args)).decode()
            pieces = _split(arguments, draw(st.lists(st.integers(0, 50), max_size=4)))
            index = len(calls)
            calls.append(ToolCall(call.id, call.name, arguments))
            events.append(ToolCallDelta(index, id=call.id, name=call.name, arguments=pieces[0]))
            events.extend(ToolCallDelta(index, arguments=p) for p in pieces[1:])
    usage = Usage(draw(st.integers(0, 10**6)), draw(st.integers(0, 10**5)), 0)
    events.append(StreamEnd(draw(st.sampled_from(["stop", "length", "tool_calls"])), usage))
    return events, text, calls


@settings(max_examples=150, deadline=None)
@given(answer_streams())
def test_property_stream_round_trip(case: tuple[list[StreamEvent], str, list[ToolCall]]) -> None:
    events, text, calls = case
    data = encode_all(events)
    decoded, end, _ = decode_all(data)
    got_text, got_calls = accumulate(decoded)
    assert got_text == text
    assert got_calls == calls
    last = events[-1]
    assert isinstance(last, StreamEnd)
    assert end.usage == last.usage
    expected = "length" if last.finish_reason == "length" else ("tool_calls" if calls else "stop")
    assert end.finish_reason == expected
    # the official accumulator agrees
    client = sdk_client(sse_response(data))
    with client.messages.stream(model="c", max_tokens=8, messages=[{"role": "user", "content": "x"}]) as s:
        message = s.get_final_message()
    sdk_text = "".join(b.text for b in message.content if b.type == "text")
    sdk_calls = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert sdk_text == text
    assert sdk_calls == [(c.id, c.name, orjson.loads(c.arguments)) for c in calls]


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    """System, then user/assistant exchanges where assistant tool calls are answered by tool results."""
    messages = [Message.of_text("system", draw(_text))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 4))):
        messages.append(Message.of_text("user", draw(_text)))
        ids = draw(st.lists(_tool_id, max_size=3, unique=True))
        calls = tuple(ToolCall(i, "tool", orjson.dumps(draw(_args)).decode()) for i in ids)
        reply = draw(st.text(max_size=10))
        messages.append(
            Message(role="assistant", content=(TextPart(reply),) if reply else (), tool_calls=calls)
        )
        messages.extend(Message(role="tool", content=(TextPart(draw(_text)),), tool_call_id=i) for i in ids)
    messages.append(Message.of_text("user", draw(_text)))
    return messages


def _canonical(messages: Iterable[Message]) -> list[tuple[Any, ...]]:
    """What must survive a round trip: every text, call (id, name, arguments as JSON) and result."""
    out: list[tuple[Any, ...]] = []
    for m in messages:
        out.extend((m.role, p.text) for p in m.content if isinstance(p, TextPart) and p.text)
        out.extend(("call", c.id, c.name, orjson.loads(c.arguments)) for c in m.tool_calls)
        if m.role == "tool":
            out.append(("result", m.tool_call_id))
    return out


@settings(max_examples=150, deadline=None)
@given(conversations())
def test_property_request_round_trip(messages: list[Message]) -> None:
    req = InferenceRequest(model="m", messages=tuple(messages), tools=(Tool("tool"),))
    rendered = wire.render_messages_request(req, "up", stream=False, default_max_tokens=16)
    roles = [t["role"] for t in rendered["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles)), "same-role turns must be merged"
    parsed = wire.parse_messages_request(rendered)
    assert _canonical(parsed.messages) == _canonical(messages)

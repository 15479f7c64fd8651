"""The OpenAI chat-completions codec, both directions, checked against the official ``openai`` SDK.

The SDK runs against an in-memory transport (``httpx2.MockTransport``): it builds real request
bodies for our parser and parses our bytes with its own stream handling, with no network.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx2
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgate.errors import InvalidRequest, RateLimited, UnsupportedFeature, UpstreamProtocolError
from hybridgate.types import (
    Completion,
    ImagePart,
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
from hybridgate.wire import openai as wire

Handler = Callable[[httpx2.Request], httpx2.Response]


def sdk_client(handler: Handler) -> openai.OpenAI:
    """The official client, talking to ``handler`` instead of the network."""
    transport = httpx2.MockTransport(handler)
    return openai.OpenAI(
        api_key="sk-test", base_url="http://gateway.test/v1", http_client=httpx2.Client(transport=transport)
    )


def sse_response(data: bytes) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=data)

    return handler


def data_lines(data: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE byte stream."""
    return [frame.removeprefix("data: ") for frame in data.decode().split("\n\n") if frame]


def encode_all(events: Iterable[StreamEvent], *, include_usage: bool = True) -> bytes:
    enc = wire.ChunkEncoder("chatcmpl-1", "gpt-test", include_usage=include_usage, created=1700000000)
    return b"".join(enc.encode(e) for e in events)


def decode_all(data: bytes) -> tuple[list[StreamEvent], StreamEnd]:
    dec = wire.ChunkDecoder("up")
    events: list[StreamEvent] = []
    for line in data_lines(data):
        if line == "[DONE]":
            break
        events.extend(dec.feed(orjson.loads(line)))
    return events, dec.end()


def accumulate(events: Sequence[StreamEvent]) -> tuple[str, list[ToolCall]]:
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
    base: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    base.update(overrides)
    return base


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}

# --------------------------------------------------------------------------- server side: parsing


def test_parse_conversation() -> None:
    req = wire.parse_chat_request(
        body(
            messages=[
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/x.jpg"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
            ],
            tools=[{"type": "function", "function": {"name": "get_weather"}}],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=10,
            max_completion_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
            seed=7,
            user="u-1",
        )
    )
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool"]
    assert req.messages[1].content == (
        TextPart("what is this?"),
        ImagePart(data="AAAA", media_type="image/png"),
        ImagePart(url="https://example.com/x.jpg"),
    )
    assert req.messages[2].tool_calls == (ToolCall("call_1", "get_weather", "{}"),)
    assert (req.messages[3].tool_call_id, req.messages[3].text) == ("call_1", "sunny")
    assert req.tools == (Tool("get_weather", None, {"type": "object", "properties": {}}),)
    assert req.tool_choice == ToolChoice("required", "get_weather")
    assert req.max_tokens == 20  # max_completion_tokens wins
    assert req.stream
    assert req.include_usage
    assert req.extra == {"seed": 7}
    assert req.user == "u-1"
    assert req.source_format == "openai"


@pytest.mark.parametrize(
    ("overrides", "error", "param"),
    [
        ({"n": 2}, UnsupportedFeature, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, InvalidRequest, "stop"),
        ({"model": ""}, InvalidRequest, "model"),
        ({"messages": []}, InvalidRequest, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, InvalidRequest, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, InvalidRequest, "messages[0].tool_call_id"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            InvalidRequest,
            "messages[0].content[0].text",
        ),
        ({"temperature": 3}, InvalidRequest, "temperature"),
        ({"max_tokens": 0}, InvalidRequest, "max_tokens"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            InvalidRequest,
            "tools[0].function.name",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, InvalidRequest, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
            InvalidRequest,
            "tool_choice",
        ),
        ({"response_format": {"type": "yaml"}}, InvalidRequest, "response_format.type"),
    ],
)
def test_invalid_bodies_name_the_field(
    overrides: dict[str, Any], error: type[InvalidRequest], param: str
) -> None:
    with pytest.raises(error) as info:
        wire.parse_chat_request(body(**overrides))
    assert info.value.param == param
    assert type(info.value) is error


def test_parses_what_the_official_sdk_sends() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(orjson.loads(request.content))
        return httpx2.Response(
            200, json=wire.render_completion(Completion(id="c", model="m", text="ok"), "gpt-test")
        )

    client = sdk_client(handler)
    client.chat.completions.create(
        model="gpt-test",
        messages=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "cold"},
        ],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        tool_choice="auto",
        stop=["END"],
        seed=3,
    )
    req = wire.parse_chat_request(sent[0])
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool"]
    assert req.messages[2].tool_calls[0].id == "call_9"
    assert req.tool_choice == ToolChoice("auto")
    assert req.stop == ("END",)
    assert req.extra == {"seed": 3}


# --------------------------------------------------------------------------- server side: rendering


def test_render_completion_parsed_by_the_official_sdk() -> None:
    completion = Completion(
        id="chatcmpl-1",
        model="upstream",
        text="",
        tool_calls=(ToolCall("toolu_01", "get_weather", '{"city":"Oslo"}'),),
        finish_reason="tool_calls",
        usage=Usage(prompt_tokens=30, completion_tokens=5, cached_prompt_tokens=20),
        created=1700000000,
    )
    out = wire.render_completion(completion, "gpt-test")
    result = sdk_client(lambda r: httpx2.Response(200, json=out)).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "x"}]
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls if c.type == "function"] == [
        ("toolu_01", "get_weather", '{"city":"Oslo"}')
    ]
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        30,
        5,
        35,
    )
    assert result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 20
    assert result.model == "gpt-test"


def test_render_error() -> None:
    err = InvalidRequest("temperature: too hot", param="temperature")
    assert wire.render_error(err) == {
        "error": {
            "message": "temperature: too hot",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_request",
        }
    }
    assert wire.render_error(RateLimited("slow down"))["error"]["type"] == "rate_limit_error"


STREAM: list[StreamEvent] = [
    TextDelta("Checking "),
    TextDelta("now."),
    ToolCallDelta(0, id="call_a", name="get_weather", arguments=""),
    ToolCallDelta(0, arguments='{"city":'),
    ToolCallDelta(0, arguments='"Oslo"}'),
    ToolCallDelta(1, id="call_b", name="get_time", arguments="{}"),
    StreamEnd("tool_calls", Usage(prompt_tokens=12, completion_tokens=9, cached_prompt_tokens=4)),
]


def test_chunk_shapes() -> None:
    chunks = [orjson.loads(line) for line in data_lines(encode_all(STREAM)) if line != "[DONE]"]
    assert data_lines(encode_all(STREAM))[-1] == "[DONE]"
    assert all(c["id"] == "chatcmpl-1" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[3]["tool_calls"] == [
        {"index": 0, "id": "call_a", "type": "function", "function": {"arguments": "", "name": "get_weather"}}
    ]
    assert deltas[4]["tool_calls"] == [{"index": 0, "function": {"arguments": '{"city":'}}]
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["tool_calls"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}


def test_no_usage_chunk_unless_asked() -> None:
    lines = data_lines(encode_all([TextDelta("a"), StreamEnd("stop", Usage(1, 1))], include_usage=False))
    assert lines[-1] == "[DONE]"
    assert all("usage" not in orjson.loads(line) for line in lines[:-1])


def test_stream_accumulated_by_the_official_sdk() -> None:
    client = sdk_client(sse_response(encode_all(STREAM)))
    with client.chat.completions.stream(model="gpt-test", messages=[{"role": "user", "content": "x"}]) as s:
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.message.content == "Checking now."
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, c.function.parsed_arguments) for c in calls] == [
        ("call_a", "get_weather", None),
        ("call_b", "get_time", None),
    ]
    assert [c.function.arguments for c in calls] == ['{"city":"Oslo"}', "{}"]
    assert final.usage is not None
    assert final.usage.total_tokens == 21


def test_raw_chunks_parsed_by_the_official_sdk() -> None:
    client = sdk_client(sse_response(encode_all(STREAM)))
    chunks = list(
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Checking now."
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 12


def test_stream_error_is_raised_by_the_official_sdk() -> None:
    enc = wire.ChunkEncoder("chatcmpl-1", "gpt-test", include_usage=False)
    data = enc.encode(TextDelta("partial")) + enc.error(RateLimited("slow down"))
    client = sdk_client(sse_response(data))
    stream = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="slow down"):
        list(stream)


# --------------------------------------------------------------------------- client side


def test_render_chat_request() -> None:
    req = InferenceRequest(
        model="m",
        messages=(
            Message.of_text("system", "sys"),
            Message(role="user", content=(TextPart("see"), ImagePart(data="QUJD", media_type="image/jpeg"))),
            Message(role="assistant", tool_calls=(ToolCall("toolu_1", "f", '{"a":1}'),)),
            Message(role="tool", tool_call_id="toolu_1", content=(TextPart("r"),)),
        ),
        max_tokens=5,
        stop=("END",),
        tools=(Tool("f", None, {"type": "object"}),),
        tool_choice=ToolChoice("required", "f"),
        parallel_tool_calls=False,
        response_format={"type": "json_object"},
        source_format="openai",
        extra={"seed": 1},
    )
    out = wire.render_chat_request(req, "gpt-up", stream=True)
    assert out["model"] == "gpt-up"
    assert out["seed"] == 1
    assert out["messages"] == [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
            ],
        },
        {
            "role": "assistant",
            "content": "",  # not null: several compatible servers reject null
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ],
        },
        {"role": "tool", "content": "r", "tool_call_id": "toolu_1"},
    ]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["parallel_tool_calls"] is False
    assert out["response_format"] == {"type": "json_object"}
    assert out["stream_options"] == {"include_usage": True}
    assert out["stop"] == ["END"]


def test_extras_pass_through_only_from_openai_clients() -> None:
    req = InferenceRequest(
        model="m", messages=(Message.of_text("user", "x"),), source_format="anthropic", extra={"top_k": 3}
    )
    out = wire.render_chat_request(req, "up", stream=False)
    assert "top_k" not in out
    assert "stream" not in out


def test_parse_completion() -> None:
    completion = wire.parse_completion(
        {
            "id": "chatcmpl-7",
            "model": "gpt-up",
            "created": 1700000000,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": [{"type": "text", "text": "he"}, {"text": "llo"}],
                    },
                    "finish_reason": "length",
                }
            ],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 5},
            },
        },
        "up",
    )
    assert (completion.id, completion.model, completion.text) == ("chatcmpl-7", "gpt-up", "hello")
    assert completion.finish_reason == "length"
    assert completion.usage == Usage(9, 2, 5)


@pytest.mark.parametrize("bad", [None, {}, {"choices": []}, {"choices": [{"message": None}]}])
def test_parse_completion_malformed(bad: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        wire.parse_completion(bad, "up")


def test_chunk_decoder_reads_our_stream_and_its_usage_chunk() -> None:
    events, end = decode_all(encode_all(STREAM))
    text, calls = accumulate(events)
    assert text == "Checking now."
    assert calls == [
        ToolCall("call_a", "get_weather", '{"city":"Oslo"}'),
        ToolCall("call_b", "get_time", "{}"),
    ]
    assert end == StreamEnd("tool_calls", Usage(12, 9, 4))


def test_chunk_decoder_without_usage_counts_chunks() -> None:
    events, end = decode_all(
        encode_all([TextDelta("a"), TextDelta("b"), StreamEnd("stop", Usage())], include_usage=False)
    )
    assert len(events) == 2
    assert end == StreamEnd("stop", Usage(completion_tokens=2))


@pytest.mark.parametrize(
    "chunk",
    [
        "text",
        {"object": "chat.completion.chunk"},
        {"error": {"message": "boom"}},
        {"choices": [None]},
        {"choices": [{"delta": {"tool_calls": [None]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": "first"}]}}]},
        {"choices": [], "usage": {"prompt_tokens": "many"}},
    ],
)
def test_chunk_decoder_malformed(chunk: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        wire.ChunkDecoder("up").feed(chunk)


# --------------------------------------------------------------------------- properties

_args = st.dictionaries(
    st.text(min_size=1, max_size=6), st.integers(-(2**53), 2**53) | st.text(max_size=6), max_size=3
)


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points) if b > a]


@st.composite
def answer_streams(draw: st.DrawFn) -> tuple[list[StreamEvent], str, list[ToolCall]]:
    text = draw(st.text(max_size=30))
    events: list[StreamEvent] = [
        TextDelta(p) for p in _split(text, draw(st.lists(st.integers(0, 40), max_size=5)))
    ]
    calls: list[ToolCall] = []
    for index in range(draw(st.integers(0, 3))):
        call_id = draw(st.from_regex(r"call_[A-Za-z0-9]{1,10}", fullmatch=True))
        arguments = orjson.dumps(draw(_args)).decode()
        pieces = _split(arguments, draw(st.lists(st.integers(0, 40), max_size=4)))
        calls.append(ToolCall(call_id, f"tool{index}", arguments))
        events.append(ToolCallDelta(index, id=call_id, name=f"tool{index}", arguments=pieces[0]))
        events.extend(ToolCallDelta(index, arguments=p) for p in pieces[1:])
    events.append(
        StreamEnd(
            "tool_calls" if calls else "stop", Usage(draw(st.integers(0, 999)), draw(st.integers(0, 999)))
        )
    )
    return events, text, calls


@settings(max_examples=100, deadline=None)
@given(answer_streams())
def test_property_stream_round_trip(case: tuple[list[StreamEvent], str, list[ToolCall]]) -> None:
    events, text, calls = case
    data = encode_all(events)
    decoded, end = decode_all(data)
    assert accumulate(decoded) == (text, calls)
    assert end == events[-1]
    client = sdk_client(sse_response(data))
    with client.chat.completions.stream(model="gpt-test", messages=[{"role": "user", "content": "x"}]) as s:
        final = s.get_final_completion()
    message = final.choices[0].message
    assert (message.content or "") == text
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        (c.id, c.name, c.arguments) for c in calls
    ]

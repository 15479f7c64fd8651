"""The Anthropic adapter against a fake Messages server on loopback (aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from hybridgate.backends.anthropic import AnthropicBackend, create
from hybridgate.backends.registry import BackendContext
from hybridgate.config.schema import AnthropicDeployment
from hybridgate.errors import (
    BackendOverloaded,
    UnsupportedFeature,
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamContextLength,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from hybridgate.types import (
    EmbeddingRequest,
    InferenceRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Timeouts,
    ToolCallDelta,
    Usage,
)
from hybridgate.wire import anthropic as wire

KEY = "sk-ant-secret-key-123456"
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQ = InferenceRequest(model="claude", messages=(Message.of_text("user", "hi"),))
FAST = Timeouts(connect=1, first_token=2, idle=2, total=5)


@contextlib.asynccontextmanager
async def backend_for(route: Route, seen: list[web.Request] | None = None) -> AsyncIterator[AnthropicBackend]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if seen is not None:
            seen.append(request)
        return await route(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    config = AnthropicDeployment(
        type="anthropic",
        base_url=f"http://127.0.0.1:{port}",
        api_key=KEY,
        model="claude-up",
        default_max_tokens=77,
    )
    backend = create("anth", config, BackendContext())
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
        await runner.cleanup()


def sse_route(*chunks: bytes, delay: float = 0.0) -> Route:
    async def route(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        if delay:
            await asyncio.sleep(delay)
        for chunk in chunks:
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    return route


def json_route(status: int, payload: Any, headers: dict[str, str] | None = None) -> Route:
    async def route(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response(payload, status=status, headers=headers)

    return route


ANSWER: list[StreamEvent] = [
    TextDelta("Hi "),
    TextDelta("there"),
    ToolCallDelta(0, id="toolu_1", name="f", arguments='{"a":'),
    ToolCallDelta(0, arguments="1}"),
    StreamEnd("tool_calls", Usage(10, 4, 0)),
]


def encoded(events: list[StreamEvent]) -> bytes:
    enc = wire.EventEncoder("msg_1", "claude-up")
    return b"".join(enc.encode(e) for e in events)


async def collect(backend: AnthropicBackend) -> list[StreamEvent]:
    return [e async for e in backend.stream(REQ, FAST)]


async def test_complete_sends_headers_and_default_max_tokens() -> None:
    seen: list[web.Request] = []
    message = {
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": [{"type": "text", "text": "hello"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    async with backend_for(json_route(200, message), seen) as backend:
        completion = await backend.complete(REQ, FAST)
        assert completion.text == "hello"
        assert completion.usage == Usage(3, 1, 0)
        request = seen[0]
        assert request.path == "/v1/messages"
        assert request.headers["x-api-key"] == KEY
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert backend.capabilities.assistant_prefill
        assert backend.capabilities.placement == "cloud"


async def test_stream_in_small_pieces() -> None:
    data = encoded(ANSWER)
    pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
    async with backend_for(sse_route(*pieces)) as backend:
        events = await collect(backend)
        assert events[-1] == StreamEnd("tool_calls", Usage(10, 4, 0))
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hi there"
        assert "".join(e.arguments for e in events if isinstance(e, ToolCallDelta)) == '{"a":1}'


async def test_stream_without_message_stop_is_finalised() -> None:
    data = encoded(ANSWER).removesuffix(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    async with backend_for(sse_route(data)) as backend:
        events = await collect(backend)
        assert isinstance(events[-1], StreamEnd)
        assert backend.stats.streams_without_stop == 1


async def test_stream_cut_before_stop_reason_raises() -> None:
    data = encoded(ANSWER[:2])  # no StreamEnd: message_delta never sent
    async with backend_for(sse_route(data)) as backend:
        with pytest.raises(UpstreamConnectionError):
            await collect(backend)


async def test_error_event_mid_stream() -> None:
    enc = wire.EventEncoder("msg_1", "c")
    data = enc.encode(TextDelta("x")) + enc.error(BackendOverloaded("Overloaded"))
    async with backend_for(sse_route(data)) as backend:
        with pytest.raises(UpstreamServerError, match="Overloaded"):
            await collect(backend)


async def test_malformed_event_is_a_protocol_error() -> None:
    data = encoded(ANSWER[:1]) + b"event: content_block_delta\ndata: {not json\n\n"
    async with backend_for(sse_route(data)) as backend:
        with pytest.raises(UpstreamProtocolError):
            await collect(backend)


async def test_first_token_deadline() -> None:
    async with backend_for(sse_route(encoded(ANSWER), delay=1.0)) as backend:
        with pytest.raises(UpstreamTimeout):
            [e async for e in backend.stream(REQ, Timeouts(connect=1, first_token=0.2, idle=5, total=5))]


@pytest.mark.parametrize(
    ("status", "payload", "headers", "error"),
    [
        (
            429,
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
            {"retry-after": "7"},
            UpstreamRateLimited,
        ),
        (
            401,
            {"type": "error", "error": {"type": "authentication_error", "message": f"bad key {KEY}"}},
            None,
            UpstreamAuthError,
        ),
        (
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 300000 tokens > 200000 maximum",
                },
            },
            None,
            UpstreamContextLength,
        ),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            None,
            UpstreamServerError,
        ),
    ],
)
async def test_http_errors(
    status: int, payload: Any, headers: dict[str, str] | None, error: type[UpstreamError]
) -> None:
    async with backend_for(json_route(status, payload, headers)) as backend:
        with pytest.raises(error) as info:
            await backend.complete(REQ, FAST)
        assert KEY not in str(info.value)
        if status == 429:
            assert info.value.retry_after == 7
        with pytest.raises(error):
            await collect(backend)


async def test_probe_and_embed() -> None:
    seen: list[web.Request] = []
    async with backend_for(json_route(200, {"data": []}), seen) as backend:
        result = await backend.probe()
        assert result.ok
        assert seen[0].method == "GET"
        assert seen[0].path == "/v1/models"
        with pytest.raises(UnsupportedFeature):
            await backend.embed(EmbeddingRequest(model="m", inputs=("x",)), FAST)
    async with backend_for(json_route(401, {})) as backend:
        result = await backend.probe()
        assert not result.ok
        assert result.detail == "status 401"


async def test_early_close_releases_the_connection() -> None:
    async with backend_for(sse_route(encoded(ANSWER), delay=0.0)) as backend:
        stream = backend.stream(REQ, FAST)
        assert isinstance(stream, AsyncGenerator)  # Backend.stream is typed AsyncIterator
        first = await stream.__anext__()
        assert first == TextDelta("Hi ")
        await stream.aclose()
        # the backend still works afterwards
        assert (await collect(backend))[-1] == StreamEnd("tool_calls", Usage(10, 4, 0))

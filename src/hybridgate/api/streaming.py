"""Relaying a stream to the client, in any wire format.

The HTTP status is committed only once the first event has arrived (the executor fails over
before that), so an upstream that fails early still yields a proper error status. After that an
error ends the stream with the format's explicit error event: a truncated answer is never
presented as a success. If the client goes away, the upstream stream is closed at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import anyio
from starlette.responses import StreamingResponse

from hybridgate.errors import HybridgateError
from hybridgate.execution.executor import OpenStream
from hybridgate.types import StreamEvent


class EventEncoder(Protocol):
    def encode(self, event: StreamEvent) -> bytes: ...

    def error(self, err: HybridgateError) -> bytes: ...


SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def _relay(stream: OpenStream, encoder: EventEncoder) -> AsyncIterator[bytes]:
    try:
        async for event in stream:
            yield encoder.encode(event)
    except HybridgateError as err:
        yield encoder.error(err)
    finally:
        # Shielded: on client disconnect this generator is being cancelled, and the upstream
        # must still be told to stop (closing the connection / freeing the local slot).
        with anyio.CancelScope(shield=True), contextlib.suppress(HybridgateError):
            await stream.aclose()


def sse_response(stream: OpenStream, encoder: EventEncoder, headers: Mapping[str, str]) -> StreamingResponse:
    return StreamingResponse(
        _relay(stream, encoder), media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
    )

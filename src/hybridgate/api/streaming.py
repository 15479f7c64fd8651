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

from hybridgate.api.asgi import EventStreamResponse
from hybridgate.errors import HybridgateError
from hybridgate.types import StreamEvent


class EventEncoder(Protocol):
    def encode(self, event: StreamEvent) -> bytes: ...

    def error(self, err: HybridgateError) -> bytes: ...


async def _relay(stream: AsyncIterator[StreamEvent], encoder: EventEncoder) -> AsyncIterator[bytes]:
    try:
        async for event in stream:
            yield encoder.encode(event)
    except HybridgateError as err:
        yield encoder.error(err)
    finally:
        # Runs on client disconnect too (the response cancels its producer): the upstream must be
        # told to stop at once, closing its connection or freeing the local slot.
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(HybridgateError):
                await aclose()


def sse_response(
    stream: AsyncIterator[StreamEvent], encoder: EventEncoder, headers: Mapping[str, str]
) -> EventStreamResponse:
    return EventStreamResponse(_relay(stream, encoder), headers)

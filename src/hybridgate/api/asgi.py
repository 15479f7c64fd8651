"""The few ASGI pieces the gateway needs: a request, two kinds of response, a router.

Why not Starlette: its routing and middleware stack cost about 75 µs of CPU per request on
this project's machines (uvicorn + Starlette 182 µs vs uvicorn + a plain ASGI callable 106 µs,
same hello-world handler, measured side by side), a sizeable share of a gateway whose budget
is well under a millisecond. The gateway has six routes and two response kinds, so the
replacement is small: exact-path routing, a body reader with a size limit, a JSON response,
and a streaming response that watches for the client going away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson

from hybridgate.errors import ClientDisconnected, InvalidRequest, PayloadTooLarge
from hybridgate.policy.context import ANONYMOUS, ClientIdentity

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

_JSON = (b"content-type", b"application/json")
_SSE = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def encode_headers(headers: Mapping[str, str] | None) -> RawHeaders:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]


class Request:
    """An HTTP request: method, path, headers, and its body read on demand."""

    __slots__ = ("_receive", "arrived", "headers", "identity", "method", "path", "scope")

    def __init__(self, scope: Scope, receive: Receive, arrived: float = 0.0) -> None:
        self.scope = scope
        self._receive = receive
        self.arrived = arrived  # monotonic time the request reached the gateway
        self.identity: ClientIdentity = ANONYMOUS  # set by authentication
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        # ASGI servers give lower-cased names; the last of a repeated header wins.
        self.headers: dict[str, str] = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))

    async def body(self, max_bytes: int) -> bytes:
        """The whole body; 413 if it exceeds ``max_bytes`` (by its Content-Length or as read)."""
        declared = self.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise InvalidRequest("invalid Content-Length header") from None
            if size > max_bytes:
                raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {max_bytes} bytes")
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequest("client disconnected while sending the body")
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def wait_disconnect(self) -> None:
        """Return once the client has gone away (call only after the body was read)."""
        while (await self._receive())["type"] != "http.disconnect":
            pass


async def _cancel_when_gone(request: Request, task: asyncio.Task[Any]) -> None:
    await request.wait_disconnect()
    task.cancel()


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` (after the body was read), cancelling it at once if the client goes away:
    upstream connections are closed and local slots freed instead of finishing for nobody."""
    current = asyncio.current_task()
    assert current is not None
    watcher = asyncio.ensure_future(_cancel_when_gone(request, current))
    try:
        return await work
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            current.uncancel()
            raise ClientDisconnected("the client closed the connection; its request was cancelled") from None
        raise
    finally:
        watcher.cancel()


class Response:
    """A complete response."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, status: int = 200, headers: RawHeaders | None = None) -> None:
        self.body = body
        self.status = status
        self.headers = headers or []

    async def __call__(self, request: Request, send: Send) -> None:
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class JSONResponse(Response):
    __slots__ = ()

    def __init__(self, content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(orjson.dumps(content), status, [_JSON, *encode_headers(headers)])


class EventStreamResponse:
    """``text/event-stream`` from an async iterator of byte chunks.

    Three tasks cooperate: the producer iterates the chunks (the upstream and the translation),
    the writer sends what the producer has queued, and a watcher notices the client going away,
    which cancels the producer so its ``finally`` blocks release upstream resources at once.

    Coalescing: the writer runs only when the producer waits for the network, so all the events
    that arrived in one upstream read leave in one write (one ASGI send instead of one per
    token). The first chunk is flushed on its own so that time to first token never waits for
    the rest of a read.
    """

    __slots__ = ("_done", "_failed", "_pending", "_ready", "chunks", "headers")

    def __init__(self, chunks: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.chunks = chunks
        self.headers = [*_SSE, *encode_headers(headers)]
        self._pending: list[bytes] = []
        self._ready = asyncio.Event()
        self._done = False
        self._failed = False

    async def __call__(self, request: Request, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        producer = asyncio.create_task(self._produce())
        writer = asyncio.create_task(self._write(send))
        watcher = asyncio.create_task(request.wait_disconnect())
        try:
            await asyncio.wait((writer, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (producer, writer, watcher):
                task.cancel()
            for task in (producer, writer, watcher):
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task

    async def _produce(self) -> None:
        first = True
        try:
            async for chunk in self.chunks:
                self._pending.append(chunk)
                self._ready.set()
                if first:
                    first = False
                    await asyncio.sleep(0)  # let the writer send the first chunk right away
        except BaseException:
            self._failed = True  # the response must not end as if complete
            raise
        finally:
            self._done = True
            self._ready.set()
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _write(self, send: Send) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            if self._pending:
                body = b"".join(self._pending)
                self._pending.clear()
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if self._done and not self._pending:
                break
        if not self._failed:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


Handler = Callable[[Request], Awaitable[Response | EventStreamResponse]]

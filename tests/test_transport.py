"""The upstream HTTP/1.1 transport against real loopback servers (plain TCP and TLS)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from hybridgate.backends.http import SSEParser
from hybridgate.backends.transport import HTTPTransport, ProtocolError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[Server, str]]]]:
    servers: list[Server] = []

    async def start(handler: Handler) -> tuple[Server, str]:
        server = Server(handler)
        servers.append(server)
        return server, await server.start()

    yield start
    for server in servers:
        await server.stop()


def later(seconds: float = 10.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_keep_alive_reuses_one_connection(
    serve: Callable[[Handler], Awaitable[tuple[Server, str]]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            assert request.startswith(b"POST /v1/chat HTTP/1.1\r\n")
            writer.write(ok(b'{"n": %d}' % len(request)))

    server, url = await serve(handler)
    transport = HTTPTransport(url)
    head = transport.request_head("POST", "/chat", {"X-Test": "1"})
    for _ in range(5):
        response = await transport.request(head, b"{}", until=later())
        assert response.status == 200
        assert (await response.read(later())).startswith(b'{"n"')
    assert server.connections == 1
    assert transport.open_connections == 1
    await transport.aclose()
    assert transport.open_connections == 0


async def test_chunked_body_streams_in_pieces(
    serve: Callable[[Handler], Awaitable[tuple[Server, str]]],
) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")

    _, url = await serve(handler)
    transport = HTTPTransport(url)
    response = await transport.request(transport.request_head("GET", "/x", {}), b"", until=later())
    assert await response.read_chunk(later()) == b"hello"
    release.set()
    assert await response.read_chunk(later()) == b" world"
    assert await response.read_chunk(later()) == b""
    assert transport.idle_connections == 1, "a fully read answer returns its connection to the pool"


async def test_body_delimited_by_connection_close(
    serve: Callable[[Handler], Awaitable[tuple[Server, str]]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    _, url = await serve(handler)
    transport = HTTPTransport(url)
    response = await transport.request(transport.request_head("GET", "/x", {}), b"", until=later())
    assert await response.read(later()) == b"all of it"
    assert transport.open_connections == 0


async def test_stale_pooled_connection_is_retried_once(
    serve: Callable[[Handler], Awaitable[tuple[Server, str]]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"first"))
        await writer.drain()
        # then close the idle keep-alive connection, as servers do after their idle timeout

    server, url = await serve(handler)
    transport = HTTPTransport(url)
    head = transport.request_head("POST", "/x", {})
    response = await transport.request(head, b"1", until=later())
    assert await response.read(later()) == b"first"
    # The server has closed the connection; whether or not we noticed yet, the next request works.
    response = await transport.request(head, b"2", until=later())
    assert await response.read(later()) == b"first"
    assert server.connections == 2


async def test_reset_mid_answer_is_a_connection_error(
    serve: Callable[[Handler], Awaitable[tuple[Server, str]]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    _, url = await serve(handler)
    transport = HTTPTransport(url)
    response = await transport.request(transport.request_head("GET", "/x", {}), b"", until=later())
    with pytest.raises(ConnectionError):
        await response.read(later())
    response.close()
    assert transport.open_connections == 0


async def test_fresh_connection_failure_is_not_retried(
    serve: Callable[[Handler], Awaitable[tuple[Server, str]]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    server, url = await serve(handler)
    transport = HTTPTransport(url)
    with pytest.raises(ConnectionError):
        await transport.request(transport.request_head("POST", "/x", {}), b"{}", until=later())
    assert server.connections == 1, "a POST that may have reached the server is not sent twice"


async def test_deadline_already_passed_times_out(
    serve: Callable[[Handler], Awaitable[tuple[Server, str]]],
) -> None:
    never = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await never.wait()

    _, url = await serve(handler)
    transport = HTTPTransport(url)
    head = transport.request_head("GET", "/x", {})
    response_task = transport.request(head, b"", until=asyncio.get_running_loop().time())
    with pytest.raises(TimeoutError):
        await response_task
    assert transport.open_connections == 0


async def test_invalid_http_is_a_protocol_error(
    serve: Callable[[Handler], Awaitable[tuple[Server, str]]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    _, url = await serve(handler)
    transport = HTTPTransport(url)
    with pytest.raises(ProtocolError):
        await transport.request(transport.request_head("GET", "/x", {}), b"", until=later())


async def test_connection_limit_queues_requests(
    serve: Callable[[Handler], Awaitable[tuple[Server, str]]],
) -> None:
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await gate.wait()
            writer.write(ok(b"x"))

    server, url = await serve(handler)
    transport = HTTPTransport(url, max_connections=1)
    head = transport.request_head("GET", "/x", {})
    first = asyncio.create_task(transport.request(head, b"", until=later()))
    second = asyncio.create_task(transport.request(head, b"", until=later()))
    await asyncio.sleep(0)
    gate.set()
    response = await first
    assert not second.done(), "the second request waits for the only connection"
    await response.read(later())
    await (await second).read(later())
    assert server.connections == 1


async def test_large_body_with_back_pressure(
    serve: Callable[[Handler], Awaitable[tuple[Server, str]]],
) -> None:
    body = bytes(range(256)) * 12_000  # ~3 MB, above the pause threshold

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(body))
        await writer.drain()

    _, url = await serve(handler)
    transport = HTTPTransport(url)
    response = await transport.request(transport.request_head("GET", "/x", {}), b"", until=later())
    assert await response.read(later()) == body


async def test_tls(serve: Callable[[Handler], Awaitable[tuple[Server, str]]]) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"secure"))
        await writer.drain()

    server = Server(handler)
    url = await server.start(server_ctx)
    try:
        transport = HTTPTransport(url, ssl_context=client_ctx)
        response = await transport.request(transport.request_head("GET", "/x", {}), b"", until=later())
        assert await response.read(later()) == b"secure"
        untrusted = HTTPTransport(url)  # the system trust store does not know our test CA
        with pytest.raises(ssl.SSLError):
            await untrusted.request(untrusted.request_head("GET", "/x", {}), b"", until=later())
    finally:
        await server.stop()


def test_sse_parser_handles_split_events_and_crlf() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: one\r") == []
    assert [e.data for e in parser.feed(b"\n\r\ndata: two\n")] == ["one"]
    events = parser.feed(b"data: more\n\n: a comment\n\nevent: done\ndata: {}\n\n")
    assert [(e.event, e.data) for e in events] == [("message", "two\nmore"), ("done", "{}")]
    assert parser.feed(b"data: tail") == []
    assert [e.data for e in parser.finish()] == ["tail"]

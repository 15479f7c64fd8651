"""How one worker's /metrics answers for every worker: expositions exchanged over Unix sockets.

Each worker listens on ``<directory>/<index>.sock`` (the directory is the instance's own,
private, made by the supervisor) and answers every connection with its own exposition: an 8-byte
big-endian length, then the text. A scrape reaching any worker fetches the others' at once, in
parallel, each within a short timeout; a worker that does not answer (restarting, or stuck) is
reported as ``hybridgate_worker_up{worker="i"} 0`` and the scrape still answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from hybridgate.telemetry.merge import merge

log = logging.getLogger("hybridgate.serving")

_LENGTH = 8
_MAX_BYTES = 64 * 1024 * 1024  # far above any real exposition: a corrupt length is refused


def socket_path(directory: Path, index: int) -> Path:
    return directory / f"{index}.sock"


class ExpositionServer:
    """Answers this worker's own exposition to the other workers on its Unix socket."""

    def __init__(self, path: Path, render: Callable[[], bytes]) -> None:
        self.path = path
        self._render = render
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        # A socket file left by this slot's previous (dead) worker would make bind() fail.
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._answer, path=str(self.path))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            body = self._render()
            writer.write(len(body).to_bytes(_LENGTH, "big") + body)
            await writer.drain()
        except ConnectionError:
            pass  # the asking worker gave up (its timeout): nothing to do
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)


class WorkerExpositions:
    """Every worker's exposition, merged with a ``worker`` label (the /metrics body of a worker)."""

    def __init__(
        self,
        index: int,
        count: int,
        directory: Path,
        render: Callable[[], bytes],
        *,
        timeout_s: float = 2.0,
    ) -> None:
        self.index = index
        self.count = count
        self.directory = directory
        self._render = render
        self.timeout_s = timeout_s

    async def render(self) -> bytes:
        parts = await asyncio.gather(*(self._fetch(i) for i in range(self.count)))
        return merge(parts)

    async def _fetch(self, index: int) -> bytes | None:
        if index == self.index:
            return self._render()
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_unix_connection(str(socket_path(self.directory, index)))
                length = int.from_bytes(await reader.readexactly(_LENGTH), "big")
                if length > _MAX_BYTES:
                    log.warning("worker %d sent an exposition of %d bytes: ignored", index, length)
                    return None
                return await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.debug("worker %d did not answer the metrics scrape: %r", index, exc)
            return None
        finally:
            if writer is not None:
                writer.close()

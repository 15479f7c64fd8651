"""One ``hybridgate serve`` child process: the real server, exactly as an operator runs it.

A child rather than a server inside the demo's own process: the agents' client (the ``openai``
SDK, parsing every answer) must not share the gateway's event loop or interpreter, or its work
would show up as the gateway's latency; and the dashboard the demo points at is the real
server's. The child runs in a session of its own (a Ctrl-C at the terminal reaches the demo,
which stops it in order) and is asked by Linux to stop if the demo dies without doing so. Its
output goes to a log file next to the arm's results.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from hybridgate.childproc import ChildStartError, die_with_parent, stop_child, wait_ready

STOP_GRACE_S = 15.0  # serve gives in-flight requests 5 s, then closes the local worker and clouds


class GatewayStartError(ChildStartError):
    """The gateway exited, or did not listen in time; the message ends with its log's tail."""


class GatewayProcess:
    """``python -m hybridgate.cli serve -c CONFIG`` on ``port`` (0: a free one)."""

    def __init__(self, config: Path, log: Path, *, port: int = 0, start_timeout_s: float = 180.0) -> None:
        self.config = config
        self.log = log
        self.port = port
        self.start_timeout_s = start_timeout_s
        self._process: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def start(self) -> str:
        """Start it and wait until it listens (every backend started); returns its base URL."""
        with tempfile.TemporaryDirectory(prefix="hybridgate-demo-") as folder:
            ready = Path(folder) / "ready.json"
            command = [sys.executable, "-m", "hybridgate.cli", "serve", "-c", str(self.config)]
            command += ["--port", str(self.port), "--quiet", "--ready-file", str(ready)]
            with self.log.open("wb") as log:
                self._process = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                )
            started = False
            try:
                self.port = await wait_ready(self._process, ready, self.start_timeout_s, "the gateway")
                started = True
            except ChildStartError as exc:
                raise GatewayStartError(f"{exc}; its log ({self.log}) ends:\n{self.log_tail()}") from None
            finally:
                if not started:  # also when cancelled: never leave the child behind
                    await self.stop()
        return self.base_url

    async def stop(self) -> None:
        """SIGTERM its process group (it shuts down gracefully), SIGKILL what is left. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            await stop_child(process, STOP_GRACE_S, group=True)

    async def __aenter__(self) -> GatewayProcess:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

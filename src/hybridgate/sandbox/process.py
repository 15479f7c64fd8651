"""A SANDBOX server in a child process on a free loopback port: start, find, stop.

Used by the ``sandbox`` backend and by tests::

    async with SandboxProcess("test-fast", seed=1) as sandbox:
        client = AsyncOpenAI(base_url=f"{sandbox.base_url}/v1", api_key="unused")
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import orjson

from hybridgate.childproc import ChildStartError, stop_child, wait_ready
from hybridgate.sandbox.faults import FaultRule


class SandboxStartError(ChildStartError):
    """The sandbox process exited or did not report ready in time."""


class SandboxProcess:
    """One ``python -m hybridgate.sandbox`` child. Its stderr is inherited (the startup line shows)."""

    def __init__(
        self,
        profile: str = "cloud-typical",
        *,
        seed: int = 0,
        time_scale: float | None = None,
        context_window: int | None = None,
        models: Sequence[str] = (),
        faults: Sequence[FaultRule] = (),
        host: str = "127.0.0.1",
        start_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.start_timeout = start_timeout
        self._args = ["--host", host, "--port", "0", "--profile", profile, "--seed", str(seed)]
        if time_scale is not None:
            self._args += ["--time-scale", repr(time_scale)]
        if context_window is not None:
            self._args += ["--context-window", str(context_window)]
        for model in models:
            self._args += ["--model", model]
        if faults:
            self._args += [
                "--faults",
                orjson.dumps([f.model_dump(exclude_none=True) for f in faults]).decode(),
            ]
        self._process: asyncio.subprocess.Process | None = None
        self._folder: str | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        if self.port is None:
            raise SandboxStartError("sandbox not started")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The child's process id while it is started."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> int:
        """Spawn the child and wait (bounded by ``start_timeout``) until it listens; returns the port."""
        if self._process is not None:
            raise SandboxStartError("sandbox already started")
        self._folder = tempfile.mkdtemp(prefix="hybridgate-sandbox-")
        ready = Path(self._folder) / "ready.json"
        command = [sys.executable, "-m", "hybridgate.sandbox", *self._args]
        command += ["--ready-file", str(ready), "--exit-on-eof"]
        # The child exits when this pipe closes, so it cannot outlive us even if we are killed.
        self._process = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE)
        started = False
        try:
            self.port = await wait_ready(
                self._process, ready, self.start_timeout, "sandbox", SandboxStartError
            )
            started = True
        finally:
            if not started:  # also when cancelled: never leave the child behind
                await self.stop()
        return self.port

    async def stop(self, grace_s: float = 5.0) -> None:
        """Ask the child to stop (SIGTERM), kill it after ``grace_s``, and reap it. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            await stop_child(process, grace_s)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self.port = None

    async def __aenter__(self) -> SandboxProcess:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

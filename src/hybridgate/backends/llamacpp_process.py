"""One llama.cpp worker OS process, as the gateway sees it: frames in and out, stderr, reaping.

The worker (:mod:`hybridgate.backends.llamacpp_worker`) reads length-prefixed JSON frames on its
stdin and writes them on its stdout; its stderr (llama.cpp's own logging) is drained in chunks
into the log and a short tail kept for error messages. The supervisor that restarts it lives in
:mod:`hybridgate.backends.llamacpp`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from hybridgate.backends.llamacpp_worker import HEADER, ProtocolError, decode_body, encode_frame, frame_length

logger = logging.getLogger("hybridgate.backends.llamacpp")

WORKER_MODULE = "hybridgate.backends.llamacpp_worker"
# Waiting for an OS process to exit is bounded in real time, not on the injected clock: it is not a
# policy timer, and a manual clock in tests would otherwise leave close() hanging.
REAP_GRACE_S = 5.0
_STDERR_TAIL_LINES = 20

Frame = dict[str, Any]


class WorkerProcess:
    """One worker OS process: frames in and out, stderr copied to the log, reaping."""

    def __init__(
        self, proc: asyncio.subprocess.Process, on_frame: Callable[[Frame], None], label: str
    ) -> None:
        self.proc = proc
        self.label = label
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self.ready: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._on_frame = on_frame
        self._reader = asyncio.create_task(self._read_frames())
        self._drain = asyncio.create_task(self._drain_stderr())
        self._exit = asyncio.create_task(self._reap())

    @classmethod
    async def spawn(cls, load: Frame, on_frame: Callable[[Frame], None], label: str) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own session: a Ctrl-C at the terminal reaches the gateway, which closes the
            # worker in order, instead of killing the worker under a running request.
            start_new_session=True,
        )
        worker = cls(proc, on_frame, label)
        worker.send(encode_frame(load))
        return worker

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, frame: bytes) -> bool:
        """Queue one encoded frame for the worker (never blocks); False if its stdin is closed."""
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing():
            return False
        stdin.write(frame)
        return True

    async def exited(self) -> str:
        """Wait for the process to end; returns how it ended, for error messages."""
        return await asyncio.shield(self._exit)

    async def terminate(self) -> None:
        """Close stdin (the worker exits on end of input), then SIGTERM, then SIGKILL; reap it."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exit), REAP_GRACE_S)
                return
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        await self._exit

    async def _read_frames(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while True:
                header = await stdout.readexactly(HEADER.size)
                message = decode_body(await stdout.readexactly(frame_length(header)))
                if not self.ready.done() and message.get("ev") in ("ready", "load_failed"):
                    self.ready.set_result(message)
                else:
                    self._on_frame(message)
        except asyncio.IncompleteReadError:
            pass  # end of stream: the worker exited (or died)
        except ProtocolError as exc:
            self.stderr_tail.append(f"protocol error: {exc}")
        finally:
            if not self.ready.done():
                self.ready.set_result({"ev": "load_failed", "message": "worker exited while loading"})

    async def _drain_stderr(self) -> None:
        # Read in chunks, not lines: one huge line must not stop the drain (and stall the worker).
        stderr = self.proc.stderr
        assert stderr is not None
        partial = b""
        while chunk := await stderr.read(65536):
            *lines, partial = (partial + chunk).split(b"\n")
            for line in lines:
                self._log_line(line)
        if partial:
            self._log_line(partial)

    def _log_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            self.stderr_tail.append(line)
            logger.debug("%s worker[%d]: %s", self.label, self.proc.pid, line)

    async def _reap(self) -> str:
        await self._reader
        try:
            code = await asyncio.wait_for(self.proc.wait(), REAP_GRACE_S)
        except TimeoutError:  # its stdout closed or turned to garbage, but it lives on
            self.proc.kill()
            code = await self.proc.wait()
        await self._drain
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        last = self.stderr_tail[-1] if self.stderr_tail else ""
        return f"{how}; last output: {last}" if last else how

"""Child processes that announce readiness through a ready file, and their reaping.

``hybridgate serve --ready-file`` and ``python -m hybridgate.sandbox --ready-file`` both write
``{"port": N, "pid": P}`` there (atomically: written aside, then renamed) once they listen. The
parent waits for the file (bounded, failing fast when the child exits first), and at the end asks
the child to stop (SIGTERM, to its whole process group when it has one of its own), kills it after
a grace period, and reaps it. Used by :class:`hybridgate.sandbox.SandboxProcess` and the demo's
gateway (:mod:`hybridgate.demo.gateway`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

POLL_S = 0.02
_PR_SET_PDEATHSIG = 1


class ChildStartError(RuntimeError):
    """The child exited, or did not report ready in time."""


def read_ready_port(path: Path) -> int | None:
    """The port in the ready file, once the child has written it (it renames it into place)."""
    try:
        port: int = orjson.loads(path.read_bytes())["port"]
    except FileNotFoundError:
        return None
    return port


async def wait_ready(
    process: asyncio.subprocess.Process,
    ready: Path,
    timeout_s: float,
    name: str,
    error: type[ChildStartError] = ChildStartError,
) -> int:
    """The port ``process`` wrote to ``ready``; raises ``error`` if it exits or times out first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (port := read_ready_port(ready)) is None:
        if process.returncode is not None:
            raise error(f"{name} exited with status {process.returncode} before it was ready")
        if loop.time() > deadline:
            raise error(f"{name} not ready within {timeout_s:g} s")
        await asyncio.sleep(POLL_S)
    return port


def _signal(process: asyncio.subprocess.Process, sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)


async def stop_child(process: asyncio.subprocess.Process, grace_s: float, *, group: bool = False) -> None:
    """SIGTERM ``process`` (its process group with ``group``: it was started in a session of its
    own), SIGKILL it after ``grace_s``, and reap it; with ``group``, whatever is left of the group
    is killed too. Idempotent."""
    if process.returncode is None:
        _signal(process, signal.SIGTERM, group)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            _signal(process, signal.SIGKILL, group)
            await process.wait()
    if group:
        _signal(process, signal.SIGKILL, group)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when this process dies, even by SIGKILL
    (elsewhere None). libc is loaded here, before the fork; the function makes one syscall."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return arm

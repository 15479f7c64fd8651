"""Helpers for the tests of the embedded local runtime (imported by them, not a conftest)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from hybridgate.backends.llamacpp import LlamaCppBackend, create
from hybridgate.backends.llamacpp_process import WORKER_MODULE
from hybridgate.backends.registry import BackendContext
from hybridgate.clock import Clock, SystemClock
from hybridgate.config.schema import LlamaCppDeployment
from hybridgate.types import InferenceRequest, Message

# The tiny model makes hundreds to thousands of tokens per second (depending on how busy the machine
# is): this many keeps a request running for seconds, long enough for a test to act on it.
LONG_GENERATION = 3000
LONG_CONTEXT = 4096


def chat(text: str, max_tokens: int | None = 8, **extra: Any) -> InferenceRequest:
    """A one-message user request."""
    return InferenceRequest(
        model="tiny", messages=(Message.of_text("user", text),), max_tokens=max_tokens, **extra
    )


def deployment(model: Path, **overrides: Any) -> LlamaCppDeployment:
    """A llamacpp deployment of ``model`` with test-friendly defaults."""
    settings: dict[str, Any] = {"type": "llamacpp", "model_path": str(model), "n_ctx": 1024, "n_threads": 1}
    settings.update(overrides)
    return LlamaCppDeployment.model_validate(settings)


@asynccontextmanager
async def running_backend(
    model: Path, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[LlamaCppBackend]:
    """A started backend that is closed (worker reaped) when the block ends."""
    backend = create("tiny", deployment(model, **overrides), BackendContext(clock=clock or SystemClock()))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def wait_until(condition: Callable[[], bool], *, within: float = 20.0) -> None:
    """Poll ``condition`` while a real process does its work (bounded; never waits for a timer)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while not condition():
        if loop.time() > give_up:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def worker_children() -> list[int]:
    """Pids of this process's children that are llama.cpp workers (zombies included)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # it ended while we looked
        # the command name in field 2 may hold spaces: the parent pid follows its closing ")"
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and WORKER_MODULE.encode() in cmdline:
            found.append(int(entry.name))
    return found


def process_exists(pid: int) -> bool:
    """True while ``pid`` exists, zombie (dead but not reaped) included."""
    return Path(f"/proc/{pid}").exists()

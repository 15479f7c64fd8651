"""Real servers started by the tests: the gateway, llama.cpp's server, the sandbox.

A :class:`ManagedProcess` drains the child's output on a thread and signals readiness when a
line matches a pattern (no polling, no sleeping); it kills the whole process group at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def eventually(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.02) -> bool:
    """Whether ``predicate`` became true within ``timeout`` seconds (for another process's output)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        pause.wait(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ManagedProcess:
    """A child process whose output is collected and whose readiness is a matched output line."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        ready: str,
        name: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.name = name
        self._ready = re.compile(ready)
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._cwd = cwd
        self._lines: list[str] = []
        self._event = threading.Event()
        self.match: re.Match[str] | None = None
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> re.Match[str]:
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,  # its own process group: stop() reaches every child it made
        )
        self._reader = threading.Thread(target=self._drain, name=f"drain-{self.name}", daemon=True)
        self._reader.start()
        if not self._event.wait(timeout) or self.match is None:
            self.stop()
            raise RuntimeError(
                f"{self.name} did not become ready in {timeout}s; output:\n{self.output[-4000:]}"
            )
        return self.match

    def _drain(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)
            if self.match is None:
                m = self._ready.search(line)
                if m is not None:
                    self.match = m
                    self._event.set()
        self._event.set()  # EOF: the process is gone; wake start() so it fails fast

    @property
    def output(self) -> str:
        return "".join(self._lines)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        # Children that outlived the leader (same process group) are killed too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_gateway(
    config_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
    extra_args: Sequence[str] = (),
) -> tuple[ManagedProcess, str]:
    """``hybridgate serve`` on a free port; returns the process and its base URL (no /v1)."""
    proc = ManagedProcess(
        [
            sys.executable,
            "-m",
            "hybridgate.cli",
            "serve",
            "-c",
            str(config_path),
            "--port",
            "0",
            "--quiet",
            *extra_args,
        ],
        ready=r"^hybridgate: listening on (http://127\.0\.0\.1:\d+)",
        name="gateway",
        env=env,
    )
    match = proc.start(timeout)
    return proc, match.group(1)


def start_llama_server(
    model_path: Path,
    *,
    n_ctx: int = 2048,
    extra_args: Sequence[str] = (),
    port: int | None = None,
    timeout: float = 90.0,
) -> tuple[ManagedProcess, str]:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python's ``llama_cpp.server``)."""
    port = port or free_port()
    proc = ManagedProcess(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
            "--interrupt_requests",
            "False",  # its default cancels in-flight streams on a new request
            "--seed",
            "0",
            *extra_args,
        ],
        ready=r"Uvicorn running on (http://127\.0\.0\.1:\d+)",
        name="llama-server",
    )
    match = proc.start(timeout)
    return proc, match.group(1)


def start_sandbox(
    profile: str = "instant", *, seed: int = 0, port: int | None = None, timeout: float = 60.0
) -> tuple[ManagedProcess, str]:
    """The SANDBOX stand-in cloud (``python -m hybridgate.sandbox``) on ``port`` (default: a free
    one; give one to bring a stopped sandbox back where its clients expect it)."""
    proc = ManagedProcess(
        [
            sys.executable,
            "-m",
            "hybridgate.sandbox",
            "--port",
            str(port or 0),
            "--profile",
            profile,
            "--seed",
            str(seed),
        ],
        ready=r"SANDBOX listening on (http://127\.0\.0\.1:\d+)",
        name="sandbox",
    )
    match = proc.start(timeout)
    return proc, match.group(1)

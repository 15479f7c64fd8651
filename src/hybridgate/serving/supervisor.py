"""The parent of several server workers: starts them, restarts the dead, stops them all.

The parent binds the listen socket, makes the instance's private directory (``mkdtemp``: mode
0700, a fresh name per instance, so a second gateway on the same host never shares or wipes it)
and forks one process per worker. Forking (not spawning) hands each worker the bound socket and
the very configuration the parent validated, without re-reading anything; it requires the parent
to hold no thread and no event loop, which it does not: this loop is plain blocking code waiting
on the workers' sentinels and two pipes.

A worker that exits is restarted after a backoff that doubles while restarts keep failing fast
(from 0.25 s up to 30 s). A worker that exits before every worker has been ready once means the
gateway cannot start: the others are stopped and the parent exits with its status. SIGTERM or
SIGINT stops every worker (SIGTERM, a graceful shutdown) and then the parent; a worker still
alive after the grace period is killed. Workers watch a pipe from the parent and shut down if the
parent dies without stopping them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from hybridgate.serving.peers import socket_path
from hybridgate.serving.worker import WorkerSpec

log = logging.getLogger("hybridgate.serving")

BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 30.0  # a worker that lived this long resets its slot's backoff
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


@dataclass(slots=True)
class _Slot:
    index: int
    process: BaseProcess | None = None
    started: float = 0.0
    failures: int = 0  # consecutive fast exits
    restart_at: float | None = None


@dataclass(slots=True)
class _Pipes:
    ready_r: int
    ready_w: int
    parent_r: int
    parent_w: int
    wake_r: int
    wake_w: int
    pending: bytes = b""
    signals: list[int] = field(default_factory=list)

    def parent_only(self) -> tuple[int, ...]:
        return (self.ready_r, self.parent_w, self.wake_r, self.wake_w)

    def close(self) -> None:
        for fd in (self.ready_r, self.ready_w, self.parent_r, self.parent_w, self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Supervisor:
    """Runs ``count`` workers, each ``target(spec)`` in a forked process, until SIGTERM/SIGINT."""

    def __init__(
        self, count: int, target: Callable[[WorkerSpec], None], *, stop_grace_s: float = 10.0
    ) -> None:
        self.count = count
        self.target = target
        self.stop_grace_s = stop_grace_s
        self._context = multiprocessing.get_context("fork")

    def run(self, on_ready: Callable[[], None]) -> int:
        """Serve until stopped; ``on_ready`` runs once every worker is serving. Returns the exit status."""
        if threading.active_count() > 1:
            raise RuntimeError("the supervisor must not have threads when it forks workers")
        directory = Path(tempfile.mkdtemp(prefix=f"hybridgate-{os.getpid()}-"))
        try:
            if len(str(socket_path(directory, self.count - 1)).encode()) > _UNIX_PATH_MAX:
                log.error(
                    "temporary directory %s is too long for Unix sockets: set TMPDIR shorter", directory
                )
                return 1
            return self._supervise(directory, on_ready)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _supervise(self, directory: Path, on_ready: Callable[[], None]) -> int:
        ready_r, ready_w = os.pipe()
        parent_r, parent_w = os.pipe()
        wake_r, wake_w = os.pipe()
        pipes = _Pipes(ready_r, ready_w, parent_r, parent_w, wake_r, wake_w)
        os.set_blocking(wake_w, False)
        previous = self._install_signals(pipes)
        slots = [_Slot(i) for i in range(self.count)]
        try:
            for slot in slots:
                self._start(slot, directory, pipes)
            return self._loop(slots, directory, pipes, on_ready)
        finally:
            self._stop_all(slots)
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            pipes.close()

    def _install_signals(
        self, pipes: _Pipes
    ) -> dict[int, signal.Handlers | Callable[..., object] | int | None]:
        def record(signum: int, frame: FrameType | None) -> None:
            pipes.signals.append(signum)

        signal.set_wakeup_fd(pipes.wake_w)  # wakes the wait below when a signal arrives
        return {s: signal.signal(s, record) for s in (signal.SIGTERM, signal.SIGINT)}

    def _loop(self, slots: list[_Slot], directory: Path, pipes: _Pipes, on_ready: Callable[[], None]) -> int:
        ready: set[int] = set()
        while not pipes.signals:
            due = [s.restart_at for s in slots if s.restart_at is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            sentinels = {s.process.sentinel: s for s in slots if s.process is not None}
            woken = wait([*sentinels, pipes.ready_r, pipes.wake_r], timeout)
            if pipes.wake_r in woken:
                os.read(pipes.wake_r, 512)
            announced = len(ready) == self.count
            if pipes.ready_r in woken:
                self._note_ready(slots, pipes, ready)
                if not announced and len(ready) == self.count:
                    on_ready()
            for sentinel, slot in sentinels.items():
                if sentinel in woken:
                    code = self._reap(slot)
                    if len(ready) < self.count:
                        log.error("worker %d exited (%s) before the gateway was ready", slot.index, code)
                        return code if code > 0 else 1
                    self._schedule_restart(slot, code)
            for slot in slots:
                if slot.restart_at is not None and slot.restart_at <= time.monotonic():
                    self._start(slot, directory, pipes)
        log.info("received %s: stopping %d workers", signal.Signals(pipes.signals[0]).name, self.count)
        return 0

    def _note_ready(self, slots: list[_Slot], pipes: _Pipes, ready: set[int]) -> None:
        data = pipes.pending + os.read(pipes.ready_r, 4096)
        *lines, pipes.pending = data.split(b"\n")
        for line in lines:
            index = int(line)
            process = slots[index].process
            log.info("worker %d (pid %s) is serving", index, process.pid if process else "?")
            ready.add(index)

    def _start(self, slot: _Slot, directory: Path, pipes: _Pipes) -> None:
        spec = WorkerSpec(slot.index, self.count, directory, pipes.ready_w, pipes.parent_r)
        process = self._context.Process(
            target=_worker_main, args=(self.target, spec, pipes.parent_only()), name=f"worker-{slot.index}"
        )
        process.start()
        slot.process, slot.started, slot.restart_at = process, time.monotonic(), None
        log.info("worker %d started (pid %s)", slot.index, process.pid)

    def _reap(self, slot: _Slot) -> int:
        assert slot.process is not None
        slot.process.join()
        code = slot.process.exitcode or 0
        slot.process.close()
        slot.process = None
        return code

    def _schedule_restart(self, slot: _Slot, code: int) -> None:
        lived = time.monotonic() - slot.started
        slot.failures = 0 if lived >= HEALTHY_AFTER_S else slot.failures + 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, slot.failures - 1))
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        log.warning("worker %d exited (%s) after %.1f s: restarting in %.2f s", slot.index, how, lived, delay)
        slot.restart_at = time.monotonic() + delay

    def _stop_all(self, slots: list[_Slot]) -> None:
        running = [s.process for s in slots if s.process is not None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        deadline = time.monotonic() + self.stop_grace_s
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.warning(
                    "worker pid %s did not stop in %.0f s: killing it", process.pid, self.stop_grace_s
                )
                process.kill()
                process.join()
        for slot in slots:
            slot.process = None


def _worker_main(
    target: Callable[[WorkerSpec], None], spec: WorkerSpec, parent_only: tuple[int, ...]
) -> None:
    """First code of a forked worker: drop what belongs to the parent, then serve."""
    for fd in parent_only:
        # The write end of the parent pipe must be held by the parent alone (its EOF is the
        # signal that the parent is gone); the rest are the parent's business.
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    target(spec)

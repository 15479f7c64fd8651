"""A file that rotates by size and age, keeping N old files (``PATH.1`` newest ... ``PATH.N``).

Several processes may append to one path (``serve --workers N``: one decision log for all).
Every batch is written under an exclusive ``flock`` on ``PATH.lock``; a writer whose file was
rotated away by another process reopens ``PATH`` first; the size is the file's own, and the age
is that of its first line (``first_time`` reads it), so all writers agree on when to rotate.
Within a process it is used from one writer thread. Time comes from the injected clock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from hybridgate.clock import Clock


def rotated_paths(path: Path, keep: int) -> list[Path]:
    """The rotated files of ``path``, newest first (``PATH.1`` ... ``PATH.keep``)."""
    return [path.with_name(f"{path.name}.{i}") for i in range(1, keep + 1)]


class RotatingFile:
    """Appends whole lines to ``path``; rotates before a line that would take the file past
    ``max_bytes``, or once its first line is ``max_age_s`` old."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        keep: int,
        clock: Clock,
        max_age_s: float | None = None,
        first_time: Callable[[bytes], float | None] | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.keep = keep
        self.clock = clock
        self.first_time = first_time
        self.rotations = 0
        self._out: BinaryIO | None = None
        self._lock: BinaryIO | None = None
        self._started: float | None = None  # when the current file's first line was written

    def write(self, lines: list[bytes]) -> None:
        """Append whole lines (a line is never split across files), then flush once."""
        if not lines:
            return
        with self._locked():
            out = self._current()
            size = os.fstat(out.fileno()).st_size
            for line in lines:
                if size > 0 and (size + len(line) > self.max_bytes or self._too_old()):
                    self._rotate()
                    out, size = self._current(), 0
                if size == 0:
                    self._started = self.clock.wall()
                out.write(line)
                size += len(line)
            out.flush()

    def rotate(self) -> None:
        """Rotate now (``PATH`` becomes ``PATH.1``; the oldest beyond ``keep`` is deleted)."""
        with self._locked():
            self._rotate()

    def close(self) -> None:
        for handle in (self._out, self._lock):
            if handle is not None:
                handle.close()
        self._out = self._lock = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = self.path.with_name(self.path.name + ".lock").open("ab")
        fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)

    def _current(self) -> BinaryIO:
        """The open file, reopened when another writer rotated it away (held lock)."""
        out = self._out
        if out is not None:
            try:
                same = os.fstat(out.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return out
            out.close()
        self._out = out = self.path.open("ab")
        self._started = self._first_line_time()
        return out

    def _first_line_time(self) -> float | None:
        if self.first_time is None or self.max_age_s is None:
            return None
        with self.path.open("rb") as existing:
            first = existing.readline()
        if not first:
            return None
        return self.first_time(first) or self.clock.wall()  # unreadable: count its age from now

    def _too_old(self) -> bool:
        return (
            self.max_age_s is not None
            and self._started is not None
            and self.clock.wall() - self._started >= self.max_age_s
        )

    def _rotate(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        paths = rotated_paths(self.path, self.keep)
        with contextlib.suppress(FileNotFoundError):
            paths[-1].unlink()
        for older, newer in zip(reversed(paths[1:]), reversed(paths[:-1]), strict=True):
            if newer.exists():
                newer.replace(older)
        if self.path.exists():
            self.path.replace(paths[0])
        self._started = None
        self.rotations += 1

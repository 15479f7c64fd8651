"""A file that rotates by size and age, keeping N old files (``PATH.1`` newest ... ``PATH.N``).

Used from one writer thread (not thread-safe by itself). Time comes from the injected clock.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import BinaryIO

from hybridgate.clock import Clock


def rotated_paths(path: Path, keep: int) -> list[Path]:
    """The rotated files of ``path``, newest first (``PATH.1`` ... ``PATH.keep``)."""
    return [path.with_name(f"{path.name}.{i}") for i in range(1, keep + 1)]


class RotatingFile:
    """Appends bytes to ``path``; rotates before a write that would pass ``max_bytes``, or when
    the current file was started more than ``max_age_s`` ago."""

    def __init__(
        self, path: Path, *, max_bytes: int, keep: int, clock: Clock, max_age_s: float | None = None
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.keep = keep
        self.clock = clock
        self.rotations = 0
        self._out: BinaryIO | None = None
        self._size = 0
        self._opened_at = 0.0

    def _open(self) -> BinaryIO:
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("ab")
            self._size = self._out.tell()
            # An existing file's age is unknown: count it from now.
            self._opened_at = self.clock.wall()
        return self._out

    def write(self, lines: list[bytes]) -> None:
        """Append whole lines (a line is never split across files), then flush once."""
        if not lines:
            return
        out = self._open()
        for line in lines:
            if self._size > 0 and (self._size + len(line) > self.max_bytes or self._too_old()):
                self.rotate()
                out = self._open()
            out.write(line)
            self._size += len(line)
        out.flush()

    def _too_old(self) -> bool:
        return self.max_age_s is not None and self.clock.wall() - self._opened_at >= self.max_age_s

    def rotate(self) -> None:
        """Close the current file and shift the rotated ones; the oldest beyond ``keep`` is deleted."""
        self.close()
        paths = rotated_paths(self.path, self.keep)
        with contextlib.suppress(FileNotFoundError):
            paths[-1].unlink()
        for older, newer in zip(reversed(paths[1:]), reversed(paths[:-1]), strict=True):
            if newer.exists():
                newer.replace(older)
        if self.path.exists():
            self.path.replace(paths[0])
        self.rotations += 1

    def close(self) -> None:
        if self._out is not None:
            out, self._out = self._out, None
            out.close()

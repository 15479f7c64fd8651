"""Reading the decision log back: every file (rotated ones first, oldest first), corrupt lines
skipped and counted, new lines followed as they are appended, and the numbers of ``log stats``.

Nothing here waits: :class:`LogFollower.poll` returns what was appended since the last call, and
the caller decides how long to wait between calls (the CLI, a test that appends and polls).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

Record = dict[str, Any]


def log_files(path: Path) -> list[Path]:
    """``path``'s rotated files, oldest first (``PATH.N`` ... ``PATH.1``), then ``path`` itself
    (those that exist)."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)")
    rotated: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            m = pattern.fullmatch(candidate.name)
            if m is not None and candidate.is_file():
                rotated.append((int(m.group(1)), candidate))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if path.is_file():
        files.append(path)
    return files


@dataclass(slots=True)
class ReadResult:
    records: list[Record] = field(default_factory=list)
    corrupt: int = 0
    files: list[Path] = field(default_factory=list)


def parse_line(line: bytes) -> Record | None:
    """One record, or None for a line that is not a JSON object."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def read_log(path: Path) -> ReadResult:
    """Every record of the log at ``path`` in order; raises FileNotFoundError when there is none."""
    files = log_files(path)
    if not files:
        raise FileNotFoundError(path)
    result = ReadResult(files=files)
    for file in files:
        with file.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = parse_line(line)
                if record is None:
                    result.corrupt += 1
                else:
                    result.records.append(record)
    return result


class LogFollower:
    """New records of the file at ``path`` as they are appended; follows a rotation (the file
    replaced or truncated) by reading the new file from its start."""

    def __init__(self, path: Path, *, from_end: bool = True) -> None:
        self.path = path
        self.corrupt = 0
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._partial = b""
        if from_end and path.exists():
            stat = path.stat()
            self._identity, self._offset = (stat.st_dev, stat.st_ino), stat.st_size

    def poll(self) -> list[Record]:
        """Whole lines appended since the last call (a line still being written waits)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._identity or stat.st_size < self._offset:
            self._identity, self._offset, self._partial = identity, 0, b""
        if stat.st_size == self._offset:
            return []
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        out: list[Record] = []
        for line in lines:
            if not line.strip():
                continue
            record = parse_line(line)
            if record is None:
                self.corrupt += 1
            else:
                out.append(record)
        return out


def matches(record: Record, workload_class: str | None) -> bool:
    return workload_class is None or record.get("class") == workload_class


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(slots=True)
class LogStats:
    """What ``hybridgate log stats`` reports."""

    requests: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    by_deployment: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    sensitive_actions: Counter[str] = field(default_factory=Counter)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)  # by class
    cost_usd: float = 0.0
    egress_bytes: int = 0
    attempts: int = 0
    hedged: int = 0
    first_ts: float | None = None
    last_ts: float | None = None

    def quantiles(self, workload_class: str | None = None) -> tuple[float | None, float | None]:
        """(p50, p95) latency in ms, of one class or of all requests."""
        if workload_class is None:
            values = [v for vs in self.latency_ms.values() for v in vs]
        else:
            values = self.latency_ms.get(workload_class, [])
        return percentile(values, 0.50), percentile(values, 0.95)


def summarize(records: Iterable[Record]) -> LogStats:
    stats = LogStats()
    for record in records:
        stats.requests += 1
        cls = str(record.get("class") or "?")
        stats.by_class[cls] += 1
        stats.by_deployment[str(record.get("deployment") or "-")] += 1
        stats.by_outcome[str(record.get("outcome") or "?")] += 1
        sensitive = record.get("sensitive")
        action = sensitive.get("action") if isinstance(sensitive, dict) else None
        stats.sensitive_actions[str(action or "none")] += 1
        stats.latency_ms.setdefault(cls, []).append(_number(record.get("latency_ms")))
        cost = record.get("cost_usd")
        stats.cost_usd += _number(cost.get("total")) if isinstance(cost, dict) else 0.0
        stats.egress_bytes += int(_number(record.get("egress_bytes")))
        attempts = record.get("attempts")
        if isinstance(attempts, list):
            stats.attempts += len(attempts)
            stats.hedged += any(isinstance(a, dict) and a.get("hedge") for a in attempts)
        ts = record.get("ts")
        if isinstance(ts, int | float):
            stats.first_ts = ts if stats.first_ts is None else min(stats.first_ts, ts)
            stats.last_ts = ts if stats.last_ts is None else max(stats.last_ts, ts)
    return stats

"""The tamper-evident audit trail: HMAC-chained JSON lines.

Each entry carries its sequence number, the MAC of the entry before it (``prev``) and its own
``mac`` = HMAC-SHA256(key, canonical JSON of every other field). The key lives outside the log
(config/env), so whoever can edit the file cannot forge a MAC: a modified entry fails its MAC, a
deleted, inserted or reordered one breaks the sequence or the chain, and a truncated tail is
caught by the head file (``<log>.head``: the last sequence number and MAC, itself authenticated).
:func:`verify` names the first bad entry. Writers in several processes (the server, the CLI)
append under an exclusive file lock and continue the chain from the file's last entry.

Entries hold who did what, where data went and which kinds of sensitive data were involved:
never prompts, completions, sensitive values or secrets.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("hybridgate.audit")

GENESIS = "0" * 64
_STOP = object()


def _mac(key: bytes, entry: Mapping[str, Any]) -> str:
    body = orjson.dumps({k: v for k, v in entry.items() if k != "mac"}, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _last_entry(path: Path) -> tuple[int, str]:
    """(seq, mac) of the file's last entry, or (0, GENESIS) for an empty or missing file."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0, GENESIS
    for line in reversed(lines):
        if line.strip():
            entry = orjson.loads(line)
            return int(entry["seq"]), str(entry["mac"])
    return 0, GENESIS


class AuditWriter:
    """Appends entries synchronously (the CLI; the server uses :class:`AuditLog`)."""

    def __init__(self, path: Path, key: bytes, clock: Callable[[], float]) -> None:
        self.path = path
        self._key = key
        self._now = clock

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` as chained entries, under an exclusive lock (atomic for other writers)."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as out:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)
            try:
                seq, prev = _last_entry(self.path)
                lines: list[bytes] = []
                for record in records:
                    seq += 1
                    entry = {"ts": round(self._now(), 3), **record, "seq": seq, "prev": prev}
                    entry["mac"] = prev = _mac(self._key, entry)
                    lines.append(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS) + b"\n")
                out.writelines(lines)
                out.flush()
                os.fsync(out.fileno())
                head = {"seq": seq, "mac": prev}
                head["head_mac"] = _mac(self._key, head)
                tmp = _head_path(self.path).with_suffix(".tmp")
                tmp.write_bytes(orjson.dumps(head))
                tmp.replace(_head_path(self.path))
            finally:
                fcntl.flock(out.fileno(), fcntl.LOCK_UN)


class AuditLog:
    """The server's audit trail: ``record`` queues (never blocks the event loop); a thread appends."""

    def __init__(self, writer: AuditWriter, *, max_pending: int = 100_000) -> None:
        self.writer = writer
        self.dropped = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-log", daemon=True)
            self._thread.start()

    def record(self, event: str, **fields: Any) -> None:
        try:
            self._queue.put_nowait({"event": event, **fields})
        except queue.Full:
            self.dropped += 1
            log.error("audit trail: queue full, entry %r dropped", event)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty() and len(batch) < 512:
                batch.append(self._queue.get_nowait())
            records = [x for x in batch if isinstance(x, dict)]
            try:
                self.writer.append(records)
            except OSError as exc:  # a full disk must not take the gateway down; it is reported
                self.dropped += len(records)
                log.error("audit trail %s: %s (%d entries dropped)", self.writer.path, exc, len(records))
            if any(x is _STOP for x in batch):
                return


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of :func:`verify`: ``bad_line`` is the first bad entry's line (1-based)."""

    ok: bool
    entries: int
    bad_line: int | None = None
    reason: str = ""


def verify(path: Path, key: bytes) -> Verdict:
    """Check every entry's MAC, sequence and chain, and the head; name the first bad entry."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Verdict(False, 0, None, f"{path} does not exist")
    expected_seq, prev, n = 1, GENESIS, 0
    for n, line in enumerate(raw.splitlines(), start=1):
        try:
            entry = orjson.loads(line)
            seq, entry_prev, mac = int(entry["seq"]), entry["prev"], entry["mac"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return Verdict(False, n - 1, n, "not a valid audit entry (modified)")
        if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(key, entry)):
            return Verdict(False, n - 1, n, f"entry seq {seq}: MAC mismatch (modified or forged)")
        if seq > expected_seq:
            return Verdict(
                False, n - 1, n, f"entry seq {seq}: entries {expected_seq}..{seq - 1} are missing (deleted)"
            )
        if seq < expected_seq:
            return Verdict(
                False, n - 1, n, f"entry seq {seq}: expected seq {expected_seq} (reordered or duplicated)"
            )
        if entry_prev != prev:
            return Verdict(
                False, n - 1, n, f"entry seq {seq}: does not follow the entry before it (chain broken)"
            )
        expected_seq, prev = seq + 1, mac
    return _check_head(path, key, n, expected_seq - 1, prev)


def _check_head(path: Path, key: bytes, lines: int, last_seq: int, last_mac: str) -> Verdict:
    try:
        head = orjson.loads(_head_path(path).read_bytes())
        ok = hmac.compare_digest(
            str(head.get("head_mac", "")), _mac(key, {k: head[k] for k in ("seq", "mac")})
        )
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError):
        return Verdict(False, lines, None, f"head file {_head_path(path)} is missing or unreadable")
    if not ok:
        return Verdict(False, lines, None, "head file: MAC mismatch (modified)")
    if int(head["seq"]) > last_seq:
        return Verdict(
            False,
            lines,
            lines + 1,
            f"entries {last_seq + 1}..{head['seq']} are missing at the end (truncated)",
        )
    if int(head["seq"]) == last_seq and head["mac"] != last_mac:
        return Verdict(False, lines, lines, f"entry seq {last_seq}: differs from the head (replaced)")
    return Verdict(True, lines)

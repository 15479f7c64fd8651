"""The decision log: one JSON line per request, written off the event loop.

Each record says who asked (tenant, key fingerprint, class), what the data was (kinds of
sensitive data found, never values), how it was routed and why (the Explanation), what happened
(attempts, the deployment that answered), and what it cost. Prompts, completions, sensitive
values and credentials are never written. A bounded queue decouples the request path from the
disk: if the writer falls behind, records are dropped and counted rather than slowing requests.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("hybridgate.decision_log")

_STOP = object()


class DecisionLog:
    """Appends records to a JSON-lines file from a writer thread."""

    def __init__(self, path: Path, *, max_pending: int = 10_000) -> None:
        self.path = path
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
            self._thread.start()

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record (never blocks the caller)."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Flush what is queued and stop the writer."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        with self.path.open("ab") as out:
            while True:
                item = self._queue.get()
                batch = [item]
                while not self._queue.empty() and len(batch) < 512:
                    batch.append(self._queue.get_nowait())
                stop = any(x is _STOP for x in batch)
                lines = [orjson.dumps(x) + b"\n" for x in batch if isinstance(x, dict)]
                try:
                    out.writelines(lines)
                    out.flush()
                    self.written += len(lines)
                except OSError as exc:  # a full disk must not take the gateway down
                    self.dropped += len(lines)
                    log.error("decision log %s: %s (%d records dropped)", self.path, exc, len(lines))
                if stop:
                    return

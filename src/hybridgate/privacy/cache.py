"""Per-text scan results, remembered across requests.

An agent resends its whole conversation on every turn, so most texts of a request were
scanned on the previous one. The cache keys a text by a 128-bit BLAKE2b digest (the text
itself is not kept) and stores only (detector index, start, end) triples.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

Spans = tuple[tuple[int, int, int], ...]  # (detector index, start, end)


class ScanCache:
    """A bounded LRU map from text digests to the spans the scanner's detectors found there.

    Thread-safe (a scanner may be shared by threads). It belongs to one scanner: the detector
    indexes refer to that scanner's detector list.
    """

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._data: OrderedDict[bytes, Spans] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, key: bytes) -> Spans | None:
        with self._lock:
            spans = self._data.get(key)
            if spans is not None:
                self._data.move_to_end(key)
            return spans

    def put(self, key: bytes, spans: Spans) -> None:
        with self._lock:
            self._data[key] = spans
            self._data.move_to_end(key)
            while len(self._data) > self._entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

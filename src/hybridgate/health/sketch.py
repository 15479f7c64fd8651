"""Statistics over a sliding window of time: quantile sketches and counters.

A window of ``window_s`` seconds is a ring of ``slots`` slots, each ``window_s / slots`` wide;
an observation lands in the slot of the moment it was made, and a read covers the slots that
are still inside the window (so the window really spans between ``window_s - width`` and
``window_s`` seconds). Time comes from the injected :class:`~hybridgate.clock.Clock`, so tests
move a ``ManualClock`` and watch old observations fall out::

    ttft = WindowedSketch(window_s=60, slots=6, clock=clock)
    ttft.add(0.42)
    ttft.quantile(0.95)      # ~0.42 (1% relative accuracy)
    clock.advance(61)
    ttft.quantile(0.95)      # None: the observation left the window

Reads are served from a merged view that is kept up to date on every ``add`` (the value is
added to its slot and to the merge) and rebuilt only when the ring turns to a new slot, so a
read costs one clock read unless a slot boundary was crossed. Owned by one event loop: no locks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Generic, TypeVar

from ddsketch import DDSketch

from hybridgate.clock import Clock

_NEVER = -(2**62)  # the epoch of a slot that holds nothing yet
S = TypeVar("S")


class _SlotRing(Generic[S]):
    """The ring of per-slot summaries and the merge of the live ones (rebuilt on rotation)."""

    def __init__(self, window_s: float, slots: int, clock: Clock) -> None:
        if window_s <= 0 or slots < 1:
            raise ValueError("a window needs window_s > 0 and at least one slot")
        self.window_s = window_s
        self.slots = slots
        self.width = window_s / slots
        self._now = clock.monotonic
        self._items: list[S | None] = [None] * slots
        self._epochs = [_NEVER] * slots
        self._merged: S | None = None
        self._merged_epoch = _NEVER

    def _empty(self) -> S:
        raise NotImplementedError

    def _combine(self, into: S, item: S) -> None:
        raise NotImplementedError

    def _epoch(self) -> int:
        return int(self._now() // self.width)

    @property
    def epoch(self) -> int:
        """The slot number now: it changes when observations may have left the window."""
        return self._epoch()

    def _slot(self) -> tuple[S, S | None]:
        """The current slot's summary (made fresh if the ring moved on), and the merge if current."""
        epoch = self._epoch()
        index = epoch % self.slots
        item = self._items[index]
        if item is None or self._epochs[index] != epoch:
            item = self._empty()
            self._items[index] = item
            self._epochs[index] = epoch
        if self._merged_epoch != epoch:
            self._merged = None
        return item, self._merged

    def _window(self) -> S:
        """The merge of every slot still inside the window."""
        epoch = self._epoch()
        merged = self._merged
        if merged is not None and self._merged_epoch == epoch:
            return merged
        merged = self._empty()
        oldest = epoch - self.slots
        for index, item in enumerate(self._items):
            if item is None:
                continue
            if self._epochs[index] > oldest:
                self._combine(merged, item)
            else:
                self._items[index] = None  # fell out of the window: let it go
                self._epochs[index] = _NEVER
        self._merged, self._merged_epoch = merged, epoch
        return merged


class WindowedSketch(_SlotRing[DDSketch]):
    """Quantiles of the values added in the last ``window_s`` seconds (DDSketch per slot).

    ``relative_accuracy`` bounds the error of every quantile: the value returned is within that
    fraction of a value actually observed at that rank.
    """

    def __init__(self, window_s: float, slots: int, clock: Clock, relative_accuracy: float = 0.01) -> None:
        self.relative_accuracy = relative_accuracy
        super().__init__(window_s, slots, clock)

    def _empty(self) -> DDSketch:
        return DDSketch(self.relative_accuracy)

    def _combine(self, into: DDSketch, item: DDSketch) -> None:
        into.merge(item)

    def add(self, value: float) -> None:
        """Record one observation now."""
        sketch, merged = self._slot()
        sketch.add(value)
        if merged is not None:
            merged.add(value)

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0..1) of the window, or None when it holds nothing."""
        window = self._window()
        if window.count == 0:
            return None
        value = window.get_quantile_value(q)
        return None if value is None else float(value)

    def mean(self) -> float | None:
        """The exact mean of the window, or None when it holds nothing."""
        window = self._window()
        return float(window.sum / window.count) if window.count else None

    @property
    def count(self) -> int:
        """Observations in the window."""
        return int(self._window().count)


class WindowedCounter(_SlotRing[Counter[str]]):
    """Counts per key over the last ``window_s`` seconds (for example errors by kind)."""

    def _empty(self) -> Counter[str]:
        return Counter()

    def _combine(self, into: Counter[str], item: Counter[str]) -> None:
        into.update(item)

    def add(self, key: str, n: int = 1) -> None:
        counts, merged = self._slot()
        counts[key] += n
        if merged is not None:
            merged[key] += n

    def counts(self) -> Mapping[str, int]:
        """Every key's count in the window (a copy)."""
        return {key: n for key, n in self._window().items() if n}

    def get(self, key: str) -> int:
        return self._window()[key]

    def total(self) -> int:
        return self._window().total()


class WindowedMean(_SlotRing[list[float]]):
    """The mean of the values added in the last ``window_s`` seconds (a sum and a count per slot)."""

    def _empty(self) -> list[float]:
        return [0.0, 0.0]

    def _combine(self, into: list[float], item: list[float]) -> None:
        into[0] += item[0]
        into[1] += item[1]

    def add(self, value: float) -> None:
        slot, merged = self._slot()
        slot[0] += value
        slot[1] += 1
        if merged is not None:
            merged[0] += value
            merged[1] += 1

    def mean(self) -> float | None:
        total, count = self._window()
        return total / count if count else None

    @property
    def count(self) -> int:
        return int(self._window()[1])


class WindowedTally(_SlotRing[list[int]]):
    """Counts of a few fixed outcomes, by index, over the window (cheaper than a keyed counter)."""

    def __init__(self, window_s: float, slots: int, clock: Clock, size: int = 2) -> None:
        self.size = size
        super().__init__(window_s, slots, clock)

    def _empty(self) -> list[int]:
        return [0] * self.size

    def _combine(self, into: list[int], item: list[int]) -> None:
        for i, n in enumerate(item):
            into[i] += n

    def add(self, index: int) -> None:
        slot, merged = self._slot()
        slot[index] += 1
        if merged is not None:
            merged[index] += 1

    def get(self, index: int) -> int:
        return self._window()[index]

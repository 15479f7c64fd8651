"""The content scan: every text a request would send upstream, through every detector.

What is scanned: each message's text parts (system prompt, user and assistant turns, tool
results, which are ``role="tool"`` messages) and each tool call's JSON arguments; for
embeddings, each input. Images are not scanned; they are counted in
:attr:`ScanResult.unscanned_images` so that policy can decide about them.

The scan **fails closed**: :meth:`Scanner.scan` never raises. A detector that raises or returns
a nonsensical span, a request above ``max_scan_bytes``, a scan that runs past its time limit,
or detection disabled without ``allow_unscanned`` all give ``failed=True`` with a reason, and a
failed result counts as sensitive. Findings hold positions and categories, never the values:
a :class:`ScanResult` can be logged as it is.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from hybridgate.clock import Clock, SystemClock
from hybridgate.config.governance import DetectionConfig
from hybridgate.privacy.cache import ScanCache, Spans
from hybridgate.privacy.detectors import SEPARATOR, Detector
from hybridgate.privacy.registry import load_detectors
from hybridgate.types import ImagePart, InferenceRequest, TextPart

Field = Literal["content", "arguments", "input"]

#: Texts shorter than this are scanned again rather than looked up in the cache.
CACHE_MIN_CHARS = 64


@dataclass(frozen=True, slots=True)
class Location:
    """Which text of the request: ``messages[index].content[sub]``,
    ``messages[index].tool_calls[sub].arguments``, or ``inputs[index]`` (embeddings)."""

    index: int
    field: Field
    sub: int = 0

    def __str__(self) -> str:
        if self.field == "content":
            return f"messages[{self.index}].content[{self.sub}]"
        if self.field == "arguments":
            return f"messages[{self.index}].tool_calls[{self.sub}].arguments"
        return f"inputs[{self.index}]"


@dataclass(frozen=True, slots=True)
class Finding:
    """One sensitive value: which detector, what kind, where (``text[start:end]``)."""

    detector: str
    kind: str
    location: Location
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What the scan found, or why it could not decide (``failed``; then ``reason`` says why).

    ``scanned`` is False when detection is disabled (with ``allow_unscanned``, not sensitive;
    without, failed). A failed result has no findings: a partial list would mislead.
    """

    findings: tuple[Finding, ...] = ()
    failed: bool = False
    reason: str | None = None
    scanned: bool = True
    unscanned_images: int = 0

    @property
    def sensitive(self) -> bool:
        """Whether the request must be treated as holding sensitive data."""
        return self.failed or bool(self.findings)

    @property
    def kinds(self) -> frozenset[str]:
        """The categories found (``email``, ``secret``, ...)."""
        return frozenset(f.kind for f in self.findings)


def request_texts(request: InferenceRequest) -> Iterable[tuple[Location, str]]:
    """Every scanned text of a request with its location (the redactor walks the same list)."""
    for i, message in enumerate(request.messages):
        for j, part in enumerate(message.content):
            if isinstance(part, TextPart):
                yield Location(i, "content", j), part.text
        for k, call in enumerate(message.tool_calls):
            yield Location(i, "arguments", k), call.arguments


def scan_view(text: str) -> str:
    """``text`` with JSON/C escapes (``\\n``, ``\\"``, ...) blanked, keeping every offset.

    A token right after an escaped newline in a JSON document or a log line (``\\nAKIA...``)
    would otherwise sit behind the letter ``n`` and escape the detectors' token boundaries.
    """
    if "\\" not in text:
        return text
    for escape in ("\\\\", "\\n", "\\r", "\\t", '\\"'):
        text = text.replace(escape, "  ")
    return text


def _utf8_size(texts: Sequence[tuple[Location, str]], limit: int) -> int:
    total = 0
    for _, text in texts:
        # isascii() is O(1) in CPython; only non-ASCII texts pay for an encode.
        total += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if total > limit:
            break
    return total


def _by_position(span: tuple[int, int, int]) -> tuple[int, int, int]:
    return span[1], span[2], span[0]


class _Abort(Exception):
    """Ends a scan early with a reason (a bad span, the time limit)."""


@dataclass
class _Run:
    """One pass of every detector over the texts a scan could not take from the cache.

    The texts are joined with NUL separators and each detector runs once over the whole, not
    once per text: a conversation holds hundreds of short texts, and per-call overhead would
    dominate. Spans are then mapped back to their texts (and clipped to them).
    """

    detectors: tuple[Detector, ...]
    over_time: Callable[[], bool]
    max_findings: int
    current: str = ""

    def spans(self, views: Sequence[str]) -> list[list[tuple[int, int, int]]]:
        joined = SEPARATOR.join(views)
        starts = list(itertools.accumulate((len(v) + len(SEPARATOR) for v in views[:-1]), initial=0))
        found: list[list[tuple[int, int, int]]] = [[] for _ in views]
        budget = self.max_findings
        for index, detector in enumerate(self.detectors):
            self.current = detector.name
            for start, end in detector.find(joined):
                if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(joined)):
                    raise _Abort(f"detector {self.current!r} gave an invalid span")
                i = bisect.bisect_right(starts, start) - 1
                offset = starts[i]
                if start - offset < min(end - offset, len(views[i])):
                    found[i].append((index, start - offset, min(end - offset, len(views[i]))))
                    budget -= 1
                    if budget < 0:
                        raise _Abort(f"more than {self.max_findings} findings")
                if self.over_time():
                    break
            if self.over_time():
                raise _Abort("scan exceeded its time limit")
        return found


class Scanner:
    """Runs the configured detectors over requests. Build one at start-up and share it.

    ``detectors`` replaces the configured set (tests, embedding callers); by default they come
    from :func:`~hybridgate.privacy.registry.load_detectors`, which raises ``ConfigError`` at
    construction for an unknown detector or a missing Presidio. ``time_limit`` (seconds of
    ``clock``) bounds one scan. ``cache_entries`` texts of at least ``CACHE_MIN_CHARS``
    characters have their results remembered (0: no cache). More than ``max_findings`` in one
    scan fails it: such a request is sensitive whatever else it holds, and the cap bounds the
    work a flood of matches can cause.

    >>> scanner = Scanner(DetectionConfig())
    >>> scanner.scan_texts(["write to jane@example.org"]).kinds
    frozenset({'email'})
    """

    def __init__(
        self,
        config: DetectionConfig,
        detectors: Sequence[Detector] | None = None,
        *,
        time_limit: float | None = None,
        clock: Clock | None = None,
        cache_entries: int = 16384,
        max_findings: int = 10_000,
    ) -> None:
        self._config = config
        if detectors is not None:
            self._detectors = tuple(detectors)
        else:
            self._detectors = load_detectors(config) if config.enabled else ()
        self._names = tuple(d.name for d in self._detectors)
        self._kinds = tuple(d.kind for d in self._detectors)
        self._time_limit = time_limit
        self._clock = clock or SystemClock()
        self._cache = ScanCache(cache_entries) if cache_entries > 0 else None
        self._max_findings = max_findings

    @property
    def detectors(self) -> tuple[Detector, ...]:
        return self._detectors

    def scan(self, request: InferenceRequest) -> ScanResult:
        """Scan every text of ``request`` (never raises)."""
        images = sum(isinstance(p, ImagePart) for m in request.messages for p in m.content)
        return self._scan(list(request_texts(request)), images)

    def scan_texts(self, texts: Sequence[str]) -> ScanResult:
        """Scan embedding inputs (never raises); locations are ``Location(i, "input")``."""
        return self._scan([(Location(i, "input"), t) for i, t in enumerate(texts)], 0)

    def _scan(self, texts: Sequence[tuple[Location, str]], images: int) -> ScanResult:
        config = self._config
        if not config.enabled:
            if config.allow_unscanned:
                return ScanResult(scanned=False, unscanned_images=images)
            return ScanResult(
                failed=True, reason="detection is disabled", scanned=False, unscanned_images=images
            )
        if _utf8_size(texts, config.max_scan_bytes) > config.max_scan_bytes:
            reason = f"request exceeds max_scan_bytes ({config.max_scan_bytes})"
            return ScanResult(failed=True, reason=reason, scanned=False, unscanned_images=images)
        started = self._clock.monotonic()
        run = _Run(self._detectors, lambda: self._over_time(started), self._max_findings)
        try:
            findings = self._find(texts, run)
        except _Abort as abort:
            return ScanResult(failed=True, reason=str(abort), unscanned_images=images)
        # The fail-closed boundary: whatever a detector (built-in, third-party, Presidio) raises,
        # the request counts as sensitive. Only the exception's type is kept: its message could
        # quote the text being scanned.
        except Exception as exc:  # noqa: BLE001 - the one deliberate catch-all, see above
            reason = f"detector {run.current!r} raised {type(exc).__name__}"
            return ScanResult(failed=True, reason=reason, unscanned_images=images)
        return ScanResult(findings=findings, unscanned_images=images)

    def _find(self, texts: Sequence[tuple[Location, str]], run: _Run) -> tuple[Finding, ...]:
        cache = self._cache
        spans: list[Spans | None] = [None] * len(texts)
        keys: list[bytes | None] = [None] * len(texts)
        if cache is not None:
            for i, (_, text) in enumerate(texts):
                if len(text) >= CACHE_MIN_CHARS:
                    digest = ScanCache.key(text)
                    keys[i], spans[i] = digest, cache.get(digest)
        misses = [i for i, s in enumerate(spans) if s is None]
        if misses and self._detectors:
            for i, found in zip(misses, run.spans([scan_view(texts[i][1]) for i in misses]), strict=True):
                spans[i] = result = tuple(found)
                if cache is not None and (key := keys[i]) is not None:
                    cache.put(key, result)
        names, kinds = self._names, self._kinds
        return tuple(
            Finding(names[d], kinds[d], location, start, end)
            for (location, _), found in zip(texts, spans, strict=True)
            for d, start, end in sorted(found or (), key=_by_position)
        )

    def _over_time(self, started: float) -> bool:
        return self._time_limit is not None and self._clock.monotonic() - started > self._time_limit

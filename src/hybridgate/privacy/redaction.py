"""Reversible redaction: sensitive values out before a request leaves, back in the answer.

Each found value becomes a placeholder ``[KIND_n]`` (``[EMAIL_1]``, ``[SECRET_2]``): the same
value gets the same placeholder everywhere in the request, and a placeholder that already
occurs in the request's text is never used (the next free number is). Every occurrence of a
found value is replaced, not only the occurrences the detectors reported, so the redacted
request contains none of them. :class:`RedactionMap` maps placeholders back to values for the
answer (:meth:`RedactionMap.restore`, :meth:`RedactionMap.restore_completion`, and
:class:`~hybridgate.privacy.stream.StreamRestorer` for streams).

Tool-call arguments are JSON text: a value inside a JSON string is replaced in place (the
placeholder needs no escaping) and restored JSON-escaped; a value outside any string (a bare
number) is replaced by a quoted placeholder, so it comes back as a string. If the arguments
were valid JSON and would not stay so, :class:`RedactionError` is raised: redaction refuses
rather than send something it cannot vouch for.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeAlias

import orjson

from hybridgate.privacy.detectors import SEPARATOR
from hybridgate.privacy.scanner import Finding, Location, ScanResult, request_texts
from hybridgate.types import Completion, InferenceRequest, TextPart

PLACEHOLDER = re.compile(r"\[[A-Z][A-Z_]{0,40}_[0-9]{1,9}\]")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"', re.DOTALL)
_NON_LABEL = re.compile(r"[^A-Z]+")

Span = tuple[int, int, str]  # start, end, kind


class RedactionError(ValueError):
    """The request cannot be redacted safely; treat it as sensitive and do not send it."""


def placeholder_label(kind: str) -> str:
    """``payment_card`` -> ``PAYMENT_CARD``: the upper-case letters of a kind, ``_`` between."""
    return _NON_LABEL.sub("_", kind.upper()).strip("_")[:30] or "PII"


def json_escape(value: str) -> str:
    """``value`` as it appears inside a JSON string (without the quotes)."""
    return orjson.dumps(value).decode()[1:-1]


class RedactionMap:
    """Placeholders and the values they stand for, for one request. Immutable.

    It holds the sensitive values themselves: keep it in memory for the request's lifetime only.
    Its ``repr`` shows placeholders, never values.
    """

    __slots__ = ("_escaped", "_max_len", "_prefixes", "_values")

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})
        self._escaped = {p: json_escape(v) for p, v in self._values.items()}
        self._max_len = max((len(p) for p in self._values), default=0)
        self._prefixes = frozenset(p[:i] for p in self._values for i in range(1, len(p)))

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"RedactionMap({sorted(self._values)})"

    def restore(self, text: str) -> str:
        """Every known placeholder in ``text`` replaced by its value (unknown ones stay)."""
        if not self._values or "[" not in text:
            return text
        values = self._values
        return PLACEHOLDER.sub(lambda m: values.get(m.group(), m.group()), text)

    def restore_json(self, text: str) -> str:
        """Like :meth:`restore`, for JSON text: values are inserted JSON-escaped."""
        if not self._values or "[" not in text:
            return text
        escaped = self._escaped
        return PLACEHOLDER.sub(lambda m: escaped.get(m.group(), m.group()), text)

    def restore_completion(self, completion: Completion) -> Completion:
        """A copy of ``completion`` with its text and tool-call arguments restored."""
        if not self._values:
            return completion
        calls = tuple(
            dataclasses.replace(c, arguments=self.restore_json(c.arguments)) for c in completion.tool_calls
        )
        return dataclasses.replace(completion, text=self.restore(completion.text), tool_calls=calls)

    def hold_from(self, text: str) -> int:
        """Where the tail of ``text`` could be the start of a placeholder (``len(text)`` if not).

        Placeholders hold exactly one ``[``, so only the last one can begin a partial placeholder.
        """
        at = text.rfind("[", max(0, len(text) - self._max_len))
        return at if at != -1 and text[at:] in self._prefixes else len(text)


class _Assigner:
    """Hands out placeholders: one per distinct value, skipping those the request contains."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.values: dict[str, str] = {}  # placeholder -> value
        self.by_value: dict[str, str] = {}  # value -> placeholder
        self.found: set[str] = set()  # the values the scan found
        self.forms: dict[str, str] = {}  # a written form of a value -> its kind
        self.counters: dict[str, int] = {}

    def add_forms(self, value: str, raw: str, kind: str) -> None:
        """Remember how a found value is written, so that every occurrence can be replaced."""
        self.found.add(value)
        for form in (value, raw, json_escape(value)):
            self.forms.setdefault(form, kind)

    def assign(self, value: str, kind: str) -> str:
        placeholder = self.by_value.get(value)
        if placeholder is None:
            label = placeholder_label(kind)
            n = self.counters.get(label, 0) + 1
            while f"[{label}_{n}]" in self.taken:
                n += 1
            self.counters[label] = n
            placeholder = f"[{label}_{n}]"
            self.values[placeholder] = value
            self.by_value[value] = placeholder
        return placeholder


_Trie: TypeAlias = dict[str, "_Trie"]


def union_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """One pattern for any of ``words`` (the longest one at a position), built as a trie.

    A plain ``a|b|c...`` alternation makes the regex engine try every word at every position:
    seconds per megabyte for a few thousand values. The trie tries one branch per character.
    """
    trie: _Trie = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    try:
        return re.compile(_trie_source(trie))
    except RecursionError:  # thousands of nested branches: slower, but still correct
        return re.compile("|".join(map(re.escape, sorted(words, key=len, reverse=True))))


def occurrences(text: str, forms: Iterable[str]) -> Iterator[tuple[int, int, str]]:
    """(start, end, form) of every occurrence of every form; they may overlap.

    Few forms or a short text (the usual case): one ``str.find`` pass per form. Many forms in a
    long text: one pass of a trie-shaped pattern, whose cost grows far slower with their number.
    """
    forms = list(forms)
    if len(forms) * len(text) > _FIND_LOOP_BUDGET:
        yield from TrieSearch(forms).spans(text)
        return
    for form in forms:
        at = text.find(form)
        while at != -1:
            yield at, at + len(form), form
            at = text.find(form, at + len(form))


# Forms x characters below which find passes beat compiling a trie (str.find runs at about
# 5 GB/s; a trie costs ~55 us per form to compile and ~20-50 ns per character to run).
_FIND_LOOP_BUDGET = 512 * 1024 * 1024


class TrieSearch:
    """Every occurrence of any of ``forms`` in a text, the longest form where several start.

    The regex holds only the first ``PREFIX`` characters of each form (a PEM key is kilobytes,
    and compiling a pattern costs microseconds per character); the rest is checked with
    ``str.startswith`` at each candidate.
    """

    PREFIX = 24

    def __init__(self, forms: Iterable[str]) -> None:
        self._by_prefix: dict[str, list[str]] = {}
        for form in forms:
            self._by_prefix.setdefault(form[: self.PREFIX], []).append(form)
        for candidates in self._by_prefix.values():
            candidates.sort(key=len, reverse=True)
        self._pattern = union_pattern(self._by_prefix)

    def spans(self, text: str) -> Iterator[tuple[int, int, str]]:
        """(start, end, form) of each occurrence, left to right, not overlapping."""
        at = 0
        while (match := self._pattern.search(text, at)) is not None:
            start, found = match.start(), None
            head = match.group()
            for n in range(len(head), 0, -1):  # this prefix, then any shorter one that is a form's
                for form in self._by_prefix.get(head[:n], ()):
                    if text.startswith(form, start) and (found is None or len(form) > len(found)):
                        found = form
            if found is None:
                at = start + 1
                continue
            yield start, start + len(found), found
            at = start + len(found)


def _trie_source(node: _Trie) -> str:
    alternatives = []
    for ch, child in sorted(node.items()):
        if not ch:
            continue
        run = ch
        while len(child) == 1 and "" not in child:  # a chain without branches: one literal
            ((next_ch, child),) = child.items()
            run += next_ch
        alternatives.append(re.escape(run) + _trie_source(child))
    if not alternatives:
        return ""
    body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
    return f"(?:{body})?" if "" in node else body


def _widen(text: str, start: int, end: int) -> tuple[int, int]:
    """Grow a span of JSON text so that it neither starts nor ends inside an escape sequence."""

    def escapes(at: int) -> bool:  # is text[at] a backslash that starts an escape?
        run = 0
        while at - run - 1 >= 0 and text[at - run - 1] == "\\":
            run += 1
        return run % 2 == 0

    u = text.rfind("\\u", max(0, start - 5), start)
    if u != -1 and escapes(u):
        start = u
    elif start > 0 and text[start - 1] == "\\" and escapes(start - 1):
        start -= 1
    u = text.rfind("\\u", max(start, end - 5), end)
    if u != -1 and escapes(u) and end < u + 6:
        end = min(len(text), u + 6)
    elif text[end - 1] == "\\" and escapes(end - 1):
        end = min(len(text), end + 1)
    return start, end


def _merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping spans joined; a joined span keeps the kind of its longest member."""
    merged: list[tuple[int, int, str, int]] = []
    for start, end, kind in sorted(spans):
        if merged and start < merged[-1][1]:
            s, e, k, longest = merged[-1]
            if end - start > longest:
                k, longest = kind, end - start
            merged[-1] = (s, max(e, end), k, longest)
        else:
            merged.append((start, end, kind, end - start))
    return [(s, e, k) for s, e, k, _ in merged]


def _logical(raw: str, is_json: bool) -> str:
    """The value a span of text stands for: JSON escapes decoded inside tool arguments."""
    if not is_json or "\\" not in raw:
        return raw
    try:
        value = orjson.loads(f'"{raw}"')
    except orjson.JSONDecodeError:
        return raw
    return value if isinstance(value, str) else raw


def _rewrite(text: str, spans: list[Span], is_json: bool, assigner: _Assigner) -> str:
    strings = [m.span() for m in _JSON_STRING.finditer(text)] if is_json else []
    starts = [s for s, _ in strings]
    pieces: list[str] = []
    at = 0
    for start, end, kind in spans:
        placeholder = assigner.assign(_logical(text[start:end], is_json), kind)
        if is_json:
            i = bisect.bisect_right(starts, start) - 1
            inside = i >= 0 and strings[i][0] < start and end < strings[i][1]
            if not inside:
                j = bisect.bisect_left(starts, end)
                if (i >= 0 and strings[i][1] > start) or any(
                    strings[k][1] > start for k in range(max(i, 0), j)
                ):
                    raise RedactionError(
                        f"a sensitive value straddles JSON strings in tool arguments ({kind})"
                    )
                placeholder = f'"{placeholder}"'
        pieces += (text[at:start], placeholder)
        at = end
    pieces.append(text[at:])
    return "".join(pieces)


class Redactor:
    """Replaces what a scan found with placeholders (see the module docstring).

        >>> from hybridgate.config.governance import DetectionConfig
        >>> from hybridgate.privacy.detectors import SEPARATOR
    from hybridgate.privacy.scanner import Scanner
        >>> texts = ["mail jane@example.org or jane@example.org"]
        >>> redacted, mapping = Redactor().redact_texts(texts, Scanner(DetectionConfig()).scan_texts(texts))
        >>> redacted, mapping.restore(redacted[0]) == texts[0]
        (('mail [EMAIL_1] or [EMAIL_1]',), True)

        More than ``max_values`` distinct values is a :class:`RedactionError`: finding every other
        occurrence of each costs about 60 µs per value, and a request carrying thousands of personal
        records is one to keep local rather than send out in disguise.
    """

    def __init__(self, max_values: int = 2000) -> None:
        self._max_values = max_values

    def redact(self, request: InferenceRequest, scan: ScanResult) -> tuple[InferenceRequest, RedactionMap]:
        """The request with every found value replaced, and the map to restore the answer.

        Raises :class:`RedactionError` when the scan failed (nothing can vouch for the request),
        its findings do not fit the request, there are more than ``max_values`` distinct values,
        or tool arguments would stop being valid JSON.
        """
        texts = list(request_texts(request))
        rewritten, mapping = self._redact(texts, scan)
        if not rewritten:
            return request, mapping
        messages = list(request.messages)
        for location, new_text in rewritten.items():
            message = messages[location.index]
            if location.field == "content":
                content = list(message.content)
                content[location.sub] = TextPart(new_text)
                messages[location.index] = dataclasses.replace(message, content=tuple(content))
            else:
                calls = list(message.tool_calls)
                calls[location.sub] = dataclasses.replace(calls[location.sub], arguments=new_text)
                messages[location.index] = dataclasses.replace(message, tool_calls=tuple(calls))
        return dataclasses.replace(request, messages=tuple(messages)), mapping

    def redact_texts(self, texts: Sequence[str], scan: ScanResult) -> tuple[tuple[str, ...], RedactionMap]:
        """Embedding inputs with every found value replaced (``scan`` from ``scan_texts``)."""
        located = [(Location(i, "input"), t) for i, t in enumerate(texts)]
        rewritten, mapping = self._redact(located, scan)
        return tuple(rewritten.get(loc, t) for loc, t in located), mapping

    def _redact(
        self, texts: list[tuple[Location, str]], scan: ScanResult
    ) -> tuple[dict[Location, str], RedactionMap]:
        if scan.failed:
            raise RedactionError(f"cannot redact a request whose scan failed ({scan.reason})")
        if not scan.findings:
            return {}, RedactionMap()
        text_of = dict(texts)
        found = self._found_spans(text_of, scan.findings)
        # One string for the searches below: a request holds hundreds of short texts.
        joined = SEPARATOR.join(t for _, t in texts)
        starts = list(itertools.accumulate((len(t) + len(SEPARATOR) for _, t in texts[:-1]), initial=0))
        assigner = _Assigner({m.group() for m in PLACEHOLDER.finditer(joined)})
        for location, spans in found.items():
            is_json = location.field == "arguments"
            for start, end, kind in spans:  # each finding, before overlapping ones are joined
                raw = text_of[location][start:end]
                assigner.add_forms(_logical(raw, is_json), raw, kind)
            found[location] = _merge(spans)
        if len(assigner.found) > self._max_values:
            raise RedactionError(f"more than {self._max_values} distinct values to redact")
        # Every written form of every value, wherever it occurs (no form holds a NUL, so no
        # occurrence crosses from one text into the next).
        elsewhere: dict[int, list[Span]] = {}
        for start, end, form in occurrences(joined, assigner.forms):
            i = bisect.bisect_right(starts, start) - 1
            elsewhere.setdefault(i, []).append((start - starts[i], end - starts[i], assigner.forms[form]))
        rewritten: dict[Location, str] = {}
        for i, (location, text) in enumerate(texts):
            spans = found.get(location, []) + elsewhere.get(i, [])
            if spans:
                rewritten[location] = self._rewrite_checked(text, _merge(spans), location, assigner)
        return rewritten, RedactionMap(assigner.values)

    @staticmethod
    def _found_spans(
        text_of: Mapping[Location, str], findings: Iterable[Finding]
    ) -> dict[Location, list[Span]]:
        found: dict[Location, list[Span]] = {}
        for f in findings:
            text = text_of.get(f.location)
            if text is None or not 0 <= f.start < f.end <= len(text):
                raise RedactionError(f"a finding does not fit the request ({f.location})")
            start, end = (f.start, f.end) if f.location.field != "arguments" else _widen(text, f.start, f.end)
            found.setdefault(f.location, []).append((start, end, f.kind))
        return found

    @staticmethod
    def _rewrite_checked(text: str, spans: list[Span], location: Location, assigner: _Assigner) -> str:
        is_json = location.field == "arguments"
        new_text = _rewrite(text, spans, is_json, assigner)
        if is_json:
            try:
                orjson.loads(text)
            except orjson.JSONDecodeError:
                return new_text  # it was not JSON before either
            try:
                orjson.loads(new_text)
            except orjson.JSONDecodeError as exc:
                raise RedactionError(f"redacting {location} would break its JSON") from exc
        return new_text

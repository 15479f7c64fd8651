"""The detector protocol and the built-in detectors of contact, financial and network data.

A detector is anything with a ``name``, a ``kind`` (the category explanations show) and a
``find(text)`` that yields ``(start, end)`` spans. The built-ins are :class:`PatternDetector`
instances: one precompiled regular expression that only proposes candidates, and a Python
validator (checksum, range rules, context) that accepts, trims or rejects each of them.

Every pattern here is written to run in linear time on any input. A match can only start at
the beginning of a token: a look-behind checks the character before the first one (a run of
10^6 digits offers one start, not 10^6). The look-behind comes right *after* the first
character, so that the regex engine can still skip quickly to positions where that character
occurs. Quantifiers are bounded, over character classes that do not overlap with what follows
them (a failed attempt gives back a bounded number of characters), and possessive
(``{m,n}+``) wherever giving characters back can never lead to a match. A detector may declare
``required`` substrings: when none occurs in a text, its pattern does not run at all (``'@' in
text`` costs a fraction of a millisecond per megabyte).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from hybridgate.privacy import validators as v

#: The categories of the built-in detectors; third-party detectors may add their own.
BUILTIN_KINDS = ("email", "phone", "payment_card", "iban", "national_id", "ip_address", "secret")


#: The scanner joins the texts of a request with this and runs each detector once over the
#: whole. No value contains a NUL; a detector must not let a match or the context it looks at
#: (a label before a number) cross one: :func:`context_before` stops there.
SEPARATOR = "\n\x00\n"


def context_before(text: str, start: int, width: int) -> str:
    """Up to ``width`` characters before ``start``, not reaching back past a NUL separator."""
    before = text[max(0, start - width) : start]
    return before[before.rfind("\x00") + 1 :]


@runtime_checkable
class Detector(Protocol):
    """Finds sensitive values of one kind in a text.

    ``find`` returns ``(start, end)`` spans into ``text`` (end exclusive). It must run in time
    linear in ``len(text)`` and may raise: the scanner turns any exception into a failed scan.
    ``text`` may hold several texts joined by :data:`SEPARATOR`; spans that cross one are
    clipped to the first text.
    """

    @property
    def name(self) -> str:
        """Unique name, as used in the ``detectors`` list of the config."""
        ...

    @property
    def kind(self) -> str:
        """Category shown in explanations (``email``, ``secret``, ...)."""
        ...

    def find(self, text: str) -> Iterable[tuple[int, int]]:
        """Spans of the values found in ``text``."""
        ...


Validator = Callable[[re.Match[str]], tuple[int, int] | None]

# Most detectors look for numbers; most prompts hold none. One search decides for all of them.
HAS_DIGIT = re.compile(r"[0-9]").search


@dataclass(frozen=True, slots=True)
class PatternDetector:
    """A regular expression proposing candidates and a validator deciding on each.

    ``validate(match)`` returns the span to report (possibly narrower than the match) or None.
    Without a validator every match is reported whole. ``required``: the pattern runs only on
    texts that contain at least one of these substrings.
    """

    name: str
    kind: str
    pattern: re.Pattern[str]
    validate: Validator | None = None
    required: tuple[str, ...] = ()
    digits: bool = False  # every value holds a digit: skip texts without one

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if self.required and not any(s in text for s in self.required):
            return
        if self.digits and HAS_DIGIT(text) is None:
            return
        validate = self.validate
        for match in self.pattern.finditer(text):
            span = match.span() if validate is None else validate(match)
            if span is not None:
                yield span


# --------------------------------------------------------------------------- email

_URL_AUTHORITY = re.compile(r"[^\s/?#\"'<>]*")
# File names such as logo@2x.png look like addresses; these are not top-level domains.
_ASSET_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js", "map", "bmp"})


def _email(match: re.Match[str]) -> tuple[int, int] | None:
    start, end = match.span()
    text = match.string
    while start < end and text[start] in ".-+%":  # the look-behind admits leading punctuation
        start += 1
    if (
        text[start] == "@"
        or match.group("tld").lower() in _ASSET_SUFFIXES
        or text[start:end].startswith("git@")
    ):
        return None
    # The user info of a URL (ssh://git@host, postgres://user:pw@host) is not an address.
    scheme = text.rfind("://", max(0, start - 300), start)
    if scheme != -1 and _URL_AUTHORITY.fullmatch(text, scheme + 3, start):
        return None
    return start, end


@dataclass(frozen=True, slots=True)
class WindowedDetector:
    """A :class:`PatternDetector` run only near the matches of a cheap ``gate`` pattern.

    The gate starts with a literal (``@``, ``:``) that the regex engine finds with a substring
    search; the detector's own pattern then runs on windows of ``before``/``after`` characters
    around each gate match (merged where they overlap). Where the gate matches densely (more
    than once per ``DENSE`` characters), the pattern runs over the whole text instead, so the
    Python work stays bounded and the cost linear.
    """

    inner: PatternDetector
    gate: re.Pattern[str]
    before: int
    after: int

    DENSE: ClassVar[int] = 256

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def kind(self) -> str:
        return self.inner.kind

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        # ``in`` is a memchr-speed search, many times faster than the regex engine's own.
        if self.inner.required and not any(s in text for s in self.inner.required):
            return
        budget = len(text) // self.DENSE + 1
        windows: list[tuple[int, int]] = []
        for hit in self.gate.finditer(text):
            budget -= 1
            if budget < 0:
                windows = [(0, len(text))]
                break
            lo, hi = max(0, hit.start() - self.before), min(len(text), hit.end() + self.after)
            if windows and lo <= windows[-1][1]:
                windows[-1] = (windows[-1][0], hi)
            else:
                windows.append((lo, hi))
        for lo, hi in windows:
            yield from _matches(self.inner.pattern, self.inner.validate, text, lo, hi)


def _matches(
    pattern: re.Pattern[str], validate: Validator | None, text: str, start: int, stop: int
) -> Iterator[tuple[int, int]]:
    for match in pattern.finditer(text, start, stop):
        span = match.span() if validate is None else validate(match)
        if span is not None:
            yield span


def email() -> WindowedDetector:
    """E-mail addresses: ``local@domain.tld`` (local part up to 64 characters, up to 8 labels)."""
    pattern = re.compile(
        r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}+@"
        r"(?:[A-Za-z0-9\-]{1,63}+\.){1,8}(?P<tld>[A-Za-z]{2,24}+)(?![A-Za-z0-9\-]|\.[A-Za-z0-9])"
    )
    # A window reaches the longest address the pattern accepts, and the look-ahead after it.
    return WindowedDetector(
        PatternDetector("email", "email", pattern, _email, ("@",)), re.compile("@"), 65, 8 * 64 + 30
    )


# --------------------------------------------------------------------------- payment cards

_IBAN_BEFORE = re.compile(r"[A-Z]{2}[0-9]{2}(?: [A-Z0-9]{4}){0,7} \Z")


def after_iban_groups(text: str, start: int) -> bool:
    """Whether ``text[start:]`` continues an IBAN printed in groups (``GB82 WEST 1234 ...``):
    digits there belong to the IBAN, not to a card or phone number."""
    return start > 4 and _IBAN_BEFORE.search(text, max(0, start - 45), start) is not None


def _card_grouping_ok(lengths: list[int]) -> bool:
    """Printed card groupings: one block, 4-4-4-4(-n), or 4-6-5 / 4-6-4 (Amex, Diners)."""
    if len(lengths) == 1:
        return True
    if len(lengths) >= 4 and lengths[:-1] == [4] * (len(lengths) - 1):
        return 1 <= lengths[-1] <= 4
    return lengths in ([4, 6, 5], [4, 6, 4])


def _card(match: re.Match[str]) -> tuple[int, int] | None:
    candidate = match.group()
    sep = match.group("s") or match.group("t")
    if sep is None:
        return match.span() if v.card_brand_plausible(candidate) and v.luhn_valid(candidate) else None
    groups = candidate.split(sep)
    offsets = [0]
    for group in groups[:-1]:
        offsets.append(offsets[-1] + len(group) + 1)
    # Five groups of four: a card next to a year or a count (2024 4111 1111 1111 1111).
    windows = [(0, len(groups))] if len(candidate) - 4 * len(sep) <= 19 else [(1, 5), (0, 4)]
    for first, final in windows:
        window = groups[first:final]
        if not _card_grouping_ok([len(g) for g in window]):
            continue
        digits = "".join(window)
        start = match.start() + offsets[first]
        if (
            v.card_brand_plausible(digits)
            and v.luhn_valid(digits)
            and not after_iban_groups(match.string, start)
        ):
            return start, start + len(sep.join(window))
    return None


def payment_card() -> PatternDetector:
    """Payment card numbers: 13-19 digits, in one block or printed groups (spaces or dashes),
    Luhn-valid, with an issuer prefix and length that a card scheme uses."""
    pattern = re.compile(
        r"[0-9](?<![A-Za-z0-9_.\-][0-9])"
        r"(?:[0-9]{12,18}+"
        r"|[0-9]{3}(?P<s>[ \-])[0-9]{4}(?P=s)[0-9]{4}(?P=s)[0-9]{1,4}+(?:(?P=s)[0-9]{1,4}+)?"
        r"|[0-9]{3}(?P<t>[ \-])[0-9]{6}(?P=t)[0-9]{4,5})"
        r"(?![A-Za-z0-9_]|[.,\-][0-9])"
    )
    return PatternDetector("payment_card", "payment_card", pattern, _card, digits=True)


# --------------------------------------------------------------------------- IBAN


def _iban(match: re.Match[str]) -> tuple[int, int] | None:
    candidate = match.group()
    expected = v.IBAN_LENGTHS.get(candidate[:2])
    if expected is None:
        return None
    taken = 0
    for i, ch in enumerate(candidate):
        if ch != " ":
            taken += 1
            if taken == expected:
                end = i + 1
                break
    else:
        return None
    # The IBAN must end at a group boundary of the candidate and at a token boundary of the text.
    if end < len(candidate) and candidate[end] != " ":
        return None
    text, stop = match.string, match.start() + end
    if stop < len(text) and (text[stop].isalnum() or text[stop] == "_"):
        return None
    if not v.iban_valid(candidate[:end].replace(" ", "")):
        return None
    return match.start(), stop


def iban() -> PatternDetector:
    """IBANs, compact or in groups: country length table and mod-97 checksum."""
    pattern = re.compile(r"[A-Z](?<![A-Za-z0-9_][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]){10,30}+")
    return PatternDetector("iban", "iban", pattern, _iban, digits=True)


# --------------------------------------------------------------------------- US SSN

_SSN_CONTEXT = ("ssn", "social security", "ss#", "ss #", "soc. sec")


def _ssn(match: re.Match[str]) -> tuple[int, int] | None:
    if match.group("plain") is not None:
        before = context_before(match.string, match.start(), 32).lower()
        if not any(word in before for word in _SSN_CONTEXT):
            return None
        digits = match.group()
        parts = digits[:3], digits[3:5], digits[5:]
    else:
        parts = match.group()[:3], match.group("group"), match.group("serial")
    return match.span() if v.ssn_valid(*parts) else None


def us_ssn() -> PatternDetector:
    """US social security numbers ``AAA-GG-SSSS`` (or with spaces; nine plain digits only right
    after a label such as "SSN"), excluding the ranges the SSA never issues."""
    pattern = re.compile(
        r"[0-9](?<![A-Za-z0-9_.\-/+][0-9])"
        r"(?:[0-9]{2}(?P<sep>[\- ])(?P<group>[0-9]{2})(?P=sep)(?P<serial>[0-9]{4})|(?P<plain>[0-9]{8}))"
        r"(?![A-Za-z0-9_]|[.\-/][0-9])"
    )
    return PatternDetector("us_ssn", "national_id", pattern, _ssn, digits=True)


# --------------------------------------------------------------------------- IP addresses

_LETTERS = re.compile(r"[a-z]+")
_VERSION_WORDS = ("version", "ver", "v", "release", "build", "firmware", "rev", "chrome", "firefox")


def _ipv4(match: re.Match[str]) -> tuple[int, int] | None:
    if not v.ipv4_public_enough(tuple(match.group().split("."))):
        return None
    text, start = match.string, match.start()
    # "Chrome/120.0.6099.1" or "version 1.2.3.4" name a version, not a host.
    if start > 1 and text[start - 1] == "/" and text[start - 2] != "/":
        return None
    words = _LETTERS.findall(context_before(text, start, 16).lower())
    return None if words and words[-1] in _VERSION_WORDS else match.span()


def ipv4() -> PatternDetector:
    """IPv4 addresses in dotted-quad form with valid octets (not loopback, netmask or versions)."""
    pattern = re.compile(
        r"[0-9](?<![A-Za-z0-9_.\-][0-9])[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![A-Za-z0-9_]|\.[0-9])"
    )
    return PatternDetector("ipv4", "ip_address", pattern, _ipv4, required=(".",), digits=True)


def _ipv6(match: re.Match[str]) -> tuple[int, int] | None:
    start, end = match.span()
    while end > start and match.string[end - 1] == ".":
        end -= 1
    return (start, end) if v.ipv6_plausible(match.string[start:end]) else None


def ipv6() -> WindowedDetector:
    """IPv6 addresses (full, compressed, IPv4-embedded) that :mod:`ipaddress` parses."""
    pattern = re.compile(
        r"(?<![A-Za-z0-9_:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:.]{3,45}+"
        r"(?![A-Za-z0-9_:])"
    )
    # Every IPv6 address holds "::" or ":h:" (one to four hex digits between colons).
    gate = re.compile(r":(?::|[0-9A-Fa-f]{1,4}:)")
    return WindowedDetector(PatternDetector("ipv6", "ip_address", pattern, _ipv6, (":",)), gate, 46, 46)

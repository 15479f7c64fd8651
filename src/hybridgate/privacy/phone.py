"""Phone numbers: international ``+CC ...``, NANP and trunk-prefixed national formats.

Precision matters more here than anywhere: numbers are everywhere in agent traffic (order
numbers, dates, versions, amounts, IDs). So a candidate must have the *shape* of a written
phone number, not just enough digits:

* international: ``+`` and a country code, then groups; 8-15 digits in all (E.164), a national
  trunk ``(0)`` allowed (``+44 (0)20 7946 0958``); without any separator at least 10 digits;
* NANP: ``(415) 555-2671``, ``415-555-2671``, ``415.555.2671``, ``1-415-555-2671``;
* national with a trunk ``0``: at least two groups, 9-12 digits (``020 7946 0958``,
  ``(0161) 496 0066``, ``06 12 34 56 78``, ``030/12345678``);
* plain digits: ten or eleven with a trunk ``0`` (``07700900123``); otherwise nine to
  fifteen only right after a word such as "phone", "call", "tel", "Telefonnummer".

Extensions (``x123``, ``ext. 45``) belong to the number. A candidate glued to letters, or to
``-``, ``.``, ``/`` and more digits (``ORD-555-123-4567``, ``2024-01-15``, ``1.2.3``) is not one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from hybridgate.privacy.detectors import HAS_DIGIT, after_iban_groups, context_before

_SSN_OR_ZIP = re.compile(r"0[0-9]{2}-[0-9]{2}-[0-9]{4}|0[0-9]{4}-[0-9]{4}")
_WORD = re.compile(r"[a-zà-ÿ]+")
_KEYWORDS = frozenset(
    {"tel", "call", "sms", "text", "fax", "dial", "ph", "mob", "cell", "tlf", "ring", "portable"}
)
_KEYWORD_STEMS = ("phone", "telef", "téléf", "teléf", "mobil", "móvil", "handy", "whatsapp", "cellul")
# Compact national numbers with a trunk prefix (07700900123, 0612345678) need no label.
_COMPACT_NATIONAL = re.compile(r"0[1-9][0-9]{8,9}")


def _digits(s: str) -> int:
    return sum(1 for c in s if "0" <= c <= "9")


def _keyword_before(text: str, start: int) -> bool:
    # The last few words only: "Tel. No.:", "call me on", "Handy-Nr."
    words = _WORD.findall(context_before(text, start, 40).lower())[-4:]
    return any(w in _KEYWORDS or any(stem in w for stem in _KEYWORD_STEMS) for w in words)


def _accept(match: re.Match[str]) -> bool:
    body = match.string[match.start() : match.end("body")]
    shape = match.groupdict()
    if shape.get("intl") is not None:
        n = _digits(body) - body.count("(0)")
        compact = not any(c in body for c in " .-()")
        return 10 <= n <= 15 if compact else 8 <= n <= 15
    if after_iban_groups(match.string, match.start()):
        return False
    if shape.get("nanp") is not None:
        return True
    if shape.get("trunk") is not None:
        # 0AA-GG-SSSS is an SSN and 0NNNN-NNNN a ZIP+4 code far more often than a phone number.
        return 9 <= _digits(body) <= 12 and _SSN_OR_ZIP.fullmatch(body) is None
    return _COMPACT_NATIONAL.fullmatch(body) is not None or _keyword_before(match.string, match.start())


# After the number: an optional extension, then no letter or digit, and no [.-/:] + digit.
_END = r"(?:[ ]?(?:x|ext\.?|extension|\#)[ ]?[0-9]{1,6}+)?(?![A-Za-z0-9_]|[.\-/:][0-9])"
# The first character is matched first, so that the engine can skip to candidates quickly;
# the look-behind after it checks the character before it.
_BOUNDARY = r"(?<![A-Za-z0-9_+.\-/]{first})"
_NANP_TAIL = r"[0-9]{3}[ .\-][0-9]{4}"
_GROUPS = r"[0-9]{2,8}+(?:[ .\-][0-9]{2,8}+){0,4}+"

_PLUS = (
    r"\+"
    + _BOUNDARY.format(first=r"\+")
    + r"(?P<body>(?P<intl>[0-9]{1,3}(?:[ .\-]?\(0\))?(?:[ .\-]?\(?[0-9]{1,6}+\)?){1,7}+))"
    + _END
)
_PAREN = (
    r"\("
    + _BOUNDARY.format(first=r"\(")
    + r"(?P<body>(?P<nanp>[0-9]{3}\)[ .\-]?"
    + _NANP_TAIL
    + r")"
    + r"|(?P<trunk>0[0-9]{1,4}\)[ \-]?"
    + _GROUPS
    + r"))"
    + _END
)
# Trunk-prefixed and plain numbers must not continue a run of digit groups (a card, an IBAN,
# a table of numbers): "4532 0842 1214 2240" holds no phone number.
_NOT_CONTINUED = r"(?<![0-9][ .\-][0-9])"
_DIGIT = (
    r"[0-9]" + _BOUNDARY.format(first="[0-9]")
    + r"(?P<body>(?P<nanp>[0-9]{2}[ .\-]" + _NANP_TAIL
    + r"|(?:(?<=1)|(?<=0)01)[ .\-](?:\([0-9]{3}\)[ .\-]?|[0-9]{3}[ .\-])" + _NANP_TAIL + r")"
    + r"|(?P<trunk>(?<=0)" + _NOT_CONTINUED + r"[0-9]{1,4}[ .\-/]" + _GROUPS + r")"
    + r"|(?P<plain>" + _NOT_CONTINUED + r"[0-9]{8,14}+))" + _END
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PhoneDetector:
    """Phone numbers in written form (the shapes of the module docstring).

    Three patterns, by first character (``+``, ``(``, digit), each of which the regex engine
    can skip to; a span inside an earlier one (``415 555 2671`` in ``+1 415 555 2671``) is
    dropped.
    """

    name: str
    kind: str
    patterns: tuple[re.Pattern[str], ...]

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if HAS_DIGIT(text) is None:
            return
        spans = sorted(m.span() for p in self.patterns for m in p.finditer(text) if _accept(m))
        end = -1
        for span in spans:
            if span[0] >= end:
                yield span
                end = span[1]


def phone() -> PhoneDetector:
    """The phone number detector (see :class:`PhoneDetector`)."""
    return PhoneDetector("phone", "phone", tuple(re.compile(p) for p in (_PLUS, _PAREN, _DIGIT)))

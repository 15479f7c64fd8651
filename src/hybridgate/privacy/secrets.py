"""Credentials: API keys of well-known formats, JWTs, PEM private keys, passwords in URLs.

Every pattern is anchored on a literal that ordinary prose rarely contains (``sk-``, ``AKIA``,
``eyJ``, ``-----BEGIN``, ``://``), and the detectors check for those literals before running
their pattern, so text without credentials costs a few substring searches.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from hybridgate.privacy.detectors import PatternDetector

_PLACEHOLDER_WORDS = ("example", "xxxx", "your", "placeholder", "redacted", "dummy", "changeme")


def _random_looking(body: str) -> bool:
    """Mixed letters and digits, varied characters, no placeholder words: what issued keys are."""
    lowered = body.lower()
    return (
        any(c.isdigit() for c in body)
        and any(c.isalpha() for c in body)
        and len(set(body)) >= 10
        and not any(word in lowered for word in _PLACEHOLDER_WORDS)
    )


def _near(text: str, start: int, end: int, reach: int, before: int | None = None) -> tuple[int, int]:
    """The window ``reach`` characters around ``text[start:end]`` (``before``: to the left),
    within the one text of a joined request that holds it."""
    lo = max(0, start - (reach if before is None else before))
    hi = min(len(text), end + reach)
    lo = text.rfind("\x00", lo, start) + 1 or lo
    nul = text.find("\x00", end, hi)
    return lo, hi if nul == -1 else nul


# (family, prefix, rest of the pattern). Each pattern starts with its literal prefix, so the
# regex engine finds candidates with a substring search; the look-behind after the prefix
# checks that the key starts a token.
_KEY_FORMATS = (
    ("anthropic", "sk-ant-", r"[A-Za-z0-9_\-]{20,250}+"),
    ("openai", "sk-", r"(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,250}+"),
    *(("aws", prefix, r"[A-Z2-7]{16}") for prefix in ("AKIA", "ASIA", "ABIA", "ACCA")),
    ("github", "gh", r"[pousr]_[A-Za-z0-9]{36}"),
    ("github", "github_pat_", r"[A-Za-z0-9_]{22,255}+"),
    ("slack", "xox", r"[abprs]-[A-Za-z0-9\-]{10,250}+"),
    ("google", "AIza", r"[0-9A-Za-z_\-]{35}"),
    *(("stripe", prefix, r"[0-9A-Za-z]{16,247}+") for prefix in ("sk_live_", "rk_live_")),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ApiKeyDetector:
    """API keys: OpenAI ``sk-``/``sk-proj-``, Anthropic ``sk-ant-``, AWS access key ids
    (``AKIA``/``ASIA``...) and the 40-character secret keys next to them or after a "secret"
    label, GitHub ``ghp_``/``github_pat_``, Slack ``xox[abprs]-``, Google ``AIza``, Stripe
    ``sk_live_``/``rk_live_``. Keys whose body looks like a placeholder are skipped, and so
    are the AWS documentation's ``...EXAMPLE`` keys."""

    name: str
    kind: str
    keys: tuple[tuple[str, re.Pattern[str]], ...]  # (family, pattern)
    aws_secret: re.Pattern[str]
    prefixes: re.Pattern[str]  # any key format's literal prefix

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        anchors: list[tuple[int, int]] = []
        # One search tells whether any key format's prefix occurs (most texts: none), instead of
        # one search per format; the "secret" labels below are checked either way.
        formats = self.keys if self.prefixes.search(text) is not None else ()
        for family, pattern in formats:
            for match in pattern.finditer(text):
                if family == "aws":
                    if match.group().endswith("EXAMPLE"):
                        continue
                    anchors.append(_near(text, match.start(), match.end(), 300))
                elif family not in ("google", "github") and not _random_looking(match.group()):
                    continue
                yield match.span()
        for label in ("secret", "Secret", "SECRET"):
            if text.count(label) * 80 >= len(text):  # dense: one window over everything
                anchors.append((0, len(text)))
                continue
            at = text.find(label)
            while at != -1:
                anchors.append(_near(text, at, at + len(label), 80, before=0))
                at = text.find(label, at + 1)
        yield from self._aws_secrets(text, anchors)

    def _aws_secrets(self, text: str, anchors: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
        """40-character AWS secret access keys, searched only near their anchors (merged)."""
        anchors.sort()
        stop = -1
        for start, end in anchors:
            start, end = max(start, stop, 0), min(end, len(text))
            if start >= end:
                continue
            stop = end
            for match in self.aws_secret.finditer(text, start, end):
                key = match.group()
                # Issued keys are random: both cases and many distinct characters (a hex
                # digest has no upper case; a word run has few distinct letters).
                if (
                    any(c.isupper() for c in key)
                    and any(c.islower() for c in key)
                    and len(set(key)) >= 16
                    and "EXAMPLE" not in key
                ):
                    yield match.span()


def api_key() -> ApiKeyDetector:
    """The API key detector (see :class:`ApiKeyDetector`)."""
    keys = tuple(
        (
            family,
            re.compile(
                f"{re.escape(prefix)}(?<![A-Za-z0-9_\\-]{re.escape(prefix)}){rest}(?![A-Za-z0-9_\\-])"
            ),
        )
        for family, prefix, rest in _KEY_FORMATS
    )
    # Not a piece of a longer token (base64url, a JWT): no "-", "_" or "." glued to either end.
    aws_secret = re.compile(r"(?<![A-Za-z0-9/+_.\-])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=_\-]|\.[A-Za-z0-9])")
    prefixes = re.compile(
        "|".join(sorted({re.escape(prefix) for _, prefix, _ in _KEY_FORMATS}, key=len, reverse=True))
    )
    return ApiKeyDetector("api_key", "secret", keys, aws_secret, prefixes)


# --------------------------------------------------------------------------- JWT


def _jwt(match: re.Match[str]) -> tuple[int, int] | None:
    header = match.group("header")
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
        return None
    return match.span() if isinstance(decoded, dict) and isinstance(decoded.get("alg"), str) else None


def jwt() -> PatternDetector:
    """JSON Web Tokens: three base64url segments whose header decodes to JSON with ``alg``."""
    pattern = re.compile(
        r"(?P<header>eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{5,4096}+)\.[A-Za-z0-9_\-]{2,16384}+"
        r"\.[A-Za-z0-9_\-]{0,4096}+(?![A-Za-z0-9_\-])"
    )
    return PatternDetector("jwt", "secret", pattern, _jwt, required=("eyJ",))


# --------------------------------------------------------------------------- PEM private keys

_PEM_SEARCH = 64 * 1024


@dataclass(frozen=True, slots=True)
class PrivateKeyDetector:
    """PEM private-key blocks (``-----BEGIN [RSA|EC|OPENSSH|ENCRYPTED|...] PRIVATE KEY-----``),
    from BEGIN to the matching END line. A block without its END line (truncated, or cut by a
    tool) is reported up to the end of its base64 body. Public keys and certificates are not."""

    name: str
    kind: str
    begin: re.Pattern[str]
    body: re.Pattern[str]

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        if "PRIVATE KEY" not in text:
            return
        begins = list(self.begin.finditer(text))
        for i, match in enumerate(begins):
            # Blocks do not nest: the END line lies before the next BEGIN, which bounds the search.
            limit = min(
                begins[i + 1].start() if i + 1 < len(begins) else len(text), match.end() + _PEM_SEARCH
            )
            marker = f"-----END {match.group('label')}-----"
            # ... and within one text (NUL) and one JSON string (no PEM holds a quote)
            for stop in ("\x00", '"'):
                at = text.find(stop, match.end(), limit)
                limit = limit if at == -1 else at
            at = text.find(marker, match.end(), limit)
            if at != -1:
                yield match.start(), at + len(marker)
                continue
            body = self.body.match(text, match.end(), limit)
            end = body.end() if body else match.end()
            while end > match.end() and text[end - 1].isspace():
                end -= 1
            yield match.start(), end


def private_key() -> PrivateKeyDetector:
    """The PEM private-key detector (see :class:`PrivateKeyDetector`)."""
    begin = re.compile(r"-----BEGIN (?P<label>(?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?)-----")
    # Base64 lines and RFC 1421 headers (Proc-Type: 4,ENCRYPTED), ending at any other line.
    body = re.compile(
        r"(?:\r?\n|\\n|  )*+(?:(?:[A-Za-z0-9+/=]{1,128}+|[A-Za-z\-]{1,20}: [A-Za-z0-9,\-]{1,80}+)"
        # the end of a line: a newline, an escaped one (blanked to "  "), or the end of the body
        r"(?:[ \t]*(?:\r?\n|\\n|\Z)|  (?=[A-Za-z0-9+/=])|(?![A-Za-z0-9+/=])))*+"
    )
    return PrivateKeyDetector("private_key", "secret", begin, body)


# --------------------------------------------------------------------------- passwords in URLs

_NOT_A_PASSWORD = re.compile(
    r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|<[^>]*>|\{\{.*\}\}|%\(.*\)s|\*+|x+|\.\.\.|\[[A-Z_]+_[0-9]+\]"
    r"|password|pass|passwd|pwd|secret|changeme|your[_\-]?password",
    re.IGNORECASE,
)


def _url_password(match: re.Match[str]) -> tuple[int, int] | None:
    if _NOT_A_PASSWORD.fullmatch(match.group("password")):
        return None
    return match.span("password")


def url_password() -> PatternDetector:
    """Passwords in URLs (``scheme://user:password@host``); the span is the password alone,
    so the URL stays readable once redacted. Template variables and ``****`` are skipped."""
    pattern = re.compile(
        r"://(?<=[A-Za-z0-9]://)[^\s:/?#@\"'<>\[\]]{0,128}+:(?P<password>[^\s/?#\"'<>]{1,256})@"
        r"(?=[A-Za-z0-9\[])"
    )
    return PatternDetector("url_password", "secret", pattern, _url_password, required=("://",))

"""Microsoft Presidio as one more detector (optional: ``governance.detection.presidio: true``).

Presidio is never a dependency of hybridgate. It is imported when the scanner is built; if it
is enabled but not installed, or its NLP model cannot be loaded, start-up fails with a
:class:`ConfigError` that says what to install. It then runs after the built-ins, for the
entity types they do not cover (names, locations, licence and passport numbers, ...).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hybridgate.errors import ConfigError

CONFIG_PATH = "governance.detection.presidio"

#: Entity types left out: the built-ins cover them (with checksums), or they are not personal
#: data and too noisy for agent traffic (dates, URLs).
COVERED_BY_BUILTINS = frozenset(
    {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "DATE_TIME", "URL"}
)


@dataclass(frozen=True, slots=True)
class PresidioDetector:
    """Presidio's ``AnalyzerEngine`` behind the detector protocol (kind ``personal_data``)."""

    analyzer: Any  # presidio_analyzer.AnalyzerEngine; untyped, optional
    entities: tuple[str, ...]
    language: str = "en"
    score_threshold: float = 0.5
    name: str = "presidio"
    kind: str = "personal_data"

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        results = self.analyzer.analyze(
            text=text,
            entities=list(self.entities),
            language=self.language,
            score_threshold=self.score_threshold,
        )
        for result in results:
            yield int(result.start), int(result.end)


def presidio_detector(language: str = "en") -> PresidioDetector:
    """Load Presidio's analyzer now (start-up), or raise :class:`ConfigError` saying why not."""
    try:
        module = importlib.import_module("presidio_analyzer")
    except ImportError as exc:
        raise ConfigError(
            [
                (
                    CONFIG_PATH,
                    "presidio is enabled but presidio-analyzer is not installed "
                    "(pip install presidio-analyzer, and a spaCy model such as en_core_web_lg)",
                )
            ]
        ) from exc
    try:
        analyzer = module.AnalyzerEngine()
    # spaCy raises OSError for a missing model; its downloader calls sys.exit when offline.
    except (OSError, ValueError, ImportError, RuntimeError, SystemExit) as exc:
        raise ConfigError(
            [
                (
                    CONFIG_PATH,
                    f"presidio is installed but its analyzer cannot start: {type(exc).__name__}: {exc}",
                )
            ]
        ) from exc
    supported = analyzer.get_supported_entities(language=language)
    entities = tuple(sorted(str(e) for e in supported if e not in COVERED_BY_BUILTINS))
    return PresidioDetector(analyzer=analyzer, entities=entities, language=language)

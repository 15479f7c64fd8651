"""The gateway's data guard: the content scan turned into a :class:`DataProfile` for the planner,
and the redaction of a request (with its restorer) when a plan sends it to the cloud."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hybridgate.config.governance import DetectionConfig
from hybridgate.policy.governance import DataProfile
from hybridgate.privacy.redaction import RedactionMap, Redactor
from hybridgate.privacy.scanner import Scanner, ScanResult
from hybridgate.privacy.stream import StreamRestorer
from hybridgate.types import Completion, InferenceRequest


@dataclass(frozen=True, slots=True)
class Restorer:
    """Puts the redacted values back into an answer, whole or streamed."""

    mapping: RedactionMap

    def restore_completion(self, completion: Completion) -> Completion:
        return self.mapping.restore_completion(completion)

    def stream_restorer(self) -> StreamRestorer:
        return StreamRestorer(self.mapping)


@dataclass(frozen=True, slots=True)
class Screening:
    """One request's scan: what the planner may know of it, and how to redact it."""

    request: InferenceRequest
    result: ScanResult
    profile: DataProfile

    def redact(self) -> tuple[InferenceRequest, Restorer]:
        redacted, mapping = Redactor().redact(self.request, self.result)
        return redacted, Restorer(mapping)


def _profile(result: ScanResult, images_sensitive: bool) -> DataProfile:
    if result.failed:
        return DataProfile(scan_failed=True, reason=result.reason or "scan failed")
    if images_sensitive and result.unscanned_images:
        # Images cannot be scanned: fail closed (governance.detection.images: sensitive).
        return DataProfile(kinds=result.kinds, scan_failed=True, reason="images cannot be scanned")
    return DataProfile(kinds=result.kinds)


class PrivacyGuard:
    """Build once at start-up (detectors are loaded and compiled here)."""

    def __init__(self, config: DetectionConfig) -> None:
        self.scanner = Scanner(
            config,
            time_limit=config.time_limit_ms / 1000.0 if config.time_limit_ms is not None else None,
            cache_entries=config.cache_entries,
            max_findings=config.max_findings,
        )
        self._images_sensitive = config.images == "sensitive"

    def screen(self, request: InferenceRequest) -> Screening:
        result = self.scanner.scan(request)
        return Screening(request, result, _profile(result, self._images_sensitive))

    def profile_texts(self, texts: Sequence[str]) -> DataProfile:
        return _profile(self.scanner.scan_texts(texts), self._images_sensitive)


def build_guard(config: DetectionConfig) -> PrivacyGuard:
    return PrivacyGuard(config)

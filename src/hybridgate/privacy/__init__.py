"""Sensitive-data detection, reversible redaction and stream restore.

Build a :class:`Scanner` once at start-up (it loads and compiles the configured detectors and
raises ``ConfigError`` for an unknown detector or a missing Presidio), then per request::

    scan = scanner.scan(request)                  # never raises; scan.sensitive, scan.kinds
    redacted, mapping = Redactor().redact(request, scan)   # for a cloud attempt
    completion = mapping.restore_completion(completion)    # or, streaming:
    restorer = StreamRestorer(mapping); events = restorer.feed(event)

See docs/privacy.md for what each detector validates and the limits of redaction.
"""

from hybridgate.privacy.detectors import BUILTIN_KINDS, Detector, PatternDetector
from hybridgate.privacy.redaction import RedactionError, RedactionMap, Redactor, placeholder_label
from hybridgate.privacy.registry import ENTRY_POINT_GROUP, builtin_detectors, detector_names, load_detectors
from hybridgate.privacy.scanner import Finding, Location, Scanner, ScanResult
from hybridgate.privacy.stream import StreamRestorer

__all__ = [
    "BUILTIN_KINDS",
    "ENTRY_POINT_GROUP",
    "Detector",
    "Finding",
    "Location",
    "PatternDetector",
    "RedactionError",
    "RedactionMap",
    "Redactor",
    "ScanResult",
    "Scanner",
    "StreamRestorer",
    "builtin_detectors",
    "detector_names",
    "load_detectors",
    "placeholder_label",
]

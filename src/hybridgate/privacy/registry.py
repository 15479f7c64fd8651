"""Detectors, found by name: the built-ins here, third-party ones through an entry-point group.

A package adds a detector in its pyproject::

    [project.entry-points."hybridgate.detectors"]
    employee_id = "acme_gateway.detectors:EmployeeIdDetector"

The entry point names a zero-argument factory (a class or a function) that returns an object
satisfying :class:`~hybridgate.privacy.detectors.Detector`, whose ``name`` equals the entry
point's name. Third-party detectors run only when the config names them in
``governance.detection.detectors`` (the default list is the built-ins). The built-in names are
reserved: an entry point reusing one is ignored.

Everything that can go wrong here (unknown name, a factory that fails to import or returns
something else, Presidio asked for but not installed) is a :class:`ConfigError` raised when the
scanner is built, at start-up, never while serving a request.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from hybridgate.config.governance import DetectionConfig
from hybridgate.errors import ConfigError
from hybridgate.privacy import detectors, phone, secrets
from hybridgate.privacy.detectors import Detector
from hybridgate.privacy.presidio import presidio_detector

ENTRY_POINT_GROUP = "hybridgate.detectors"
CONFIG_PATH = "governance.detection.detectors"

DetectorFactory = Callable[[], Detector]


def builtin_detectors() -> dict[str, DetectorFactory]:
    """The built-in detector factories by name, in the order the scanner runs them."""
    return {
        "email": detectors.email,
        "phone": phone.phone,
        "payment_card": detectors.payment_card,
        "iban": detectors.iban,
        "us_ssn": detectors.us_ssn,
        "ipv4": detectors.ipv4,
        "ipv6": detectors.ipv6,
        "api_key": secrets.api_key,
        "jwt": secrets.jwt,
        "private_key": secrets.private_key,
        "url_password": secrets.url_password,
    }


def detector_names() -> dict[str, str]:
    """Every detector name that can be configured and where it comes from (``module:attr``)."""
    names = {name: f"{f.__module__}:{f.__qualname__}" for name, f in builtin_detectors().items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(ep.name, ep.value)
    return names


def _third_party(name: str, problems: list[tuple[str, str]]) -> Detector | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name != name:
            continue
        try:
            factory = ep.load()
        except ImportError as exc:
            problems.append((CONFIG_PATH, f"detector {name!r} cannot be loaded ({ep.value}): {exc}"))
            return None
        if not callable(factory):
            problems.append((CONFIG_PATH, f"detector {name!r} ({ep.value}) is not callable"))
            return None
        detector = factory()
        if not isinstance(detector, Detector) or detector.name != name:
            problems.append(
                (CONFIG_PATH, f"{ep.value} does not make a detector named {name!r} (name, kind, find)")
            )
            return None
        return detector
    known = ", ".join(sorted(detector_names()))
    problems.append((CONFIG_PATH, f"unknown detector {name!r} (registered: {known})"))
    return None


def load_detectors(config: DetectionConfig) -> tuple[Detector, ...]:
    """Build, once, the detectors the config asks for (fresh instances, patterns compiled).

    Raises :class:`ConfigError` listing every problem found.
    """
    builtins = builtin_detectors()
    names = list(builtins) if config.detectors is None else config.detectors
    problems: list[tuple[str, str]] = []
    found: list[Detector] = []
    for name in dict.fromkeys(names):  # keep the order, drop repeats
        detector = builtins[name]() if name in builtins else _third_party(name, problems)
        if detector is not None:
            found.append(detector)
    if config.presidio:
        try:
            found.append(presidio_detector())
        except ConfigError as exc:
            problems.extend(exc.problems)
    if not found and not problems:
        # An empty list would scan nothing and call everything clean: opting out is explicit.
        problems.append((CONFIG_PATH, "no detectors to run (to scan nothing, set enabled: false)"))
    if problems:
        raise ConfigError(problems)
    return tuple(found)

"""The scanner and its fail-closed rules, the detector registry, linear time, precision and recall.

Each detector's cases are in ``test_privacy_detectors.py``; redaction, stream restore and the
property tests in ``test_privacy_redaction.py``.
"""

from __future__ import annotations

import sys
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridgate.clock import ManualClock
from hybridgate.config.governance import DetectionConfig
from hybridgate.errors import ConfigError
from hybridgate.privacy import Scanner, ScanResult, builtin_detectors, detector_names
from hybridgate.types import ImagePart, InferenceRequest, Message, TextPart, ToolCall
from tests.privacy_corpus import evaluate, generate, pii_free_texts
from tests.privacy_templates import HELD_OUT_TEMPLATES


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner(DetectionConfig(), cache_entries=0)


# --------------------------------------------------------------------------- the scanner


def request_with_everything() -> InferenceRequest:
    return InferenceRequest(
        model="m",
        messages=(
            Message.of_text("system", "Operator on call: ops@example.org"),
            Message(
                role="user",
                content=(TextPart("hi"), ImagePart(url="https://x/y.png"), TextPart("card 4111111111111111")),
            ),
            Message(role="assistant", tool_calls=(ToolCall("c1", "lookup", '{"ip": "203.0.113.7"}'),)),
            Message(role="tool", tool_call_id="c1", content=(TextPart("owner +44 20 7946 0958"),)),
        ),
    )  # fmt: skip


def test_scan_covers_system_user_tool_arguments_and_tool_results(scanner: Scanner) -> None:
    result = scanner.scan(request_with_everything())
    where = {(f.kind, str(f.location)) for f in result.findings}
    assert where == {
        ("email", "messages[0].content[0]"),
        ("payment_card", "messages[1].content[2]"),
        ("ip_address", "messages[2].tool_calls[0].arguments"),
        ("phone", "messages[3].content[0]"),
    }
    assert result.sensitive
    assert not result.failed
    assert result.kinds == {"email", "payment_card", "ip_address", "phone"}
    assert result.unscanned_images == 1


def test_findings_never_hold_or_show_the_values(scanner: Scanner) -> None:
    result = scanner.scan(request_with_everything())
    shown = repr(result) + str(result.findings)
    for value in ("ops@example.org", "4111111111111111", "203.0.113.7", "7946"):
        assert value not in shown


def test_clean_request_is_not_sensitive(scanner: Scanner) -> None:
    result = scanner.scan_texts(["Deploy v1.2.3 on 2024-01-15, ticket ORD-2024-000123, 3 pods."])
    assert result == ScanResult()
    assert not result.sensitive


def test_values_and_context_do_not_cross_texts(scanner: Scanner) -> None:
    # "call" at the end of one text does not make digits at the start of the next a phone number,
    # and an address split over two texts is not found
    result = scanner.scan_texts(["please call", "3420837783 units", "jane.doe@exa", "mple.org"])
    assert result.findings == ()
    result = scanner.scan_texts(["a", "call 3420837783", "jane.doe@example.org"])
    assert [(str(f.location), f.start, f.end) for f in result.findings] == [
        ("inputs[1]", 5, 15),
        ("inputs[2]", 0, 20),
    ]


def test_the_cache_gives_the_same_findings_for_the_same_texts_wherever_they_are() -> None:
    cached = Scanner(DetectionConfig())
    long_text = "Customer record: " + "lorem ipsum " * 20 + "jane.doe@example.org, card 4111 1111 1111 1111."
    first = cached.scan_texts([long_text, "short"])
    again = cached.scan_texts(["short", long_text])
    assert [(f.kind, f.start, f.end) for f in first.findings] == [
        (f.kind, f.start, f.end) for f in again.findings
    ]
    assert {str(f.location) for f in again.findings} == {"inputs[1]"}


# --------------------------------------------------------------------------- fail closed


class Exploding:
    name = "exploding"
    kind = "test"

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        raise RuntimeError(f"could not parse {text!r}")


class BadSpans:
    name = "bad_spans"
    kind = "test"

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        yield 5, len(text) + 100


class SlowDetector:
    name = "slow"
    kind = "test"

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        self.clock.advance(10.0)
        return iter(())


def test_a_raising_detector_fails_the_scan_without_leaking_the_text() -> None:
    result = Scanner(
        DetectionConfig(), [*(f() for f in builtin_detectors().values()), Exploding()]
    ).scan_texts(["jane.doe@example.org"])
    assert result.failed
    assert result.sensitive
    assert result.findings == ()
    assert result.reason == "detector 'exploding' raised RuntimeError"


def test_an_invalid_span_fails_the_scan() -> None:
    result = Scanner(DetectionConfig(), [BadSpans()]).scan_texts(["abcdefgh"])
    assert result.failed
    assert result.reason is not None
    assert "invalid span" in result.reason


def test_the_time_limit_fails_the_scan() -> None:
    clock = ManualClock()
    result = Scanner(DetectionConfig(), [SlowDetector(clock)], time_limit=1.0, clock=clock).scan_texts(["x"])
    assert result.failed
    assert result.reason is not None
    assert "time limit" in result.reason


def test_oversize_requests_are_not_scanned_and_count_as_sensitive() -> None:
    small = Scanner(DetectionConfig(max_scan_bytes=100), cache_entries=0)
    assert not small.scan_texts(["x" * 100]).failed
    result = small.scan_texts(["x" * 60, "y" * 41])
    assert result.failed
    assert not result.scanned
    assert result.sensitive
    # the limit is on UTF-8 bytes, not characters
    assert small.scan_texts(["é" * 51]).failed


def test_too_many_findings_fail_the_scan() -> None:
    result = Scanner(DetectionConfig(), cache_entries=0, max_findings=10).scan_texts(["a@example.org " * 11])
    assert result.failed
    assert result.reason == "more than 10 findings"


def test_disabled_detection_fails_closed_unless_explicitly_allowed() -> None:
    disabled = Scanner(DetectionConfig(enabled=False)).scan_texts(["anything"])
    assert disabled.failed
    assert disabled.sensitive
    assert not disabled.scanned
    allowed = Scanner(DetectionConfig(enabled=False, allow_unscanned=True)).scan_texts(["jane@example.org"])
    assert not allowed.failed
    assert not allowed.sensitive
    assert not allowed.scanned


def test_the_configured_subset_runs() -> None:
    only_email = Scanner(DetectionConfig(detectors=["email"]))
    assert [d.name for d in only_email.detectors] == ["email"]
    assert only_email.scan_texts(["jane@example.org 4111111111111111"]).kinds == {"email"}


def test_unknown_detector_is_a_config_error_at_start_up() -> None:
    with pytest.raises(ConfigError, match="unknown detector 'no_such_detector'"):
        Scanner(DetectionConfig(detectors=["email", "no_such_detector"]))


def test_an_empty_detector_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no detectors to run"):
        Scanner(DetectionConfig(detectors=[]))


def test_presidio_enabled_but_not_installed_is_a_config_error_at_start_up() -> None:
    if "presidio_analyzer" in sys.modules:  # pragma: no cover - only where someone installed it
        pytest.skip("presidio is installed here")
    with pytest.raises(ConfigError, match="presidio-analyzer is not installed"):
        Scanner(DetectionConfig(presidio=True))


def test_presidio_plugs_in_as_one_more_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    class Result:
        def __init__(self, start: int, end: int) -> None:
            self.start, self.end = start, end

    class AnalyzerEngine:
        def get_supported_entities(self, language: str) -> list[str]:
            return ["PERSON", "EMAIL_ADDRESS", "LOCATION"]

        def analyze(self, text: str, entities: list[str], language: str, score_threshold: float) -> list[Any]:
            assert entities == ["LOCATION", "PERSON"]  # the built-ins cover e-mail
            at = text.find("Jane Doe")
            return [Result(at, at + 8)] if at != -1 else []

    fake = types.ModuleType("presidio_analyzer")
    fake.__dict__["AnalyzerEngine"] = AnalyzerEngine
    monkeypatch.setitem(sys.modules, "presidio_analyzer", fake)
    scanner = Scanner(DetectionConfig(detectors=["email"], presidio=True))
    result = scanner.scan_texts(["Jane Doe <jane@example.org>"])
    assert [(f.detector, f.kind, f.start, f.end) for f in result.findings] == [
        ("presidio", "personal_data", 0, 8),
        ("email", "email", 10, 26),
    ]


# --------------------------------------------------------------------------- third-party detectors

PLUGIN = """
import re

class EmployeeId:
    name = "employee_id"
    kind = "employee_id"

    def find(self, text):
        return (m.span() for m in re.finditer(r"EMP-[0-9]{6}", text))

class Exploding:
    name = "plugin_exploding"
    kind = "test"

    def find(self, text):
        raise ValueError("bad input: " + text)

def misnamed():
    return EmployeeId()
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution on sys.path that registers detectors through the entry-point group."""
    (tmp_path / "hg_test_detectors.py").write_text(PLUGIN)
    info = tmp_path / "hg_test_detectors-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hg-test-detectors\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [hybridgate.detectors]
            employee_id = hg_test_detectors:EmployeeId
            plugin_exploding = hg_test_detectors:Exploding
            misnamed = hg_test_detectors:misnamed
            broken = hg_test_detectors_missing:Nothing
            email = hg_test_detectors:EmployeeId
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.usefixtures("plugin")
def test_a_registered_detector_runs_when_configured() -> None:
    assert detector_names()["employee_id"] == "hg_test_detectors:EmployeeId"
    result = Scanner(DetectionConfig(detectors=["email", "employee_id"])).scan_texts(
        ["EMP-123456 x@example.org"]
    )
    assert [(f.detector, f.kind) for f in result.findings] == [
        ("employee_id", "employee_id"),
        ("email", "email"),
    ]
    # not configured: the default list is the built-ins, and a built-in name stays built-in
    assert Scanner(DetectionConfig()).scan_texts(["EMP-123456"]).findings == ()


@pytest.mark.usefixtures("plugin")
def test_a_registered_detector_that_raises_fails_the_scan() -> None:
    result = Scanner(DetectionConfig(detectors=["plugin_exploding"])).scan_texts(["secret text"])
    assert result.failed
    assert result.reason == "detector 'plugin_exploding' raised ValueError"


@pytest.mark.usefixtures("plugin")
def test_broken_registrations_are_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        Scanner(DetectionConfig(detectors=["misnamed", "broken"]))
    messages = " | ".join(message for _, message in info.value.problems)
    assert "does not make a detector named 'misnamed'" in messages
    assert "detector 'broken' cannot be loaded" in messages


# --------------------------------------------------------------------------- linear time


def _best_of(scanner: Scanner, text: str, runs: int = 2) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        result = scanner.scan_texts([text])
        best = min(best, time.perf_counter() - started)
        assert result.failed is False or result.reason == f"more than {10_000} findings"
    return best


def test_adversarial_input_costs_at_most_20x_ordinary_text() -> None:
    """Speed is the benchmark's business; this only catches a pattern gone quadratic or worse."""
    size = 512 * 1024
    scanner = Scanner(DetectionConfig(), cache_entries=0)
    words = [
        "the",
        "agent",
        "called",
        "a",
        "tool",
        "with",
        "these",
        "arguments",
        "and",
        "got",
        "3",
        "rows",
        "back",
        "from",
        "the",
        "EU",
        "region",
    ]
    ordinary = " ".join(words[(i * 7) % len(words)] for i in range(size // 4))[:size]

    def fill(unit: str) -> str:
        return (unit * (size // len(unit) + 1))[:size]

    adversarial = {
        "digits": fill("1234567890"),
        "a@a": fill("a@"),
        "aaaa": "a" * size,
        "near-miss addresses": fill("a" * 63 + "@" + "b" * 60 + "."),
        "nested dashes": fill("1-"),
        "base64": fill("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk+/"),
        "eyJ base64": "eyJ" + fill("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk")[3:],
        "Luhn-invalid cards": fill("4111 1111 1111 1112 "),
        "+1 +1": fill("+1 "),
        "(0(0": fill("(0"),
        "DE00 DE00": fill("DE00 "),
        "hex colons": fill("::1:"),
        "spaced digits": fill("1 "),
        "BEGIN without END": fill("-----BEGIN PRIVATE KEY-----\n"),
        "URL passwords": fill("a://a:a@"),
    }
    baseline = _best_of(scanner, ordinary)
    ratios = {name: _best_of(scanner, text) / baseline for name, text in adversarial.items()}
    assert max(ratios.values()) <= 20, ratios


# --------------------------------------------------------------------------- precision and recall


@pytest.mark.parametrize(
    ("templates", "floor"), [(None, 0.95), (HELD_OUT_TEMPLATES, 0.9)], ids=["tuned", "held-out"]
)
def test_precision_and_recall_floor_on_the_synthetic_corpus(templates: Any, floor: float) -> None:
    samples = generate(seed=11, samples=1500) if templates is None else generate(11, 1500, templates)
    scores = evaluate(Scanner(DetectionConfig(), cache_entries=0), samples)
    low = {
        name: (round(s.precision, 3), round(s.recall, 3))
        for name, s in scores.items()
        if s.planted and (s.precision < floor or s.recall < floor)
    }
    assert not low, low
    assert sum(s.planted for s in scores.values()) > 1000


def test_no_findings_in_pii_free_text() -> None:
    scanner = Scanner(DetectionConfig(), cache_entries=0)
    findings = [
        f for text in pii_free_texts(seed=3, size=300_000) for f in scanner.scan_texts([text]).findings
    ]
    assert findings == []

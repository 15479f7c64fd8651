"""Reversible redaction, completion and stream restore, with property tests."""

from __future__ import annotations

import json
from collections.abc import Sequence

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgate.config.governance import DetectionConfig
from hybridgate.privacy import RedactionError, RedactionMap, Redactor, Scanner, ScanResult, StreamRestorer
from hybridgate.privacy.redaction import PLACEHOLDER, TrieSearch, occurrences
from hybridgate.types import (
    Completion,
    ImagePart,
    InferenceRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)

SCANNER = Scanner(DetectionConfig(), cache_entries=0)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----"
)
VALUES = (
    "jane.doe@example.org",
    "ops+alerts@mail.example.co.uk",
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "378282246310005",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "536-22-1234",
    "+44 20 7946 0958",
    "(415) 555-2671",
    "203.0.113.7",
    "2001:db8::8a2e:370:7334",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb3dEf6h",
    "AKIA2E3F4G5H6J7K2L3M",
    "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hI6",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    PEM,
    "postgres://admin:s3cr3t-P4ss@db.internal:5432/app",
)


def request_of(*messages: Message) -> InferenceRequest:
    return InferenceRequest(model="m", messages=messages)


def redact(request: InferenceRequest) -> tuple[InferenceRequest, RedactionMap, ScanResult]:
    scan = SCANNER.scan(request)
    redacted, mapping = Redactor().redact(request, scan)
    return redacted, mapping, scan


def texts_of(request: InferenceRequest) -> list[str]:
    out = []
    for m in request.messages:
        out += [p.text for p in m.content if isinstance(p, TextPart)]
        out += [c.arguments for c in m.tool_calls]
    return out


def stream_text(mapping: RedactionMap, chunks: Sequence[str]) -> list[StreamEvent]:
    restorer = StreamRestorer(mapping)
    events: list[StreamEvent] = []
    for chunk in chunks:
        events += restorer.feed(TextDelta(chunk))
    events += restorer.feed(StreamEnd("stop", Usage()))
    return events


# --------------------------------------------------------------------------- redaction


def test_the_same_value_gets_the_same_placeholder_and_others_the_next_number() -> None:
    request = request_of(
        Message.of_text("system", "Escalate to ops@example.org."),
        Message.of_text("user", "ops@example.org and jane@example.org, card 4111 1111 1111 1111"),
    )
    redacted, mapping, _ = redact(request)
    assert texts_of(redacted) == [
        "Escalate to [EMAIL_1].",
        "[EMAIL_1] and [EMAIL_2], card [PAYMENT_CARD_1]",
    ]
    assert mapping.placeholders == ("[EMAIL_1]", "[EMAIL_2]", "[PAYMENT_CARD_1]")
    assert [mapping.restore(t) for t in texts_of(redacted)] == texts_of(request)


def test_placeholders_already_in_the_request_are_not_reused() -> None:
    request = request_of(
        Message.of_text("user", "Template: Dear [EMAIL_1], [EMAIL_3] wrote from jane@example.org")
    )
    redacted, mapping, _ = redact(request)
    assert texts_of(redacted) == ["Template: Dear [EMAIL_1], [EMAIL_3] wrote from [EMAIL_2]"]
    assert mapping.restore("[EMAIL_1] [EMAIL_2]") == "[EMAIL_1] jane@example.org"


def test_every_occurrence_of_a_found_value_goes_even_where_no_detector_fired() -> None:
    # "version 10.1.2.3" is not an address to the detector, but the value was found elsewhere
    request = request_of(
        Message.of_text("user", "server 10.1.2.3"), Message.of_text("user", "version 10.1.2.3")
    )
    redacted, _mapping, _ = redact(request)
    assert texts_of(redacted) == ["server [IP_ADDRESS_1]", "version [IP_ADDRESS_1]"]


def test_tool_arguments_stay_valid_json_and_restore_json_escaped() -> None:
    arguments = json.dumps({"to": "ops@example.org", "key": PEM, "pan": 4111111111111111, "note": "ok"})
    request = request_of(
        Message.of_text("user", f"my key:\n{PEM}"),
        Message(role="assistant", tool_calls=(ToolCall("c1", "send", arguments),)),
        Message(role="tool", tool_call_id="c1", content=(TextPart('{"sent_to": "ops@example.org"}'),)),
    )
    redacted, mapping, _ = redact(request)
    user, call, result = texts_of(redacted)
    assert user == "my key:\n[SECRET_1]"
    assert json.loads(call) == {
        "to": "[EMAIL_1]",
        "key": "[SECRET_1]",
        "pan": "[PAYMENT_CARD_1]",
        "note": "ok",
    }
    assert result == '{"sent_to": "[EMAIL_1]"}'
    # the model echoes the placeholders in a tool call: values come back JSON-escaped
    completion = Completion(
        id="x",
        model="m",
        text="Sent [SECRET_1] to [EMAIL_1].",
        tool_calls=(
            ToolCall("t1", "store", '{"key": "[SECRET_1]", "who": "[EMAIL_1]", "n": "[PAYMENT_CARD_1]"}'),
        ),
    )
    restored = mapping.restore_completion(completion)
    assert restored.text == f"Sent {PEM} to ops@example.org."
    # the bare number comes back as a string: the documented cost of keeping the JSON valid
    assert json.loads(restored.tool_calls[0].arguments) == {
        "key": PEM,
        "who": "ops@example.org",
        "n": "4111111111111111",
    }
    assert restored.usage is completion.usage
    assert completion.text.startswith("Sent [SECRET_1]")


def test_url_passwords_are_redacted_alone() -> None:
    redacted, _mapping, _ = redact(
        request_of(Message.of_text("user", "DSN postgres://app:Xy9-secret@db:5432/prod"))
    )
    assert texts_of(redacted) == ["DSN postgres://app:[SECRET_1]@db:5432/prod"]


def test_no_findings_is_the_identity() -> None:
    request = request_of(Message.of_text("user", "nothing here, v1.2.3 on 2024-01-15"))
    redacted, mapping, scan = redact(request)
    assert redacted is request
    assert len(mapping) == 0
    assert not scan.sensitive
    assert mapping.restore("a [EMAIL_1] b") == "a [EMAIL_1] b"


def test_images_and_other_fields_are_kept() -> None:
    image = ImagePart(url="https://example.org/a.png")
    request = InferenceRequest(
        model="m",
        messages=(Message(role="user", content=(TextPart("mail jane@example.org"), image), name="agent-7"),),
        max_tokens=99,
        metadata={"tenant": "t1"},
    )
    redacted, _, _ = redact(request)
    message = redacted.messages[0]
    assert message.content == (TextPart("mail [EMAIL_1]"), image)
    assert message.name == "agent-7"
    assert redacted.max_tokens == 99
    assert redacted.metadata == {"tenant": "t1"}


def test_a_failed_scan_cannot_be_redacted() -> None:
    request = request_of(Message.of_text("user", "jane@example.org"))
    with pytest.raises(RedactionError, match="scan failed"):
        Redactor().redact(request, ScanResult(failed=True, reason="detector 'x' raised ValueError"))


def test_too_many_distinct_values_are_refused() -> None:
    texts = [f"user{i}@example.org" for i in range(6)]
    scan = SCANNER.scan_texts(texts)
    assert len(Redactor(max_values=6).redact_texts(texts, scan)[1]) == 6
    with pytest.raises(RedactionError, match="more than 5 distinct values"):
        Redactor(max_values=5).redact_texts(texts, scan)


def test_findings_that_do_not_fit_the_request_are_refused() -> None:
    scan = SCANNER.scan(request_of(Message.of_text("user", "mail jane@example.org now")))
    with pytest.raises(RedactionError, match="does not fit"):
        Redactor().redact(request_of(Message.of_text("user", "short")), scan)


def test_redaction_map_never_shows_values() -> None:
    _, mapping, _ = redact(
        request_of(Message.of_text("user", "jane@example.org sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wX"))
    )
    assert "jane" not in repr(mapping)
    assert "sk-proj" not in repr(mapping)
    assert repr(mapping) == "RedactionMap(['[EMAIL_1]', '[SECRET_1]'])"


def test_embedding_inputs() -> None:
    texts = ["mail jane@example.org", "no data", "jane@example.org again"]
    redacted, mapping = Redactor().redact_texts(texts, SCANNER.scan_texts(texts))
    assert redacted == ("mail [EMAIL_1]", "no data", "[EMAIL_1] again")
    assert [mapping.restore(t) for t in redacted] == texts


def test_a_third_party_kind_gets_a_placeholder_label() -> None:
    class EmployeeId:
        name = "employee_id"
        kind = "employee-id (HR)"

        def find(self, text: str) -> list[tuple[int, int]]:
            at = text.find("EMP-")
            return [(at, at + 10)] if at != -1 else []

    scanner = Scanner(DetectionConfig(), [EmployeeId()])
    texts = ["badge EMP-123456 ok"]
    redacted, _ = Redactor().redact_texts(texts, scanner.scan_texts(texts))
    assert redacted == ("badge [EMPLOYEE_ID_HR_1] ok",)


# --------------------------------------------------------------------------- stream restore


def test_a_placeholder_split_across_chunks_is_held_back_then_restored() -> None:
    mapping = RedactionMap({"[EMAIL_1]": "jane@example.org"})
    restorer = StreamRestorer(mapping)
    assert restorer.feed(TextDelta("write to [EMA")) == [TextDelta("write to ")]
    assert restorer.feed(TextDelta("IL_1] please")) == [TextDelta("jane@example.org please")]
    assert restorer.feed(TextDelta(" [")) == [TextDelta(" ")]
    assert restorer.feed(TextDelta("EMAIL_2] [x")) == [TextDelta("[EMAIL_2] [x")]  # unknown: as it was
    end = StreamEnd("stop", Usage(1, 2))
    assert restorer.feed(TextDelta("[EMAIL")) == []
    assert restorer.feed(end) == [TextDelta("[EMAIL"), end]  # flushed as it was, then the end


def test_tool_call_deltas_are_restored_json_escaped_and_keep_id_and_name() -> None:
    mapping = RedactionMap({"[SECRET_1]": 'pa"ss\nword'})
    restorer = StreamRestorer(mapping)
    events: list[StreamEvent] = []
    events += restorer.feed(TextDelta("Calling [SEC"))
    events += restorer.feed(ToolCallDelta(0, id="call_1", name="login", arguments='{"password": "[SECR'))
    events += restorer.feed(ToolCallDelta(0, arguments='ET_1]"}'))
    events += restorer.feed(ToolCallDelta(1, id="call_2", name="noop", arguments="{}"))
    events += restorer.feed(StreamEnd("tool_calls", Usage()))
    assert events == [
        TextDelta("Calling "),
        TextDelta("[SEC"),  # the text block ended before the tool call: flushed as it was
        ToolCallDelta(0, id="call_1", name="login", arguments='{"password": "'),
        ToolCallDelta(0, arguments='pa\\"ss\\nword"}'),
        ToolCallDelta(1, id="call_2", name="noop", arguments="{}"),
        StreamEnd("tool_calls", Usage()),
    ]
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == 0)
    assert json.loads(arguments) == {"password": 'pa"ss\nword'}


def test_without_placeholders_the_stream_passes_through() -> None:
    assert stream_text(RedactionMap(), ["a [EMA", "IL_1]"]) == [
        TextDelta("a [EMA"),
        TextDelta("IL_1]"),
        StreamEnd("stop", Usage()),
    ]


# --------------------------------------------------------------------------- properties

FILLER = st.one_of(
    st.text(max_size=12),
    st.sampled_from([" ", "\n", ", ", "[", "]", "[EMAIL_1]", '"', "\\", "x", "1", "-", "@", "call "]),
)
TEXT = st.lists(st.one_of(FILLER, st.sampled_from(VALUES)), max_size=12).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=TEXT, other=TEXT)
def test_redaction_round_trips_and_removes_every_found_value(text: str, other: str) -> None:
    request = request_of(Message.of_text("system", other), Message.of_text("user", text))
    redacted, mapping, scan = redact(request)
    assert not scan.failed
    assert [mapping.restore(t) for t in texts_of(redacted)] == texts_of(request)
    values = {request_texts_by_location(request)[str(f.location)][f.start : f.end] for f in scan.findings}
    for new_text in texts_of(redacted):
        assert not any(value in new_text for value in values)


def request_texts_by_location(request: InferenceRequest) -> dict[str, str]:
    from hybridgate.privacy.scanner import request_texts

    return {str(location): text for location, text in request_texts(request)}


@settings(max_examples=150, deadline=None)
@given(first=TEXT, second=TEXT)
def test_tool_arguments_round_trip_as_json(first: str, second: str) -> None:
    arguments = orjson.dumps({"a": first, "b": [second, 7]}).decode()
    request = request_of(Message(role="assistant", tool_calls=(ToolCall("c", "f", arguments),)))
    redacted, mapping, scan = redact(request)
    new_arguments = redacted.messages[0].tool_calls[0].arguments
    assert json.loads(mapping.restore_json(new_arguments)) == {"a": first, "b": [second, 7]}
    for f in scan.findings:
        assert arguments[f.start : f.end] not in new_arguments


@settings(max_examples=200, deadline=None)
@given(
    text=TEXT,
    noise=st.lists(st.sampled_from(["[", "]", "[EMA", "IL_", "1]", "[SECRET_", "x"]), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_chunking_of_a_stream_restores_exactly(text: str, noise: list[str], cuts: list[int]) -> None:
    request = request_of(Message(role="user", content=(TextPart(text),)))
    redacted, mapping, _ = redact(request)
    # what a model might answer: the redacted text, echoed, with stray brackets and fragments
    answer = "".join(noise) + texts_of(redacted)[0] + "".join(reversed(noise))
    points = sorted({c % (len(answer) + 1) for c in cuts})
    chunks = [answer[a:b] for a, b in zip([0, *points], [*points, len(answer)], strict=True)]
    events = stream_text(mapping, chunks)
    assert isinstance(events[-1], StreamEnd)
    out = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert out == mapping.restore(answer)
    assert not any(p in out for p in mapping.placeholders)
    assert all(m.group() not in mapping.placeholders for m in PLACEHOLDER.finditer(out))


@settings(max_examples=300, deadline=None)
@given(
    forms=st.lists(st.text(alphabet="abc-", min_size=1, max_size=30), min_size=1, max_size=8),
    text=st.text(alphabet="abc- ", max_size=200),
)
def test_many_values_are_found_by_the_trie_search_as_by_find(forms: list[str], text: str) -> None:
    """Requests with many values search with a trie-shaped pattern instead of str.find passes:
    whatever either finds, blanking it leaves none of the values in the text."""
    for spans in (list(TrieSearch(forms).spans(text)), list(occurrences(text, forms))):
        blanked = list(text)
        for start, end, form in spans:
            assert text[start:end] == form
            blanked[start:end] = "\x01" * (end - start)
        assert not any(form in "".join(blanked) for form in forms)

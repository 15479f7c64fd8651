"""A labelled, synthetic corpus of agent traffic for measuring the privacy detectors.

Deterministic for a seed (and a Faker version). Each sample is one text an agent gateway sees:
a support ticket, an e-mail, log lines, a shell transcript, a chat prompt, or the JSON of a tool
call's arguments or of a tool result (there the values are JSON-escaped, as on the wire). Values
are planted from templates, so their positions are known exactly, and most templates also
carry *hard negatives*: dates, versions, order and invoice numbers, UUIDs, git SHAs, Luhn-invalid
card numbers, IBANs with a wrong checksum, SSNs in never-issued ranges, placeholder API keys,
certificates, template passwords.

Personal data comes from Faker (names, e-mails, phone numbers of seven locales, IBANs of six
countries, card numbers of eight schemes, SSNs, IPs); credentials are generated in their
documented formats. It is synthetic: real traffic has formats and contexts this does not.

Templates are in ``tests/privacy_templates.py`` (tuned and held-out sets), field values in
``tests/privacy_values.py``.

Print the table::

    python -m tests.privacy_corpus [--seed 7] [--samples 4000]
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from faker import Faker

from hybridgate.config.governance import DetectionConfig
from hybridgate.privacy import Scanner
from hybridgate.types import InferenceRequest, Message, ToolCall
from tests.privacy_templates import HELD_OUT_TEMPLATES, TEMPLATES
from tests.privacy_values import Values

DETECTORS = (
    *("email", "phone", "payment_card", "iban", "us_ssn", "ipv4", "ipv6"),
    *("api_key", "jwt", "private_key", "url_password"),
)
# Template fields that plant a value, and the detectors that should find it.
PLANTS: dict[str, tuple[str, ...]] = {name: (name,) for name in DETECTORS} | {
    "aws_key_id": ("api_key",),
    "aws_secret": ("api_key",),
    "github_token": ("api_key",),
    "github_token_in_url": ("api_key", "url_password"),
}


@dataclass(frozen=True, slots=True)
class Label:
    detector: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Sample:
    text: str
    labels: tuple[Label, ...]
    template: str
    is_json: bool


_FIELD = re.compile(r"\{(\w+)\}")


def _json_escape(value: str) -> str:
    return orjson.dumps(value).decode()[1:-1]


def render(template: str, is_json: bool, values: Values) -> tuple[str, tuple[Label, ...]]:
    """Fill a template; labels locate each planted value (JSON-escaped in JSON templates)."""
    pieces: list[str] = []
    labels: list[Label] = []
    at = 0
    for i, piece in enumerate(_FIELD.split(template)):
        if i % 2:  # a field name
            value = values.get(piece)
            text = _json_escape(value) if is_json else value
            labels.extend(Label(detector, at, at + len(text)) for detector in PLANTS.get(piece, ()))
            piece = text
        pieces.append(piece)
        at += len(piece)
    return "".join(pieces), tuple(labels)


def generate(
    seed: int = 7, samples: int = 4000, templates: Sequence[tuple[str, bool, str]] = TEMPLATES
) -> list[Sample]:
    """``samples`` labelled texts, the same ones for the same seed."""
    values = Values(seed)
    out = []
    for _ in range(samples):
        name, is_json, template = values.rng.choice(templates)
        text, labels = render(template, is_json, values)
        out.append(Sample(text, labels, name, is_json))
    return out


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True, slots=True)
class Score:
    """Per detector: ``found`` of ``planted`` values fully covered by its spans; ``correct`` of
    its ``reported`` spans overlap a value planted for it."""

    planted: int
    found: int
    reported: int
    correct: int

    @property
    def recall(self) -> float:
        return self.found / self.planted if self.planted else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.reported if self.reported else 1.0


def evaluate(scanner: Scanner, samples: Sequence[Sample]) -> dict[str, Score]:
    """Precision and recall of each detector of ``scanner`` on ``samples``."""
    counts = {name: [0, 0, 0, 0] for name in (d.name for d in scanner.detectors)}
    for sample in samples:
        result = scanner.scan_texts([sample.text])
        assert not result.failed, result.reason
        for name, c in counts.items():
            spans = [(f.start, f.end) for f in result.findings if f.detector == name]
            gold = [(g.start, g.end) for g in sample.labels if g.detector == name]
            c[0] += len(gold)
            c[1] += sum(any(s <= a and b <= e for s, e in spans) for a, b in gold)
            c[2] += len(spans)
            c[3] += sum(any(s < b and a < e for a, b in gold) for s, e in spans)
    return {name: Score(*c) for name, c in counts.items()}


def false_positives(scanner: Scanner, samples: Sequence[Sample]) -> list[tuple[str, str, str]]:
    """(detector, template, reported text) for every span that overlaps no planted value."""
    out = []
    for sample in samples:
        for f in scanner.scan_texts([sample.text]).findings:
            if not any(
                g.detector == f.detector and f.start < g.end and g.start < f.end for g in sample.labels
            ):
                out.append((f.detector, sample.template, sample.text[f.start : f.end]))
    return out


# --------------------------------------------------------------------------- agent requests

_CODE = (
    "def handler(event, context):\n    items = [x for x in event['items'] if x['qty'] > 0]\n"
    "    return {'count': len(items), 'total': sum(i['price'] for i in items)}\n"
)


def agent_request(seed: int, target_bytes: int = 32 * 1024) -> InferenceRequest:
    """A realistic agent conversation of about ``target_bytes``: a system prompt, user turns,
    assistant tool calls with JSON arguments and tool results; mostly ordinary prose, code and
    logs, with some of the corpus's samples (personal data, credentials, hard negatives)."""
    values = Values(seed)
    rng, fake = values.rng, values.fake
    system = "You are a support agent for " + fake.company() + ". " + " ".join(fake.paragraphs(4))
    messages = [Message.of_text("system", system)]
    size = len(system)
    turn = 0
    while size < target_bytes:
        turn += 1
        if rng.random() < 0.3:
            _, is_json, template = rng.choice(TEMPLATES)
            text, _ = render(template, is_json, values)
        else:
            text = " ".join(fake.paragraphs(rng.randrange(1, 4)))
            is_json = rng.random() < 0.4
            if is_json:
                text = orjson.dumps({"result": text, "code": _CODE, "rows": rng.randrange(1000)}).decode()
        if is_json:
            call = ToolCall(id=f"call_{turn}", name="lookup", arguments=text)
            messages.append(Message(role="assistant", tool_calls=(call,)))
            result = orjson.dumps({"status": "ok", "id": fake.uuid4(), "log": fake.paragraph()}).decode()
            messages.append(
                Message(
                    role="tool", tool_call_id=f"call_{turn}", content=Message.of_text("tool", result).content
                )
            )
            size += len(text) + len(result)
        else:
            messages.append(Message.of_text("user" if turn % 2 else "assistant", text))
            size += len(text)
    return InferenceRequest(model="agent", messages=tuple(messages))


def pii_free_texts(seed: int = 5, size: int = 2_000_000) -> list[str]:
    """About ``size`` characters of text with nothing to find: Faker prose, JSON records (UUIDs,
    timestamps, versions, SHA-1s, prices, dates), worker log lines and code snippets."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    texts: list[str] = []
    total = 0
    while total < size:
        r = fake.random.random()
        if r < 0.5:
            text = " ".join(fake.paragraphs(3))
        elif r < 0.7:
            record = {
                "id": fake.uuid4(),
                "created": fake.iso8601(),
                "count": fake.random_int(),
                "version": f"{fake.random_int(0, 9)}.{fake.random_int(0, 30)}.{fake.random_int(0, 9)}",
                "sha": fake.sha1(),
                "note": fake.sentence(),
                "price": fake.pricetag(),
                "date": fake.date(),
            }
            text = orjson.dumps(record).decode()
        elif r < 0.85:
            text = "\n".join(
                f"{fake.iso8601()} INFO worker-{fake.random_int(1, 64)} processed batch "
                f"{fake.random_int(10**5, 10**7)} in {fake.random_int(1, 999)}.{fake.random_int(0, 999)} ms "
                f"({fake.random_int(1, 500)} items, p99 {fake.random_int(1, 99)}.{fake.random_int(0, 9)} ms)"
                for _ in range(10)
            )
        else:
            text = (
                f"def f{fake.random_int()}(x, y=3):\n    return x[::2] + [y] * {fake.random_int(1, 100)}"
                f"  # TODO({fake.user_name()}): see #{fake.random_int(1, 9999)}\n"
            )
        texts.append(text)
        total += len(text)
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Precision and recall of the built-in detectors on the corpus.")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--show-misses", action="store_true", help="print false positives and misses")
    ap.add_argument("--held-out", action="store_true", help="use the held-out templates")
    args = ap.parse_args(argv)
    samples = generate(args.seed, args.samples, HELD_OUT_TEMPLATES if args.held_out else TEMPLATES)
    scanner = Scanner(DetectionConfig())
    print(f"{len(samples)} samples, seed {args.seed}, {sum(len(s.text) for s in samples) / 1e6:.2f} MB")
    columns = ("planted", "found", "recall", "reported", "correct", "precision")
    print(f"{'detector':14} " + " ".join(f"{c:>9}" for c in columns))
    for name, score in evaluate(scanner, samples).items():
        cells = (score.planted, score.found, f"{score.recall:.3f}", score.reported, score.correct)
        print(f"{name:14} " + " ".join(f"{c:>9}" for c in (*cells, f"{score.precision:.3f}")))
    free = pii_free_texts()
    alarms = sum(len(scanner.scan_texts([t]).findings) for t in free)
    print(f"findings in {sum(map(len, free)) / 1e6:.1f} MB of PII-free text: {alarms}")
    if args.show_misses:
        for detector, template, text in false_positives(scanner, samples):
            print(f"FP {detector:12} {template:16} {text!r}")
        for sample in samples:
            result = scanner.scan_texts([sample.text])
            for g in sample.labels:
                covered = any(
                    f.detector == g.detector and f.start <= g.start and g.end <= f.end
                    for f in result.findings
                )
                if not covered:
                    print(f"FN {g.detector:12} {sample.template:16} {sample.text[g.start : g.end]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The demo's workload: a fleet of warehouse-robot agents, as a seeded, open-loop trace.

Five workload classes (the classes of examples/demo.yaml) arrive as Poisson processes at their
calm rates for the whole run, plus extra Poisson arrivals during three **bursts** (at 12%, 30%
and 75% of the run, 7% of it each): the moments when every robot asks at once. A **cloud outage**
covers 40%-65% of the run by default. Everything — arrival times, prompt lengths, prompts,
planted sensitive values — comes from the seed, so every arm replays exactly the same requests at
exactly the same offsets.

=============  =====  ========  ============================================================
class          calm   burst +   what the requests are
=============  =====  ========  ============================================================
perception     4/s    4/s       label a camera frame: short prompt, 8 tokens
actuation      1.5/s  3/s       decide the next tool call: 150-400 words, 32 tokens
interactive    0.8/s  12/s      an operator's chat: 1,000-2,400 words of history, streamed,
                                128-256 tokens; 20% mention an email or a card
planning       0.4/s  0.5/s     plan the next shift: 400-1,200 words, 300-600 tokens; 10%
                                name an email
records        0.5/s  1/s       summarise a customer record: email, card and IBAN in every one
=============  =====  ========  ============================================================

Prompts are made of common English words that are single tokens of the generated tiny model, so
the local runtime's prefill work is what the lengths say; the long interactive histories are what
make the local runtime queue during bursts.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hybridgate.demo.sensitive import Planted, email, iban, payment_card

BURSTS = ((0.12, 0.07), (0.30, 0.07), (0.75, 0.07))  # (start, length) as shares of the run
OUTAGE = (0.40, 0.25)

_FILLER_TEXT = (
    "the of and to a in is it you that was for on are with as they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how an each which do their "
    "time if will way about many then them would like so these long make thing see two has look more "
    "day could go come did number no most people over know water than call first who may down side "
    "been now find any new work part take get place made live where after back little only round year "
    "came show every good give our under name very through just form great think say help low line "
    "turn cause much mean before move right old too same tell does set three want air well also play "
    "small end put home read hand large add even land here must big high such follow act why ask "
    "change went light kind off need house try again point world"
)
_FILLER = tuple(_FILLER_TEXT.split())

Message = tuple[str, str]  # (role, content)


@dataclass(frozen=True, slots=True)
class ClassSpec:
    """How one workload class arrives and what its requests look like."""

    name: str
    rate_per_s: float
    burst_rate_per_s: float
    words: tuple[int, int]
    max_tokens: tuple[int, ...]
    stream: bool
    sensitive_share: float


CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("perception", 4.0, 4.0, (40, 120), (8,), False, 0.0),
    ClassSpec("actuation", 1.5, 3.0, (150, 400), (32,), False, 0.0),
    ClassSpec("interactive", 0.8, 12.0, (1000, 2400), (128, 192, 256), True, 0.2),
    ClassSpec("planning", 0.4, 0.5, (400, 1200), (300, 450, 600), False, 0.1),
    ClassSpec("records", 0.5, 1.0, (150, 400), (64,), False, 1.0),
)
CLASS_NAMES = tuple(c.name for c in CLASSES)


@dataclass(frozen=True, slots=True)
class Schedule:
    """The run's length, its bursts and its cloud outage (seconds from the start)."""

    duration_s: float
    bursts: tuple[tuple[float, float], ...]
    outage: tuple[float, float] | None

    def phase(self, t: float) -> str:
        """``outage``, ``burst`` or ``calm`` at offset ``t``."""
        if self.outage is not None and self.outage[0] <= t < self.outage[1]:
            return "outage"
        return "burst" if any(lo <= t < hi for lo, hi in self.bursts) else "calm"


def make_schedule(duration_s: float, outage_start_s: float | None, outage_length_s: float | None) -> Schedule:
    """Bursts at fixed shares of the run; the outage at 40%-65% unless given (length 0: none)."""
    bursts = tuple(
        (round(start * duration_s, 3), round((start + length) * duration_s, 3)) for start, length in BURSTS
    )
    start = OUTAGE[0] * duration_s if outage_start_s is None else outage_start_s
    length = OUTAGE[1] * duration_s if outage_length_s is None else outage_length_s
    outage = (round(start, 3), round(min(duration_s, start + length), 3)) if length > 0 else None
    return Schedule(duration_s, bursts, outage)


@dataclass(frozen=True, slots=True)
class DemoRequest:
    """One request of the trace. ``t`` is its offset in seconds from the start of the run."""

    index: int
    t: float
    workload_class: str
    phase: str
    stream: bool
    max_tokens: int
    messages: tuple[Message, ...]
    planted: tuple[Planted, ...]

    @property
    def prompt_words(self) -> int:
        return sum(len(content.split()) for _, content in self.messages)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_FILLER) for _ in range(n))


Prompt = tuple[tuple[Message, ...], tuple[Planted, ...]]
_Template = Callable[[random.Random, int, int, bool], Prompt]


def _perception(rng: random.Random, index: int, words: int, sensitive: bool) -> Prompt:
    system = "You label camera frames for a warehouse robot. Answer with one word: clear, obstacle or person."
    user = f"Camera {rng.randrange(1, 9)}, frame {index}. Scene: {_words(rng, words)}. Label?"
    return (("system", system), ("user", user)), ()


def _actuation(rng: random.Random, index: int, words: int, sensitive: bool) -> Prompt:
    system = "You control a warehouse robot. Reply with the next tool call only."
    user = (
        f"Robot {rng.randrange(1, 40)} in aisle {rng.randrange(1, 25)}. Goal: {_words(rng, 12)}. "
        f"Observations: {_words(rng, words)}. Next action?"
    )
    return (("system", system), ("user", user)), ()


def _interactive(rng: random.Random, index: int, words: int, sensitive: bool) -> Prompt:
    turns = rng.randint(3, 6)
    per_turn = max(20, words // (2 * turns))
    planted = (rng.choice((email, payment_card))(rng, index),) if sensitive else ()
    leak_turn = rng.randrange(turns)
    messages: list[Message] = [("system", "You are the fleet assistant. Answer the operator briefly.")]
    for turn in range(turns):
        text = _words(rng, per_turn)
        if planted and turn == leak_turn:
            label = "reach me at" if planted[0].kind == "email" else "charge the spare parts to card"
            text = f"{text}. Please {label} {planted[0].value} for this."
        messages += [("user", text), ("assistant", _words(rng, per_turn))]
    messages.append(("user", f"{_words(rng, 15)}. What should the fleet do now?"))
    return tuple(messages), planted


def _planning(rng: random.Random, index: int, words: int, sensitive: bool) -> Prompt:
    planted = (email(rng, index),) if sensitive else ()
    escalation = f" Escalations go to {planted[0].value}." if planted else ""
    system = "You plan the next shift for a fleet of warehouse robots."
    user = (
        f"Orders: {_words(rng, words // 2)}. Constraints: {_words(rng, words - words // 2)}.{escalation} "
        "Write the plan for the next shift, step by step."
    )
    return (("system", system), ("user", user)), planted


def _records(rng: random.Random, index: int, words: int, sensitive: bool) -> Prompt:
    planted = (email(rng, index), payment_card(rng, index), iban(rng, index))
    system = "You summarise customer records for the support team."
    user = (
        f"Customer record {index}: email {planted[0].value}, card {planted[1].value}, "
        f"IBAN {planted[2].value}. Notes: {_words(rng, words)}. Summarise the account."
    )
    return (("system", system), ("user", user)), planted


TEMPLATES: dict[str, _Template] = {
    "perception": _perception,
    "actuation": _actuation,
    "interactive": _interactive,
    "planning": _planning,
    "records": _records,
}


def _arrivals(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    out: list[float] = []
    if rate <= 0:
        return out
    t = start + rng.expovariate(rate)
    while t < end:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def make_trace(
    seed: int, schedule: Schedule, rate_scale: float = 1.0, classes: Sequence[ClassSpec] = CLASSES
) -> tuple[DemoRequest, ...]:
    """Every class's arrivals over the run, ordered by time; the same for the same arguments.

    Each class draws from its own generator (seeded by the seed and its name), so the classes'
    traces do not depend on each other.
    """
    timed: list[tuple[float, ClassSpec, random.Random]] = []
    for spec in classes:
        rng = random.Random(f"hybridgate-demo:{seed}:{spec.name}")
        times = _arrivals(rng, spec.rate_per_s * rate_scale, 0.0, schedule.duration_s)
        for lo, hi in schedule.bursts:
            times += _arrivals(rng, spec.burst_rate_per_s * rate_scale, lo, hi)
        timed += [(t, spec, rng) for t in sorted(times)]
    timed.sort(key=lambda item: (item[0], item[1].name))
    requests = []
    for index, (t, spec, rng) in enumerate(timed):
        sensitive = rng.random() < spec.sensitive_share
        messages, planted = TEMPLATES[spec.name](rng, index, rng.randint(*spec.words), sensitive)
        requests.append(
            DemoRequest(
                index=index,
                t=round(t, 4),
                workload_class=spec.name,
                phase=schedule.phase(t),
                stream=spec.stream,
                max_tokens=rng.choice(spec.max_tokens),
                messages=messages,
                planted=planted,
            )
        )
    return tuple(requests)

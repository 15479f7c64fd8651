"""Sensitive values planted in the demo's prompts: emails, payment cards, IBANs.

Each value is unique within a trace (the request's index is part of it), so finding it in what a
cloud received names the request that leaked it. Cards are Luhn-valid Visa numbers and IBANs
have valid check digits — computed with the gateway's own validators, so the values are exactly
what its scan is meant to find.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hybridgate.privacy.validators import iban_valid, luhn_valid

FIRST_NAMES = ("ada", "grace", "alan", "edsger", "barbara", "ken", "radia", "linus", "margaret", "tim")
LAST_NAMES = ("lovelace", "hopper", "turing", "dijkstra", "liskov", "thompson", "perlman", "hamilton")
DOMAINS = ("example.com", "mail.example.org", "customers.example.net")


@dataclass(frozen=True, slots=True)
class Planted:
    """One value in a prompt, and the kind the gateway's scan reports for it."""

    kind: str
    value: str


def email(rng: random.Random, index: int) -> Planted:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return Planted("email", f"{first}.{last}.{index}@{rng.choice(DOMAINS)}")


def payment_card(rng: random.Random, index: int) -> Planted:
    """A 16-digit Visa number, printed in groups of four; the request index in its middle digits."""
    body = "4" + f"{index % 1_000_000:06d}" + "".join(str(rng.randrange(10)) for _ in range(8))
    check = next(d for d in "0123456789" if luhn_valid(body + d))
    digits = body + check
    return Planted("payment_card", " ".join(digits[i : i + 4] for i in range(0, 16, 4)))


def iban(rng: random.Random, index: int) -> Planted:
    """A German IBAN (DE, two check digits, 18 digits), printed in groups of four."""
    bban = f"{rng.randrange(10**7, 10**8)}" + f"{index % 10**10:010d}"
    compact = next(f"DE{c:02d}{bban}" for c in range(2, 99) if iban_valid(f"DE{c:02d}{bban}"))
    return Planted("iban", " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)))

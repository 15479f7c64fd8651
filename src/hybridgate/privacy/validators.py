"""Checksums and range rules that turn a pattern match into a finding.

Each validator is a pure function of the candidate's characters; none of them allocates more
than the candidate itself, so a detector's cost stays linear in its input.
"""

from __future__ import annotations

import ipaddress
from types import MappingProxyType

# Doubling table of the Luhn algorithm: digit d at an even position from the right counts 2d,
# minus 9 when that is two digits.
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")

#: IBAN length per country (ISO 13616 registry, SWIFT release 2024).
IBAN_LENGTHS = MappingProxyType(
    {
        "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
        "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
        "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
        "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
        "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
        "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
        "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
        "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
        "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
        "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
    }
)  # fmt: skip


def luhn_valid(digits: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn (mod 10) check."""
    total = sum(map(int, digits[-1::-2])) + sum(map(int, digits[-2::-2].translate(_LUHN_DOUBLED)))
    return total % 10 == 0


def card_brand_plausible(digits: str) -> bool:
    """Whether the issuer prefix and the length fit a card scheme that uses 13-19 digits.

    Visa 4 (13, 16, 19); Mastercard 51-55 and 2221-2720 (16); American Express 34, 37 (15);
    Diners 300-305, 36, 38, 39 (14-19); JCB 35 (16-19) and the older 1800, 2131 (15);
    Discover, UnionPay, Maestro and the other 5x/6x schemes (13-19).
    """
    n = len(digits)
    if not 13 <= n <= 19:
        return False
    first = digits[0]
    if first == "4":
        return n in (13, 16, 19)
    if first == "5":
        return n == 16 if "51" <= digits[:2] <= "55" else True
    if first == "6":
        return True
    if first in "12" and n == 15:
        return digits[:4] in ("1800", "2131")
    if first == "2":
        return n == 16 and "2221" <= digits[:4] <= "2720"
    if first == "3":
        two = digits[:2]
        if two in ("34", "37"):
            return n == 15
        if two == "35":
            return n >= 16
        return (two in ("36", "38", "39") or "300" <= digits[:3] <= "305") and n >= 14
    return False


def iban_valid(compact: str) -> bool:
    """Whether an IBAN without spaces has its country's length and a valid mod-97 checksum."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    # Letters count as 10..35 (A=10); int() of the digit string is exact for any IBAN length.
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """The US SSA's rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def ipv4_public_enough(octets: tuple[str, ...]) -> bool:
    """Valid dotted-quad octets, excluding what identifies no one.

    Rejects octets above 255 and with leading zeros (version numbers look like that), the
    unspecified and loopback ranges (``0.x``, ``127.x``) and netmasks (``255.x``).
    """
    for octet in octets:
        if len(octet) > 1 and octet[0] == "0":
            return False
        if int(octet) > 255:
            return False
    return octets[0] not in ("0", "127", "255")


def ipv6_plausible(candidate: str) -> bool:
    """A parseable IPv6 address that is not loopback/unspecified and has at least 4 hex digits.

    The digit floor keeps slices and scopes of program text (``a::b``, ``x[::2]``) out.
    """
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    if address.is_loopback or address.is_unspecified:
        return False
    hex_digits = sum(1 for c in candidate if c not in ":.")
    return hex_digits >= 4 and sum(1 for g in candidate.split(":") if g) >= 2

"""Each built-in detector: values it must find (with the exact span) and hard negatives it must not."""

from __future__ import annotations

import pytest

from hybridgate.config.governance import DetectionConfig
from hybridgate.privacy import Scanner, builtin_detectors, detector_names
from hybridgate.privacy.validators import card_brand_plausible, iban_valid, luhn_valid, ssn_valid

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM_BODY = (
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
)
KEYS = {
    "openai_project": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb3dEf6h",
    "openai": "sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb3dEf6hIj9k",
    "anthropic": "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe9Dc8Ba7",
    "slack": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
}


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner(DetectionConfig(), cache_entries=0)


def found(scanner: Scanner, text: str, detector: str) -> list[str]:
    result = scanner.scan_texts([text])
    assert not result.failed, result.reason
    return [text[f.start : f.end] for f in result.findings if f.detector == detector]


# --------------------------------------------------------------------------- detectors: found

POSITIVES = [
    ("email", "write to jane.doe@example.org today", "jane.doe@example.org"),
    ("email", "cc: first.last+tag@mail.sub.company.co.uk.", "first.last+tag@mail.sub.company.co.uk"),
    ("email", "mailto:x_y@a-b.io", "x_y@a-b.io"),
    ("email", "<Ana.Lima@Empresa.COM.br>", "Ana.Lima@Empresa.COM.br"),
    ("phone", "call +1 415 555 2671 now", "+1 415 555 2671"),
    ("phone", "tel: +14155552671", "+14155552671"),
    ("phone", "(415) 555-2671", "(415) 555-2671"),
    ("phone", "cell 415.555.2671", "415.555.2671"),
    ("phone", "dial 1-800-555-0199", "1-800-555-0199"),
    ("phone", "Office: 206.269.0743x9150", "206.269.0743x9150"),
    ("phone", "UK +44 (0)20 7946 0958.", "+44 (0)20 7946 0958"),
    ("phone", "London 020 7946 0958", "020 7946 0958"),
    ("phone", "(0161) 496 0066", "(0161) 496 0066"),
    ("phone", "Paris 06 12 34 56 78", "06 12 34 56 78"),
    ("phone", "Berlin 030/12345678", "030/12345678"),
    ("phone", "+49 (0) 9141 777631", "+49 (0) 9141 777631"),
    ("phone", "mobile 07700900123", "07700900123"),
    ("phone", "Telefonnummer: 3420837783", "3420837783"),
    ("payment_card", "card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
    ("payment_card", "pan=4111111111111111;", "4111111111111111"),
    ("payment_card", "5555-5555-5555-4444", "5555-5555-5555-4444"),
    ("payment_card", "amex 3782 822463 10005", "3782 822463 10005"),
    ("payment_card", "visa13 4222222222222", "4222222222222"),
    ("payment_card", "in 2024 4111 1111 1111 1111 was used", "4111 1111 1111 1111"),
    ("iban", "IBAN DE89 3704 0044 0532 0130 00 EUR", "DE89 3704 0044 0532 0130 00"),
    ("iban", "GB82WEST12345698765432", "GB82WEST12345698765432"),
    ("iban", "to NL91ABNA0417164300.", "NL91ABNA0417164300"),
    ("iban", "FR1420041010050500013M02606", "FR1420041010050500013M02606"),
    ("us_ssn", "SSN 536-22-1234", "536-22-1234"),
    ("us_ssn", "ssn: 078051120", "078051120"),
    ("us_ssn", "id 536 22 1234 on file", "536 22 1234"),
    ("ipv4", "server 10.0.0.5:8080", "10.0.0.5"),
    ("ipv4", "via 192.168.1.20/24", "192.168.1.20"),
    ("ipv6", "addr 2001:db8::8a2e:370:7334 ok", "2001:db8::8a2e:370:7334"),
    ("ipv6", "link fe80::1ff:fe23:4567:890a%eth0", "fe80::1ff:fe23:4567:890a"),
    ("ipv6", "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334.", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("ipv6", "http://[2001:db8::1]:8080/", "2001:db8::1"),
    ("api_key", "key " + KEYS["openai_project"], KEYS["openai_project"]),
    ("api_key", "OPENAI_API_KEY=" + KEYS["openai"], KEYS["openai"]),
    ("api_key", "x-api-key: " + KEYS["anthropic"], KEYS["anthropic"]),
    ("api_key", "AWS_ACCESS_KEY_ID=AKIA2E3F4G5H6J7K2L3M", "AKIA2E3F4G5H6J7K2L3M"),
    ("api_key", "token ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hI6", "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hI6"),
    ("api_key", "bot " + KEYS["slack"], KEYS["slack"]),
    ("api_key", "maps AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    ("api_key", "stripe sk_live_51H8x2aLkQ9vZ3bT7cY1dW4eR6", "sk_live_51H8x2aLkQ9vZ3bT7cY1dW4eR6"),
    ("jwt", f"Authorization: Bearer {JWT}", JWT),
    ("private_key", f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}-----END RSA PRIVATE KEY-----",
     f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}-----END RSA PRIVATE KEY-----"),
    ("private_key", f"x -----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}-----END OPENSSH PRIVATE KEY----- y",
     f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}-----END OPENSSH PRIVATE KEY-----"),
    ("private_key", f"cut: -----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n\nthe rest was lost",
     f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY.rstrip()}"),
    ("url_password", "postgres://admin:s3cr3tP4ss@db.internal:5432/app", "s3cr3tP4ss"),
    ("url_password", "redis://:p4ssw0rd!@cache:6379/0", "p4ssw0rd!"),
    ("url_password", "https://bob:p@ss@host.example/x", "p@ss"),
]  # fmt: skip


@pytest.mark.parametrize(("detector", "text", "value"), POSITIVES)
def test_detector_finds(scanner: Scanner, detector: str, text: str, value: str) -> None:
    assert found(scanner, text, detector) == [value]


def test_aws_secret_key_is_found_next_to_its_key_id_or_after_a_label(scanner: Scanner) -> None:
    secret = "Wj4lrXUtnFEMI/K7MDENG/bPxRfiCY1234567890"
    assert secret in found(scanner, f"AKIA2E3F4G5H6J7K2L3M {secret}", "api_key")
    assert found(scanner, f"aws_secret_access_key = {secret}", "api_key") == [secret]
    assert found(scanner, f"random token {secret}", "api_key") == []
    # a git SHA-1 (40 hex digits, no upper case) is not a secret key, even next to a key id
    assert found(scanner, "AKIA2E3F4G5H6J7K2L3M 3f786850e387550fdab836ed7e6dc881de23001b", "api_key") == [
        "AKIA2E3F4G5H6J7K2L3M"
    ]


def test_values_behind_json_escapes_are_found(scanner: Scanner) -> None:
    text = '{"log": "line one\\nAKIA2E3F4G5H6J7K2L3M\\n4111 1111 1111 1111\\tok"}'
    assert found(scanner, text, "api_key") == ["AKIA2E3F4G5H6J7K2L3M"]
    assert found(scanner, text, "payment_card") == ["4111 1111 1111 1111"]


# --------------------------------------------------------------------------- detectors: not found

NEGATIVES = [
    (
        "email",
        [
            "logo@2x.png",
            "npm i lodash@4.17.21",
            "@app.route('/x')",
            "root@localhost",
            "ssh git@github.com",
            "postgres://u:Pa55word@db.example.com/x",
            "ssh://deploy@host.example.com",
            "a@b",
        ],
    ),
    (
        "phone",
        [
            "2024-01-15",
            "15.01.2024",
            "01/02/2024 10:30",
            "v1.2.3",
            "version 10.2.3.4",
            "ORD-555-123-4567",
            "order 3420837783",
            "+100",
            "+2024",
            "10:30:00",
            "192.168.100.200",
            "4111 1111 1111 1111",
            "536-22-1234",
            "013-16-6158",
            "ZIP 08829-9471",
            "ISBN 978-3-16-148410-0",
            "1700000000123",
            "$1,234.56",
            "pages 100-200",
            "2019-2024",
            "555-123-4567abc",
            "PO 4500012345",
            "DE89 3704 0044 0532 0130 00",
            "Mon, 15 Jan 2024 10:30:00 +0000",
            "2024-01-15T10:30:00+01:00",
            "uuid 123e4567-e89b-12d3-a456-426614174000",
        ],
    ),
    (
        "payment_card",
        [
            "4111 1111 1111 1112",
            "4111111111111112",
            "1234 5678 9012 3456",
            "1234567890123452",
            "epoch 1705314600123",
            "0000000000000000",
            "order 4111-1111-1111-111",
            "v4111111111111111",
            "GB82 WEST 1234 5698 7654 32",
        ],
    ),
    (
        "iban",
        [
            "DE89 3704 0044 0532 0130 01",
            "DE89370400440532013000A",
            "GB82WEST1234569876543",
            "XX89370400440532013000",
            "de89370400440532013000",
            "ISBN9783161484100",
        ],
    ),
    (
        "us_ssn",
        [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-99-9999",
            "536-00-1234",
            "536-22-0000",
            "536221234",
            "2024-01-15",
            "12345-6789",
            "536-22-12345",
            "ID-536-22-1234",
        ],
    ),
    (
        "ipv4",
        [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.0",
            "version 1.2.3.4",
            "Chrome/120.0.6099.109",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.02.03.04",
            "v1.2.3.4",
            "build 10.0.19045.3803",
        ],
    ),
    (
        "ipv6",
        [
            "::1",
            "::",
            "10:30:00",
            "00:1A:2B:3C:4D:5E",
            "std::vector<int>",
            "a::b",
            "x[::2]",
            "Foo::Bar::baz",
            "dead:beef",
        ],
    ),
    (
        "api_key",
        [
            "sk-your-api-key-here",
            "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "AKIAIOSFODNN7EXAMPLE",
            "task-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
            "git 3f786850e387550fdab836ed7e6dc881de23001b",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY secret",
            "desk-lamp-model-2024-edition-black",
        ],
    ),
    (
        "jwt",
        [
            "eyJhbGciOiJIUzI1NiJ9",
            "eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.c2ln",
            "com.example.app",
            "eyJ!!!.abc.def",
            "aeyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.sig",
        ],
    ),
    (
        "private_key",
        [
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
            "the PRIVATE KEY file",
        ],
    ),
    (
        "url_password",
        [
            "postgres://user:${DB_PASSWORD}@db/x",
            "postgres://user:password@localhost/x",
            "redis://:****@cache:6379",
            "https://example.com/a:b@c",
            "mysql://u:<password>@h/d",
            "https://host/path?user=a:b@c",
            "http://user@host.example.com",
        ],
    ),
]


@pytest.mark.parametrize(
    ("detector", "text"), [(detector, text) for detector, texts in NEGATIVES for text in texts]
)
def test_detector_ignores_hard_negative(scanner: Scanner, detector: str, text: str) -> None:
    assert found(scanner, text, detector) == []


def test_validators() -> None:
    assert luhn_valid("79927398713")
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("79927398710")
    assert card_brand_plausible("378282246310005")
    assert not card_brand_plausible("1234567890123456")
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("GB82WEST1234569876543")  # one character short for GB
    assert ssn_valid("536", "22", "1234")
    assert not ssn_valid("666", "22", "1234")


def test_every_builtin_has_a_name_kind_and_is_listed() -> None:
    kinds = {"email", "phone", "payment_card", "iban", "national_id", "ip_address", "secret"}
    for name, factory in builtin_detectors().items():
        detector = factory()
        assert detector.name == name
        assert detector.kind in kinds
    assert set(builtin_detectors()) <= set(detector_names())

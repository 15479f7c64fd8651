"""Values for the privacy corpus's template fields (see ``tests/privacy_corpus.py``).

Planted values come from Faker (seeded) and from generators of the documented credential
formats; hard negatives (``neg_*``) look like them and must not be found.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import string
from collections.abc import Callable

import orjson
from faker import Faker

PHONE_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT")
IBAN_LOCALES = ("en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT")
CARD_TYPES = ("visa16", "visa13", "visa19", "mastercard", "amex", "discover", "jcb15", "jcb16", "diners")
B64URL = string.ascii_letters + string.digits + "-_"
ALNUM = string.ascii_letters + string.digits


class Values:
    """Values for template fields, all drawn from one seeded RNG and seeded Faker instances."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers: dict[str, Faker] = {}
        for i, locale in enumerate(sorted({"en_US", *PHONE_LOCALES, *IBAN_LOCALES})):
            self.fakers[locale] = Faker(locale)
            self.fakers[locale].seed_instance(seed * 1000 + i)
        self.fake = self.fakers["en_US"]

    def _chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def get(self, field: str) -> str:
        method: Callable[[], str] | None = getattr(self, f"_{field}", None)
        if method is None:
            raise KeyError(f"template field {field!r} has no generator")
        return method()

    # ---------------------------------------------------------------- planted values
    def _email(self) -> str:
        f, r = self.fake, self.rng.random()
        if r < 0.4:
            return f.email()
        if r < 0.7:
            return f.company_email()
        return f"{f.first_name().lower()}.{f.last_name().lower()}+{f.word()}@{f.domain_word()}.co.uk"

    def _phone(self) -> str:
        return self.fakers[self.rng.choice(PHONE_LOCALES)].phone_number()

    def _payment_card(self) -> str:
        card_type = self.rng.choice(CARD_TYPES)
        number = self.fake.credit_card_number(card_type=card_type)
        style = self.rng.random()
        if style < 0.4:
            return number
        sep = " " if style < 0.8 else "-"
        if len(number) == 15 and number[:2] in ("34", "37"):
            return sep.join((number[:4], number[4:10], number[10:]))
        return sep.join(number[i : i + 4] for i in range(0, len(number), 4))

    def _iban(self) -> str:
        value: str = self.fakers[self.rng.choice(IBAN_LOCALES)].iban()
        if self.rng.random() < 0.5:
            return value
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))

    def _us_ssn(self) -> str:
        value: str = self.fake.ssn()
        return value

    def _ipv4(self) -> str:
        value: str = self.fake.ipv4_public() if self.rng.random() < 0.7 else self.fake.ipv4_private()
        return value

    def _ipv6(self) -> str:
        value: str = self.fake.ipv6()
        if self.rng.random() < 0.5:
            return value
        groups = value.split(":")
        groups[2:5] = ["0", "0", "0"]  # a run of zeros, so that the compressed form has ::
        return ipaddress.IPv6Address(":".join(groups)).compressed

    def _api_key(self) -> str:
        family = self.rng.randrange(8)
        if family == 0:
            return "sk-" + self._chars(ALNUM, 48)
        if family == 1:
            return "sk-proj-" + self._chars(B64URL, 156)
        if family == 2:
            return "sk-ant-api03-" + self._chars(B64URL, 93) + "AA"
        if family == 3:
            return self._github_token()
        if family == 4:
            digits = self._chars(string.digits, 25)
            return f"xoxb-{digits[:12]}-{digits[12:]}-{self._chars(ALNUM, 24)}"
        if family == 5:
            return "AIza" + self._chars(B64URL, 35)
        if family == 6:
            return "sk_live_" + self._chars(ALNUM, 99)
        return self._aws_key_id()

    def _aws_key_id(self) -> str:
        return "AKIA" + self._chars(string.ascii_uppercase + "234567", 16)

    def _aws_secret(self) -> str:
        return self._chars(ALNUM + "/+", 40)

    def _github_token_in_url(self) -> str:
        return self._github_token()

    def _github_token(self) -> str:
        if self.rng.random() < 0.7:
            return "ghp_" + self._chars(ALNUM, 36)
        return "github_pat_" + self._chars(ALNUM + "_", 82)

    def _jwt(self) -> str:
        def segment(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        alg = self.rng.choice(("HS256", "RS256", "ES256"))
        header = orjson.dumps({"alg": alg, "typ": "JWT"})
        claims = {
            "sub": self.fake.uuid4(),
            "name": self.fake.name(),
            "iat": self.rng.randrange(1_600_000_000, 1_800_000_000),
        }
        signature = self.rng.randbytes(32 if alg == "HS256" else 64)
        return ".".join((segment(header), segment(orjson.dumps(claims)), segment(signature)))

    def _private_key(self) -> str:
        label = self.rng.choice(("RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"))
        body = base64.b64encode(self.rng.randbytes(self.rng.choice((121, 608, 1190)))).decode()
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----"

    def _url_password(self) -> str:
        password: str = self.fake.password(length=self.rng.randrange(10, 21), special_chars=False)
        if self.rng.random() < 0.3:
            at = self.rng.randrange(len(password))
            password = password[:at] + self.rng.choice("!-_.~*") + password[at:]
        return password

    # ---------------------------------------------------------------- hard negatives
    def _neg_date(self) -> str:
        fmt = self.rng.choice(
            ("%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y", "%d/%m/%Y", "%B %d, %Y", "%Y%m%d", "%d %b %Y")
        )
        return self.fake.date_object().strftime(fmt)

    def _neg_time(self) -> str:
        return self.fake.time(pattern=self.rng.choice(("%H:%M", "%H:%M:%S")))

    def _neg_iso(self) -> str:
        stamp = self.fake.date_time().strftime("%Y-%m-%dT%H:%M:%S")
        return stamp + self.rng.choice(
            (".123Z", "Z", "+01:00", "-05:00", f".{self.rng.randrange(10**6):06d}")
        )

    def _neg_rfcdate(self) -> str:
        return self.fake.date_time().strftime("%a, %d %b %Y %H:%M:%S ") + self.rng.choice(
            ("+0000", "-0700", "+0100")
        )

    def _neg_version(self) -> str:
        return f"{self.rng.randrange(0, 30)}.{self.rng.randrange(0, 40)}.{self.rng.randrange(0, 20)}"

    def _neg_ver4(self) -> str:
        return ".".join(str(self.rng.randrange(0, 30)) for _ in range(4))

    def _neg_build(self) -> str:
        return f"10.0.{self.rng.randrange(17000, 26000)}.{self.rng.randrange(100, 5000)}"

    def _neg_chrome(self) -> str:
        return (
            f"{self.rng.randrange(90, 130)}.0.{self.rng.randrange(4000, 7000)}.{self.rng.randrange(10, 250)}"
        )

    def _neg_order(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return f"ORD-{self.rng.randrange(2019, 2026)}-{self.rng.randrange(10**6):06d}"
        if r < 0.7:
            return f"#{self.rng.randrange(10**5, 10**7)}"
        return f"A-{self.rng.randrange(10**4, 10**5)}-{self.rng.randrange(10, 99)}"

    def _neg_invoice(self) -> str:
        return f"INV-{self.fake.date_object().strftime('%Y%m%d')}-{self.rng.randrange(10**4):04d}"

    def _neg_amount(self) -> str:
        value = self.rng.randrange(100, 10**7) / 100
        r = self.rng.random()
        if r < 0.4:
            return f"${value:,.2f}"
        if r < 0.7:
            return "EUR " + f"{value:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")
        return f"{value:.2f} GBP"

    def _neg_float(self) -> str:
        return f"{self.rng.random() * 1000:.{self.rng.randrange(1, 4)}f}"

    def _neg_small(self) -> str:
        return str(self.rng.randrange(1, 20))

    def _neg_port(self) -> str:
        return str(self.rng.choice((80, 443, 5432, 6379, 8080, 8443, self.rng.randrange(1024, 65536))))

    def _neg_int3(self) -> str:
        return str(self.rng.randrange(100, 1000))

    def _neg_int4(self) -> str:
        return f"{self.rng.randrange(10**4):04d}"

    def _neg_int6(self) -> str:
        return str(self.rng.randrange(10**5, 10**6))

    def _neg_int8(self) -> str:
        return str(self.rng.randrange(10**7, 10**8))

    def _neg_int10(self) -> str:
        return str(self.rng.randrange(10**9, 10**10))

    def _neg_uuid(self) -> str:
        value: str = self.fake.uuid4()
        return value

    def _neg_sha(self) -> str:
        return self._chars("0123456789abcdef", 40)

    def _neg_sha256(self) -> str:
        return self._chars("0123456789abcdef", 64)

    def _neg_hexaddr(self) -> str:
        return self.rng.choice(("0x", "0000", "00007f")) + self._chars("0123456789abcdef", 12)

    def _neg_epoch_ms(self) -> str:
        return str(self.rng.randrange(1_500_000_000_000, 1_800_000_000_000))

    def _neg_b64(self) -> str:
        return base64.b64encode(self.rng.randbytes(self.rng.randrange(30, 90))).decode()

    def _neg_mac(self) -> str:
        value: str = self.fake.mac_address()
        return value

    def _neg_card(self) -> str:
        card = self._payment_card()
        last = card[-1]
        return card[:-1] + str((int(last) + self.rng.randrange(1, 10)) % 10)  # breaks the Luhn sum

    def _neg_iban(self) -> str:
        value = self._iban().replace(" ", "")
        check = int(value[2:4])
        wrong = (check + self.rng.randrange(1, 97)) % 97 or 98
        return f"{value[:2]}{wrong:02d}{value[4:]}"

    def _neg_ssn(self) -> str:
        area = self.rng.choice(("000", "666", str(self.rng.randrange(900, 1000))))
        group, serial = f"{self.rng.randrange(1, 100):02d}", f"{self.rng.randrange(1, 10**4):04d}"
        r = self.rng.random()
        if r < 0.2:
            group = "00"
            area = f"{self.rng.randrange(1, 666):03d}"
        elif r < 0.4:
            serial = "0000"
            area = f"{self.rng.randrange(1, 666):03d}"
        return f"{area}-{group}-{serial}"

    def _neg_zip(self) -> str:
        return self.fake.postcode() if self.rng.random() < 0.6 else self.fake.zipcode_plus4()

    def _neg_isbn(self) -> str:
        value: str = self.fake.isbn13()
        return value

    def _neg_tracking(self) -> str:
        return "1Z" + self._chars(string.ascii_uppercase + string.digits, 16)

    def _neg_serial(self) -> str:
        return f"SN-{self.rng.randrange(10**5, 10**6)}-{self.rng.randrange(10**3, 10**4)}"

    def _neg_range(self) -> str:
        a = self.rng.randrange(1990, 2030)
        return self.rng.choice((f"{a}-{a + 5}", f"{a} - {a + 3}", f"{self.rng.randrange(10, 500)}-{a}"))

    def _neg_exp(self) -> str:
        return f"{self.rng.randrange(1, 13):02d}/{self.rng.randrange(25, 32)}"

    def _neg_cert(self) -> str:
        label = self.rng.choice(("CERTIFICATE", "PUBLIC KEY", "CERTIFICATE REQUEST"))
        body = base64.b64encode(self.rng.randbytes(300)).decode()
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----"

    def _neg_api_key(self) -> str:
        return self.rng.choice(
            ("sk-your-api-key-here", "sk-...", "<your-key>", "sk-" + "x" * 32, "${OPENAI_API_KEY}")
        )

    def _neg_password(self) -> str:
        return self.rng.choice(
            ("${DB_PASSWORD}", "password", "****", "<password>", "{{ db_password }}", "$PGPASSWORD")
        )

    # ---------------------------------------------------------------- filler
    def _name(self) -> str:
        value: str = self.fake.name()
        return value

    def _first(self) -> str:
        value: str = self.fake.first_name()
        return value

    def _company(self) -> str:
        value: str = self.fake.company()
        return value

    def _job(self) -> str:
        value: str = self.fake.job()
        return value

    def _sentence(self) -> str:
        value: str = self.fake.sentence()
        return value

    def _paragraph(self) -> str:
        value: str = self.fake.paragraph(nb_sentences=self.rng.randrange(2, 6))
        return value

    def _address(self) -> str:
        value: str = self.fake.address()
        return value.replace("\n", ", ")

    def _word(self) -> str:
        value: str = self.fake.word()
        return value

    def _user(self) -> str:
        value: str = self.fake.user_name()
        return value

    def _host(self) -> str:
        value: str = self.fake.domain_name()
        return value

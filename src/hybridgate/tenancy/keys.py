"""API keys of the store: their format, their hash, and what a key record holds.

A key is ``hg_<id>_<secret>``: ``id`` (12 hex digits) is public, shown in listings, logs and
the audit trail; ``secret`` (43 URL-safe characters, 256 random bits) is shown once at creation.
The store holds only the SHA-256 of the secret: a high-entropy secret needs no slow hash, and
the comparison is constant-time.

    >>> key = new_key()
    >>> parsed = parse_key(key.token)
    >>> parsed is not None and parsed[0] == key.key_id
    True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, get_args

from hybridgate.config.governance import Sensitivity
from hybridgate.config.schema import Scope
from hybridgate.policy.context import ClientIdentity

SCOPES: tuple[Scope, ...] = get_args(Scope)
ALL_SCOPES: frozenset[str] = frozenset(SCOPES)
PREFIX = "hg_"
_TOKEN = re.compile(r"^hg_([0-9a-f]{12})_([A-Za-z0-9_\-]{43})$")


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    token: str  # shown once, never stored
    secret_sha256: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, f"{PREFIX}{key_id}_{secret}", _digest(secret))


def parse_key(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed store key, else None (perhaps a config key)."""
    match = _TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, secret_sha256: str) -> bool:
    return hmac.compare_digest(_digest(secret), secret_sha256)


@dataclass(frozen=True, slots=True)
class KeyDefaults:
    """What a key pins or defaults for its requests (see policy/context.py)."""

    default_class: str | None = None
    classes: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    region: str | None = None
    sensitivity: Sensitivity | None = None
    rpm: int | None = None
    tpm: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "default_class": self.default_class,
            "classes": list(self.classes) if self.classes is not None else None,
            "models": list(self.models) if self.models is not None else None,
            "region": self.region,
            "sensitivity": self.sensitivity,
            "rpm": self.rpm,
            "tpm": self.tpm,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyDefaults:
        classes, models = data.get("classes"), data.get("models")
        return cls(
            default_class=data.get("default_class"),
            classes=tuple(classes) if classes is not None else None,
            models=tuple(models) if models is not None else None,
            region=data.get("region"),
            sensitivity=data.get("sensitivity"),
            rpm=data.get("rpm"),
            tpm=data.get("tpm"),
        )


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as the store holds it (the secret's hash, never the secret)."""

    key_id: str
    tenant: str
    name: str
    scopes: frozenset[str]
    defaults: KeyDefaults = field(default_factory=KeyDefaults)
    created_at: float = 0.0
    revoked_at: float | None = None
    secret_sha256: str = field(default="", repr=False)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def identity(self) -> ClientIdentity:
        d = self.defaults
        return ClientIdentity(
            key_id=PREFIX + self.key_id,
            tenant=self.tenant,
            default_class=d.default_class,
            classes=frozenset(d.classes) if d.classes is not None else None,
            region=d.region,
            sensitivity=d.sensitivity,
            models=frozenset(d.models) if d.models is not None else None,
            scopes=self.scopes,
            rpm=d.rpm,
            tpm=d.tpm,
        )

    def public(self) -> dict[str, Any]:
        """What listings and the admin API show."""
        return {
            "id": PREFIX + self.key_id,
            "tenant": self.tenant,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "defaults": self.defaults.to_json(),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }

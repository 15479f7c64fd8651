"""Tenant and key administration shared by the CLI and the admin HTTP API.

Both go through :class:`Admin`, so a key is created, listed and revoked the same way, with the
same validation and the same audit entry. Payloads are validated by pydantic models (unknown
fields are errors). The key's secret is returned once, by ``create_key``, and never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, ValidationError

from hybridgate.config.base import Name, Strict
from hybridgate.config.governance import Sensitivity
from hybridgate.config.schema import Scope
from hybridgate.config.tenancy import BudgetConfig
from hybridgate.errors import InvalidRequest
from hybridgate.tenancy.audit import AuditWriter
from hybridgate.tenancy.keys import PREFIX, KeyDefaults, KeyRecord, new_key
from hybridgate.tenancy.store import SQLStore
from hybridgate.wire.common import validation_message


class TenantSpec(Strict):
    name: Name = Field(..., description="Tenant name.")


def _use_only() -> list[Scope]:
    return ["use"]


class KeySpec(Strict):
    tenant: Name
    name: str = Field("", max_length=200, description="A label for people.")
    scopes: list[Scope] = Field(default_factory=_use_only, min_length=1)
    default_class: Name | None = None
    classes: list[Name] | None = None
    models: list[Name] | None = None
    region: str | None = Field(None, min_length=1, max_length=64)
    sensitivity: Sensitivity | None = None
    rpm: int | None = Field(None, gt=0, description="Requests per minute (default: tenancy.rate_limits).")
    tpm: int | None = Field(None, gt=0, description="Tokens per minute (default: tenancy.rate_limits).")


class BudgetName(Strict):
    name: Name


class RevokeSpec(Strict):
    id: str = Field(..., min_length=1, max_length=64, description="The key id, hg_<id>.")


def parse(model: type[Strict], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        message, param = validation_message(exc, body)
        raise InvalidRequest(message, param=param) from None


def key_id_of(text: str) -> str:
    """``hg_0123456789ab`` (or just the hex id) -> ``0123456789ab``; 400 otherwise."""
    key_id = text[len(PREFIX) :] if text.startswith(PREFIX) else text
    if len(key_id) != 12 or any(c not in "0123456789abcdef" for c in key_id):
        raise InvalidRequest(f"not a key id: {text[:20]!r} (expected hg_ and 12 hex digits)", param="id")
    return key_id


class Admin:
    """Administration over a synchronous store (call it off the event loop in the server)."""

    def __init__(
        self,
        store: SQLStore,
        audit: Callable[[dict[str, Any]], None] | None,
        now: Callable[[], float],
        configured_budgets: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self._audit = audit
        self._now = now
        self._configured = configured_budgets

    def _record(self, actor: str, action: str, **target: Any) -> None:
        if self._audit is not None:
            self._audit({"event": "admin", "actor": actor, "action": action, **target})

    def create_tenant(self, spec: TenantSpec, actor: str) -> dict[str, Any]:
        self.store.create_tenant(spec.name, self._now())
        self._record(actor, "tenant.create", tenant=spec.name)
        return {"name": spec.name}

    def create_key(self, spec: KeySpec, actor: str) -> tuple[KeyRecord, str]:
        """The record and the token (shown once)."""
        key = new_key()
        defaults = KeyDefaults(
            spec.default_class,
            tuple(spec.classes) if spec.classes is not None else None,
            tuple(spec.models) if spec.models is not None else None,
            spec.region,
            spec.sensitivity,
            spec.rpm,
            spec.tpm,
        )
        record = self.store.create_key(
            key,
            spec.tenant,
            name=spec.name,
            scopes=frozenset(spec.scopes),
            defaults=defaults,
            now=self._now(),
        )
        self._record(
            actor, "key.create", tenant=spec.tenant, key=PREFIX + key.key_id, scopes=sorted(spec.scopes)
        )
        return record, key.token

    def revoke_key(self, spec: RevokeSpec, actor: str) -> KeyRecord:
        record = self.store.revoke_key(key_id_of(spec.id), self._now())
        self._record(actor, "key.revoke", tenant=record.tenant, key=PREFIX + record.key_id)
        return record

    def set_budget(self, spec: BudgetConfig, actor: str) -> bool:
        """Create or replace a budget in the store; True when it is new."""
        if spec.name in self._configured:
            raise InvalidRequest(f"budget {spec.name!r} is defined in the configuration; change it there")
        new = self.store.put_budget(spec.name, spec.model_dump(), self._now())
        self._record(actor, "budget.set", **_budget_fields(spec))
        return new

    def delete_budget(self, spec: BudgetName, actor: str) -> None:
        if spec.name in self._configured:
            raise InvalidRequest(f"budget {spec.name!r} is defined in the configuration; change it there")
        self.store.delete_budget(spec.name)
        self._record(actor, "budget.delete", budget=spec.name)


def _budget_fields(spec: BudgetConfig) -> dict[str, Any]:
    return {"budget": spec.name, **{k: v for k, v in spec.model_dump().items() if k != "name"}}


def writer_sink(writer: AuditWriter | None) -> Callable[[dict[str, Any]], None] | None:
    """An audit sink appending synchronously (the CLI)."""
    if writer is None:
        return None
    return lambda record: writer.append([record])

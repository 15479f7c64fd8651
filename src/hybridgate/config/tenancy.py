"""Tenancy: the key store, budgets and the audit trail (see docs/tenants.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from hybridgate.config.base import Name, Strict

BudgetPeriod = Literal["day", "month"]
BudgetAction = Literal["local-only", "refuse"]


class BudgetConfig(Strict):
    """A spending limit of one tenant or one key, per period (UTC days or months)."""

    name: Name = Field(..., description="Named in errors, logs and metrics.")
    tenant: Name | None = Field(None, description="The tenant it limits (set tenant or key).")
    key: str | None = Field(
        None,
        description="The key id it limits: hg_<id> for a store key, or a config key's key-<fingerprint> "
        "(as in the decision log).",
    )
    period: BudgetPeriod = Field("month", description="Spend resets at the start of each UTC day or month.")
    usd: float | None = Field(None, ge=0, description="Money limit, USD (cloud and local cost together).")
    tokens: int | None = Field(None, ge=0, description="Token limit (prompt plus completion).")
    on_exhausted: BudgetAction = Field(
        "refuse",
        description="refuse (402 naming the budget) or local-only (route to local deployments, charged "
        "to local_usd).",
    )
    local_usd: float | None = Field(
        None, ge=0, description="Local allowance once exhausted (local-only); none = unlimited."
    )

    @model_validator(mode="after")
    def _one_subject(self) -> BudgetConfig:
        if (self.tenant is None) == (self.key is None):
            raise ValueError("set exactly one of tenant or key")
        if self.usd is None and self.tokens is None:
            raise ValueError("set usd, tokens or both")
        return self


class AuditConfig(Strict):
    """The tamper-evident audit trail: HMAC-chained JSON lines."""

    path: str | None = Field(None, description="JSON-lines audit file (relative to the config); none = off.")
    key: SecretStr | None = Field(
        None, description="HMAC key (use ${ENV}; keep it outside the log). Required with path."
    )

    @model_validator(mode="after")
    def _key_with_path(self) -> AuditConfig:
        if self.path is not None and (self.key is None or len(self.key.get_secret_value()) < 16):
            raise ValueError("audit.path needs audit.key of at least 16 characters")
        return self


class RateLimitConfig(Strict):
    """Default rate limits of every key that sets none (429 + Retry-After when reached)."""

    rpm: int | None = Field(None, gt=0, description="Requests per minute per key; none = unlimited.")
    tpm: int | None = Field(
        None, gt=0, description="Tokens (prompt + max output) per minute per key; none = unlimited."
    )


class TenancyConfig(Strict):
    """Tenants and API keys in a store, budgets, and the audit trail."""

    store: str | None = Field(
        None,
        description="Store of tenants, keys, budgets and spend: a SQLite file (relative to the config) "
        "or a postgresql:// URL (use ${ENV} for its password); none = no store (config keys only).",
    )
    key_cache_ttl_s: float = Field(
        5.0,
        ge=0,
        description="How long a key lookup is cached; a revocation elsewhere takes effect within it.",
    )
    rate_limits: RateLimitConfig = Field(
        default_factory=RateLimitConfig, description="Default per-key rate limits."
    )
    budgets: list[BudgetConfig] = Field(default_factory=list, description="Budgets per tenant or key.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="Audit trail.")

"""Who is asking and what they need: the RequestContext of every request.

Sources, from least to most specific: the client key's defaults, the body's ``metadata``
(``hybridgate_class``, ``hybridgate_sensitivity``, ...), and ``X-Hybridgate-*`` headers
(``X-Hybridgate-Class``, ``-Tenant``, ``-Sensitivity``, ``-Region``, ``-Latency-Budget-Ms``,
``-Max-Cost-Usd``). Rules:

- A malformed value or an unknown class is a 400 naming the field; never a silent default.
- What a key pins cannot be changed by the request: its tenant and its origin region (a
  different value is a 403), and the classes it may use (403).
- Declared sensitivity can only rise: the highest of the key's, the body's and the header's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hybridgate.config.governance import SENSITIVITY_ORDER, Sensitivity, TenantPolicy
from hybridgate.config.routing import WorkloadClass
from hybridgate.errors import InvalidRequest, PermissionDenied

HEADER_PREFIX = "x-hybridgate-"
METADATA_PREFIX = "hybridgate_"
FIELDS = ("class", "tenant", "sensitivity", "region", "latency_budget_ms", "max_cost_usd")


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """What the client key says (never the key itself: ``key_id`` is a short fingerprint)."""

    key_id: str
    tenant: str = "default"
    default_class: str | None = None
    classes: frozenset[str] | None = None
    region: str | None = None
    sensitivity: Sensitivity | None = None
    pins_tenant: bool = True
    models: frozenset[str] | None = None  # logical models it may use (None: all)
    rpm: int | None = None  # requests per minute (None: tenancy.rate_limits)
    tpm: int | None = None  # tokens per minute (None: tenancy.rate_limits)
    scopes: frozenset[str] = frozenset({"use", "read", "admin"})


ANONYMOUS = ClientIdentity(key_id="anonymous", pins_tenant=False)


@dataclass(frozen=True, slots=True)
class RequestContext:
    workload_class: str
    tenant: str
    sensitivity: Sensitivity
    region: str
    latency_budget_ms: float | None = None
    max_cost_usd: float | None = None
    key_id: str = "anonymous"
    traceparent: str = ""  # W3C trace context of the caller, if it sent one (for the trace only)
    tracestate: str = ""
    local_only: str | None = None  # why cloud is excluded for this request (a budget ran out)
    allowed_models: frozenset[str] | None = None  # the key's model allow-list (None: all)
    rpm: int | None = None  # the key's rate limits (None: the configured default)
    tpm: int | None = None


def _declared(headers: Mapping[str, str], metadata: Mapping[str, Any], name: str) -> tuple[str | None, str]:
    """The most specific declaration of ``name`` and where it came from (for error messages)."""
    header = HEADER_PREFIX + name.replace("_", "-")
    if header in headers:
        return headers[header].strip(), header
    key = METADATA_PREFIX + name
    if key in metadata:
        value = metadata[key]
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise InvalidRequest(f"metadata.{key} must be a string", param=f"metadata.{key}")
        return str(value).strip(), f"metadata.{key}"
    return None, ""


def _number(value: str, where: str, *, positive: bool) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest(f"{where} must be a number, got {value[:40]!r}", param=where) from None
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise InvalidRequest(
            f"{where} must be a {'positive' if positive else 'non-negative'} number", param=where
        )
    return number


def _sensitivity(value: str, where: str) -> Sensitivity:
    for level in SENSITIVITY_ORDER:
        if value.lower() == level:
            return level
    raise InvalidRequest(f"{where} must be one of {', '.join(SENSITIVITY_ORDER)}", param=where)


def _sensitivities(headers: Mapping[str, str], metadata: Mapping[str, Any]) -> list[Sensitivity]:
    """Every declared sensitivity (header and body both count: a declaration only raises it)."""
    found: list[Sensitivity] = []
    header = HEADER_PREFIX + "sensitivity"
    if header in headers:
        found.append(_sensitivity(headers[header].strip(), header))
    key = METADATA_PREFIX + "sensitivity"
    if key in metadata:
        value = metadata[key]
        if not isinstance(value, str):
            raise InvalidRequest(f"metadata.{key} must be a string", param=f"metadata.{key}")
        found.append(_sensitivity(value.strip(), f"metadata.{key}"))
    return found


def _highest(*levels: Sensitivity | None) -> Sensitivity:
    return max((lvl for lvl in levels if lvl is not None), key=SENSITIVITY_ORDER.index, default="public")


def build_context(
    identity: ClientIdentity,
    headers: Mapping[str, str],
    metadata: Mapping[str, Any],
    *,
    classes: Mapping[str, WorkloadClass],
    default_class: str,
    default_region: str,
    tenants: Mapping[str, TenantPolicy],
) -> RequestContext:
    """The context of one request; raises 400/403 as the module docstring says."""
    tenant, where = _declared(headers, metadata, "tenant")
    if tenant is not None and tenant != identity.tenant:
        if identity.pins_tenant:
            raise PermissionDenied(
                f"this key belongs to tenant {identity.tenant!r}; {where} cannot change it"
            )
        if not tenant:
            raise InvalidRequest(f"{where} is empty", param=where)
    tenant = tenant or identity.tenant

    name, where = _declared(headers, metadata, "class")
    name = name or identity.default_class or default_class
    if name not in classes:
        known = ", ".join(sorted(classes))
        raise InvalidRequest(f"unknown workload class {name!r} (known: {known})", param=where or "class")
    if identity.classes is not None and name not in identity.classes:
        raise PermissionDenied(f"this key may not use workload class {name!r}")
    policy = tenants.get(tenant)
    if policy is not None and policy.classes is not None and name not in policy.classes:
        raise PermissionDenied(f"tenant {tenant!r} may not use workload class {name!r}")

    region, where = _declared(headers, metadata, "region")
    if region is not None and identity.region is not None and region != identity.region:
        raise PermissionDenied(f"this key's data originates in {identity.region!r}; {where} cannot change it")
    region = identity.region or region or default_region

    sensitivity = _highest(identity.sensitivity, *_sensitivities(headers, metadata))

    budget, where = _declared(headers, metadata, "latency_budget_ms")
    ceiling, where_cost = _declared(headers, metadata, "max_cost_usd")
    return RequestContext(
        workload_class=name,
        tenant=tenant,
        sensitivity=sensitivity,
        region=region,
        latency_budget_ms=_number(budget, where, positive=True) if budget is not None else None,
        max_cost_usd=_number(ceiling, where_cost, positive=False) if ceiling is not None else None,
        key_id=identity.key_id,
        traceparent=headers.get("traceparent", ""),
        tracestate=headers.get("tracestate", ""),
        allowed_models=identity.models,
        rpm=identity.rpm,
        tpm=identity.tpm,
    )

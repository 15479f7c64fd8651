"""The request context: sources, precedence, pins, and errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from hybridgate.config.governance import TenantPolicy
from hybridgate.errors import InvalidRequest, PermissionDenied
from hybridgate.policy.context import ANONYMOUS, ClientIdentity, RequestContext, build_context
from tests.support.policy import routing_policy

POLICY = routing_policy()


def build(
    identity: ClientIdentity = ANONYMOUS,
    headers: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    tenants: Mapping[str, TenantPolicy] | None = None,
) -> RequestContext:
    return build_context(
        identity,
        headers or {},
        metadata or {},
        classes=POLICY.classes,
        default_class="default",
        default_region="unknown",
        tenants=tenants or {},
    )


def test_defaults() -> None:
    ctx = build()
    assert (ctx.workload_class, ctx.tenant, ctx.region, ctx.sensitivity) == (
        "default",
        "default",
        "unknown",
        "public",
    )


def test_headers_win_over_metadata_which_wins_over_key_defaults() -> None:
    key = ClientIdentity(key_id="k", default_class="batch")
    assert build(key).workload_class == "batch"
    assert build(key, metadata={"hybridgate_class": "planning"}).workload_class == "planning"
    headers = {"x-hybridgate-class": "actuation"}
    assert build(key, headers, {"hybridgate_class": "planning"}).workload_class == "actuation"


def test_budget_and_cost_ceiling() -> None:
    ctx = build(headers={"x-hybridgate-latency-budget-ms": "250", "x-hybridgate-max-cost-usd": "0.002"})
    assert ctx.latency_budget_ms == 250.0
    assert ctx.max_cost_usd == 0.002


@pytest.mark.parametrize(
    ("headers", "metadata", "param"),
    [
        ({"x-hybridgate-class": "nope"}, {}, "x-hybridgate-class"),
        ({}, {"hybridgate_class": "nope"}, "metadata.hybridgate_class"),
        ({"x-hybridgate-latency-budget-ms": "fast"}, {}, "x-hybridgate-latency-budget-ms"),
        ({"x-hybridgate-latency-budget-ms": "0"}, {}, "x-hybridgate-latency-budget-ms"),
        ({"x-hybridgate-latency-budget-ms": "nan"}, {}, "x-hybridgate-latency-budget-ms"),
        ({"x-hybridgate-max-cost-usd": "-1"}, {}, "x-hybridgate-max-cost-usd"),
        ({"x-hybridgate-sensitivity": "secret"}, {}, "x-hybridgate-sensitivity"),
        ({}, {"hybridgate_sensitivity": 3}, "metadata.hybridgate_sensitivity"),
        ({}, {"hybridgate_region": ["eu"]}, "metadata.hybridgate_region"),
    ],
)
def test_malformed_values_are_400_naming_the_field(
    headers: dict[str, str], metadata: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        build(headers=headers, metadata=metadata)
    assert info.value.status == 400
    assert info.value.param == param


def test_sensitivity_only_rises() -> None:
    key = ClientIdentity(key_id="k", sensitivity="confidential")
    assert build(key, {"x-hybridgate-sensitivity": "public"}).sensitivity == "confidential"
    both = build(
        headers={"x-hybridgate-sensitivity": "internal"}, metadata={"hybridgate_sensitivity": "restricted"}
    )
    assert both.sensitivity == "restricted"


def test_a_key_pins_its_tenant_and_region() -> None:
    key = ClientIdentity(key_id="k", tenant="acme", region="eu")
    assert build(key, {"x-hybridgate-tenant": "acme"}).tenant == "acme"
    with pytest.raises(PermissionDenied):
        build(key, {"x-hybridgate-tenant": "other"})
    with pytest.raises(PermissionDenied):
        build(key, {"x-hybridgate-region": "us"})
    assert build(key).region == "eu"
    # Without auth there is no key to pin anything: the header decides.
    assert build(headers={"x-hybridgate-tenant": "beta"}).tenant == "beta"


def test_classes_a_key_or_tenant_may_use() -> None:
    key = ClientIdentity(key_id="k", tenant="acme", classes=frozenset({"batch"}))
    with pytest.raises(PermissionDenied):
        build(key, {"x-hybridgate-class": "interactive"})
    tenants = {"acme": TenantPolicy(classes=["interactive"])}
    with pytest.raises(PermissionDenied):
        build(ClientIdentity(key_id="k", tenant="acme"), {"x-hybridgate-class": "batch"}, tenants=tenants)

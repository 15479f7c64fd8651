"""Data governance decisions: may this request's data leave the device, in which form, to where.

Pure functions of what the content scan found (never the content itself), the request context
and the configuration. Fail closed:

- a scan that failed, timed out, was skipped for size or disabled by mistake counts as sensitive;
- declared sensitivity ``confidential`` or ``restricted`` keeps data local (there is nothing
  precise to redact), whatever the scan found; declarations only ever raise protection;
- ``redact`` only applies when the scan succeeded and found the spans to redact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from hybridgate.config.governance import GovernanceConfig
from hybridgate.config.routing import SensitiveAction, WorkloadClass
from hybridgate.errors import SensitiveDataRefused
from hybridgate.policy.context import RequestContext

LOCAL_REGION = "local"


@dataclass(frozen=True, slots=True)
class DataProfile:
    """What the content scan found: kinds of sensitive data, and whether the scan could be trusted."""

    kinds: frozenset[str] = frozenset()
    scan_failed: bool = False
    reason: str = ""

    @property
    def detected(self) -> bool:
        return bool(self.kinds) or self.scan_failed


class DataDecision(NamedTuple):
    sensitive: bool
    cloud_allowed: bool
    redact: bool
    rule: str
    allowed_regions: frozenset[str] | None  # None: any region (residency does not restrict)
    kinds: frozenset[str] = frozenset()


def _action(ctx: RequestContext, cls: WorkloadClass, gov: GovernanceConfig) -> tuple[SensitiveAction, str]:
    tenant = gov.tenants.get(ctx.tenant)
    if tenant is not None and tenant.on_sensitive is not None:
        return tenant.on_sensitive, f"tenant {ctx.tenant!r} on_sensitive={tenant.on_sensitive}"
    if cls.on_sensitive is not None:
        return cls.on_sensitive, f"class {ctx.workload_class!r} on_sensitive={cls.on_sensitive}"
    return gov.default_action, f"governance.default_action={gov.default_action}"


def allowed_regions(ctx: RequestContext, gov: GovernanceConfig) -> frozenset[str] | None:
    """Regions this request's data may go to; None when neither residency nor tenant restrict it."""
    regions: set[str] | None = None
    if ctx.region in gov.residency:
        regions = {*gov.residency[ctx.region], LOCAL_REGION}
    tenant = gov.tenants.get(ctx.tenant)
    if tenant is not None and tenant.allowed_regions is not None:
        tenant_regions = {*tenant.allowed_regions, LOCAL_REGION}
        regions = tenant_regions if regions is None else regions & tenant_regions
    return frozenset(regions) if regions is not None else None


def clean_decision(ctx: RequestContext, gov: GovernanceConfig) -> DataDecision:
    """The decision for data with nothing sensitive: only residency applies."""
    return DataDecision(False, True, False, "no sensitive data found", allowed_regions(ctx, gov))


def decide(
    profile: DataProfile, ctx: RequestContext, cls: WorkloadClass, gov: GovernanceConfig
) -> DataDecision:
    """The governance decision; raises :class:`SensitiveDataRefused` when the rule says refuse."""
    declared_high = ctx.sensitivity in ("confidential", "restricted")
    if not profile.kinds and not profile.scan_failed and not declared_high:
        return clean_decision(ctx, gov)
    regions = allowed_regions(ctx, gov)
    action, rule = _action(ctx, cls, gov)
    what = ", ".join(sorted(profile.kinds)) or ("unscannable content" if profile.scan_failed else "")
    if declared_high:
        what = f"{what}; declared {ctx.sensitivity}" if what else f"declared {ctx.sensitivity}"
    if profile.scan_failed:
        what = f"{what} ({profile.reason})" if profile.reason else what
    if action == "refuse":
        raise SensitiveDataRefused(f"request refused by data governance: it contains {what} (rule: {rule})")
    if action == "redact" and not profile.scan_failed and not declared_high:
        return DataDecision(True, True, True, f"{what}: redact before cloud ({rule})", regions, profile.kinds)
    reason = "keep local" if action == "keep-local" else "keep local (nothing reliable to redact)"
    return DataDecision(True, False, False, f"{what}: {reason} ({rule})", regions, profile.kinds)

"""Data governance: sensitive-data detection, what to do about it, and residency."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hybridgate.config.base import Name, Strict
from hybridgate.config.routing import SensitiveAction

Sensitivity = Literal["public", "internal", "confidential", "restricted"]
SENSITIVITY_ORDER: tuple[Sensitivity, ...] = ("public", "internal", "confidential", "restricted")


class DetectionConfig(Strict):
    """The content scan of every message, tool argument and tool result."""

    enabled: bool = Field(
        True,
        description="Scan requests. Disabling it makes every request count as sensitive (fail closed), "
        "unless allow_unscanned is also set.",
    )
    allow_unscanned: bool = Field(
        False,
        description="With enabled: false, treat unscanned requests as not sensitive (explicit opt-out).",
    )
    detectors: list[str] | None = Field(
        None, description="Detector names to run (default: all built-in ones)."
    )
    presidio: bool = Field(False, description="Also run Microsoft Presidio's recognizers (if installed).")
    images: Literal["sensitive", "allow"] = Field(
        "sensitive",
        description="Images cannot be scanned: 'sensitive' (fail closed: requests with images count as "
        "sensitive) or 'allow' (images do not make a request sensitive).",
    )
    max_scan_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        description="Larger requests are not scanned and count as sensitive (fail closed).",
    )
    time_limit_ms: float | None = Field(
        None,
        gt=0,
        description="A scan taking longer fails and counts as sensitive (fail closed); none = no limit.",
    )
    max_findings: int = Field(
        10_000, gt=0, description="More findings than this fail the scan (sensitive), bounding the work."
    )
    cache_entries: int = Field(
        16_384,
        ge=0,
        description="Long texts whose scan results are remembered (conversations resend their "
        "history); 0 = off.",
    )


class TenantPolicy(Strict):
    """Per-tenant governance overrides."""

    on_sensitive: SensitiveAction | None = Field(
        None, description="Overrides the class's action for this tenant."
    )
    allowed_regions: list[str] | None = Field(
        None, description="Regions this tenant's data may go to (besides local); default: residency rules."
    )
    classes: list[Name] | None = Field(
        None, description="Workload classes the tenant may use (default: all)."
    )


class GovernanceConfig(Strict):
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="Content scanning.")
    default_action: SensitiveAction = Field(
        "keep-local", description="Action on sensitive data for classes that do not set on_sensitive."
    )
    residency: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Origin region -> regions its data may go to. Origins not listed are unrestricted; "
        "'local' is always allowed.",
    )
    default_region: str = Field("unknown", description="Origin region of requests that declare none.")
    tenants: dict[Name, TenantPolicy] = Field(default_factory=dict, description="Per-tenant overrides.")

"""The configuration reference in Markdown, generated from the schema itself.

docs/configuration.md embeds this output between two markers; a test fails when the schema and
the document disagree, so every option stays documented (``hybridgate config reference``).
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from hybridgate.config.governance import DetectionConfig, GovernanceConfig, TenantPolicy
from hybridgate.config.pricing import LocalCost, PricingConfig, TokenPrice
from hybridgate.config.resilience import (
    BreakerConfig,
    CacheConfig,
    IdempotencyConfig,
    LoadConfig,
    OfflineConfig,
    ProbeConfig,
    ResilienceConfig,
    RetryConfig,
)
from hybridgate.config.routing import LatencyBudget, SloTargets, WorkloadClass
from hybridgate.config.schema import (
    AnthropicDeployment,
    AuthConfig,
    ClientKey,
    ExpectedPerformance,
    GatewayConfig,
    LlamaCppDeployment,
    ModelConfig,
    OpenAIDeployment,
    SandboxDeployment,
    ServerConfig,
    TimeoutsConfig,
)
from hybridgate.config.telemetry import DecisionLogConfig, TracingConfig
from hybridgate.config.tenancy import AuditConfig, BudgetConfig, RateLimitConfig, TenancyConfig

BEGIN = "<!-- BEGIN GENERATED REFERENCE (hybridgate config reference) -->"
END = "<!-- END GENERATED REFERENCE -->"

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("Top level", GatewayConfig),
    ("`server`", ServerConfig),
    ("`server.auth`", AuthConfig),
    ("`server.auth.api_keys[]` (object form)", ClientKey),
    ("`deployments.<name>` with `type: openai`", OpenAIDeployment),
    ("`deployments.<name>` with `type: anthropic`", AnthropicDeployment),
    ("`deployments.<name>` with `type: llamacpp`", LlamaCppDeployment),
    ("`deployments.<name>` with `type: sandbox`", SandboxDeployment),
    ("`deployments.<name>.timeouts`", TimeoutsConfig),
    ("`deployments.<name>.expected`", ExpectedPerformance),
    ("`deployments.<name>.breaker`", BreakerConfig),
    ("`deployments.<name>.probe`", ProbeConfig),
    ("`deployments.<name>.load`", LoadConfig),
    ("`deployments.<name>.price`, `pricing.models.<model>`", TokenPrice),
    ("`deployments.<name>.local_cost`, `pricing.local`", LocalCost),
    ("`models.<name>`", ModelConfig),
    ("`classes.<name>`", WorkloadClass),
    ("`classes.<name>.latency`", LatencyBudget),
    ("`classes.<name>.slo`", SloTargets),
    ("`governance`", GovernanceConfig),
    ("`governance.detection`", DetectionConfig),
    ("`governance.tenants.<name>`", TenantPolicy),
    ("`pricing`", PricingConfig),
    ("`resilience`", ResilienceConfig),
    ("`resilience.retry`", RetryConfig),
    ("`resilience.cache`", CacheConfig),
    ("`resilience.idempotency`", IdempotencyConfig),
    ("`resilience.offline`", OfflineConfig),
    ("`decision_log`", DecisionLogConfig),
    ("`tracing`", TracingConfig),
    ("`tenancy`", TenancyConfig),
    ("`tenancy.rate_limits`", RateLimitConfig),
    ("`tenancy.budgets[]`", BudgetConfig),
    ("`tenancy.audit`", AuditConfig),
]


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if annotation is SecretStr:
        return "secret string"
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        names = dict.fromkeys(_type_name(a) for a in get_args(annotation) if a is not type(None))
        return " or ".join(names)
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return f"map of {_type_name(get_args(annotation)[1])}"
    if origin is not None and get_args(annotation):  # Annotated[...]
        return _type_name(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "deployment" if "Deployment" in annotation.__name__ else "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        is_section = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        return "its defaults" if is_section else "empty"
    value = field.default
    if value is PydanticUndefined:
        return ""
    return f"`{value!r}`" if value is not None else "none"


def render_reference() -> str:
    lines = [BEGIN, ""]
    for title, model in SECTIONS:
        lines += [f"### {title}", "", "| key | type | default | description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)

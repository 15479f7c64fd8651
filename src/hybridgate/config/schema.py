"""The configuration schema: one YAML file, validated by these pydantic models.

Every model forbids unknown keys, so a typo is an error that names its YAML path rather than a
setting silently ignored. ``hybridgate config schema`` exports the JSON Schema of
:class:`GatewayConfig` for editors. The reference for every option is docs/configuration.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from hybridgate.config.base import Name, Strict
from hybridgate.config.governance import GovernanceConfig, Sensitivity
from hybridgate.config.pricing import LocalCost, PricingConfig, TokenPrice
from hybridgate.config.resilience import BreakerConfig, LoadConfig, ProbeConfig, ResilienceConfig
from hybridgate.config.routing import LatencyBudget, WorkloadClass
from hybridgate.config.telemetry import DecisionLogConfig, TracingConfig
from hybridgate.config.tenancy import TenancyConfig
from hybridgate.types import Placement

Scope = Literal["use", "read", "admin"]


class TimeoutsConfig(Strict):
    """Per-attempt deadlines (seconds)."""

    connect: float = Field(5.0, gt=0, description="TCP/TLS connect deadline.")
    first_token: float = Field(30.0, gt=0, description="Deadline for the first byte of the answer.")
    idle: float = Field(30.0, gt=0, description="Longest silence allowed between streamed chunks.")
    total: float = Field(300.0, gt=0, description="Deadline for the whole attempt, streaming included.")


class ClientKey(Strict):
    """A client key with the defaults and limits of what it may ask for."""

    key: SecretStr = Field(..., description="The key (use ${ENV}).")
    tenant: Name = Field(
        "default", description="The tenant its requests belong to (clients cannot change it)."
    )
    default_class: Name | None = Field(None, description="Workload class when the request names none.")
    classes: list[Name] | None = Field(None, description="Classes it may use (default: all).")
    region: str | None = Field(None, description="Origin region of its data (clients cannot change it).")
    sensitivity: Sensitivity | None = Field(None, description="Minimum declared sensitivity of its requests.")
    models: list[Name] | None = Field(None, description="Logical models it may use (default: all).")
    rpm: int | None = Field(None, gt=0, description="Requests per minute (default: tenancy.rate_limits.rpm).")
    tpm: int | None = Field(None, gt=0, description="Tokens per minute (default: tenancy.rate_limits.tpm).")
    scopes: list[Scope] | None = Field(
        None, description="use (inference), read (metrics, dashboard data), admin (admin API); default: all."
    )


class AuthConfig(Strict):
    """Client authentication. Never off by omission: with no keys and no key store, ``serve``
    refuses unless ``disabled: true`` says so (logged loudly, shown in /readyz)."""

    api_keys: list[SecretStr | ClientKey] = Field(
        default_factory=list,
        description="Accepted client keys (Authorization: Bearer KEY, or x-api-key): plain strings, or "
        "objects with defaults (see ClientKey). With none and no tenancy.store, `serve` refuses unless "
        "`disabled` is true.",
    )
    disabled: bool = Field(
        False,
        description="Turn client authentication off explicitly (local development only: a warning in "
        "the log and in /readyz).",
    )


class ServerConfig(Strict):
    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(8080, ge=0, le=65535, description="Listen port (0 picks a free port).")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest accepted request body; larger bodies get 413."
    )
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Client authentication.")
    access_log: bool = Field(False, description="Log one line per HTTP request (uvicorn access log).")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Server processes sharing the listen socket, each a whole gateway with its own live "
        "health (see docs/operations.md#several-workers); `serve --workers` overrides it.",
    )
    local_models_per_worker: bool = Field(
        False,
        description="Allow workers > 1 with `llamacpp` deployments: each worker then loads its own copy "
        "of every local model (memory and cores times workers).",
    )


class ExpectedPerformance(Strict):
    """Priors for the latency predictor, used until live measurements replace them."""

    ttft_ms: float | None = Field(
        None, gt=0, description="Time to first token with no queue (default by placement)."
    )
    tokens_per_s: float | None = Field(None, gt=0, description="Decode rate (default by placement).")
    prefill_tokens_per_s: float | None = Field(
        None, gt=0, description="Prompt processing rate (default by placement)."
    )
    concurrency: int | None = Field(
        None, gt=0, description="Requests served in parallel (default: 1 for llamacpp, unbounded for cloud)."
    )


class _DeploymentBase(Strict):
    placement: Placement | None = Field(
        None, description="Where inference runs. Default: local for llamacpp, cloud otherwise."
    )
    region: str = Field("local", description="Region the data goes to (e.g. 'local', 'eu', 'us').")
    context_window: int = Field(4096, gt=0, description="Prompt plus output tokens the model accepts.")
    max_output_tokens: int | None = Field(None, gt=0, description="Cap on generated tokens per request.")
    tools: bool = Field(True, description="Supports tool/function calling.")
    vision: bool = Field(False, description="Accepts image inputs.")
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig, description="Per-attempt deadlines.")
    required: bool = Field(
        False,
        description="If true, an unset ${ENV} in this deployment is a config error; "
        "otherwise the deployment is reported as unconfigured and skipped.",
    )
    expected: ExpectedPerformance = Field(
        default_factory=ExpectedPerformance, description="Latency priors for the predictor."
    )
    price: TokenPrice | None = Field(
        None, description="Token prices (cloud); default: the pricing table's entry for the upstream model."
    )
    local_cost: LocalCost | None = Field(
        None, description="Hardware and energy cost (local placement); default: pricing.local."
    )
    breaker: BreakerConfig = Field(default_factory=BreakerConfig, description="Circuit breaker.")
    probe: ProbeConfig = Field(default_factory=ProbeConfig, description="Active health probes.")
    load: LoadConfig | None = Field(
        None, description="Poll the runtime's own queue depth (llama.cpp server, vLLM, Ollama)."
    )


class OpenAIDeployment(_DeploymentBase):
    """Any OpenAI-compatible server: OpenAI, vLLM, llama.cpp server, Ollama /v1, LM Studio, Groq..."""

    type: Literal["openai"] = Field(description="Backend type.")
    base_url: str = Field("https://api.openai.com/v1", description="Base URL including /v1.")
    api_key: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer'. Use ${ENV}.")
    model: str = Field(..., min_length=1, description="Model name sent upstream.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers sent upstream.")
    max_connections: int = Field(100, gt=0, description="Connection pool size (keep-alive).")
    embeddings: bool = Field(False, description="Serves /v1/embeddings.")
    chat: bool = Field(True, description="Serves chat completions.")
    assistant_prefill: bool = Field(
        False, description="Continues a trailing assistant message (used for mid-stream failover)."
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class AnthropicDeployment(_DeploymentBase):
    """The native Anthropic Messages API (or a server speaking it)."""

    type: Literal["anthropic"] = Field(description="Backend type.")
    base_url: str = Field("https://api.anthropic.com", description="Base URL without /v1.")
    api_key: SecretStr | None = Field(None, description="Sent as 'x-api-key'. Use ${ENV}.")
    model: str = Field(..., min_length=1, description="Model name sent upstream.")
    anthropic_version: str = Field("2023-06-01", description="anthropic-version header.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers sent upstream.")
    max_connections: int = Field(100, gt=0, description="Connection pool size (keep-alive).")
    default_max_tokens: int = Field(
        4096, gt=0, description="max_tokens sent when the client gave none (Anthropic requires it)."
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class LlamaCppDeployment(_DeploymentBase):
    """llama.cpp through llama-cpp-python, in a supervised worker process."""

    type: Literal["llamacpp"] = Field(description="Backend type.")
    model_path: str = Field(..., min_length=1, description="Path to a GGUF file (relative to the config).")
    n_ctx: int | None = Field(None, gt=0, description="Context size; default: context_window.")
    n_threads: int | None = Field(
        None,
        gt=0,
        description="CPU threads, for generation and prompt processing alike; default: llama.cpp's choice.",
    )
    n_batch: int = Field(512, gt=0, description="Prompt-processing batch size (llama.cpp n_batch).")
    seed: int = Field(0, description="Sampling seed (fixed for reproducible tests).")
    chat_format: str | None = Field(None, description="llama-cpp-python chat format; default: from GGUF.")
    embeddings: bool = Field(False, description="Load as an embedding model (serves /v1/embeddings).")
    max_queue: int = Field(16, ge=0, description="Requests waiting beyond the one running; then 429.")
    load_timeout: float = Field(120.0, gt=0, description="Seconds allowed for loading the model.")
    restart_backoff: float = Field(0.5, ge=0, description="First delay before restarting a dead worker.")


class SandboxDeployment(_DeploymentBase):
    """SANDBOX: a stand-in cloud on loopback with synthetic latency and faults (no real model)."""

    type: Literal["sandbox"] = Field(description="Backend type.")
    profile: str = Field("cloud-typical", description="Built-in profile name or path to a profile YAML.")
    model: str = Field("sandbox-model", description="Model name the sandbox reports.")
    seed: int = Field(0, description="Random seed of the sandbox's latency and text.")
    wire: Literal["openai", "anthropic"] = Field("openai", description="Protocol spoken to the sandbox.")
    assistant_prefill: bool = Field(True, description="Continues a trailing assistant message.")


AnyDeployment = OpenAIDeployment | AnthropicDeployment | LlamaCppDeployment | SandboxDeployment
Deployment = Annotated[AnyDeployment, Field(discriminator="type")]


class ModelConfig(Strict):
    """A logical model clients ask for, served by one or more deployments (tried in order)."""

    deployments: list[Name] = Field(..., min_length=1, description="Deployment names, in preference order.")
    description: str = Field("", description="Shown in GET /v1/models.")
    aliases: list[Name] = Field(default_factory=list, description="Other names clients may use.")


def _default_classes() -> dict[str, WorkloadClass]:
    return {
        "default": WorkloadClass(
            description="Requests that name no class (generous budgets, local first)",
            latency=LatencyBudget(p95_ms=30_000, p99_ms=60_000, ttft_ms=10_000),
        )
    }


class GatewayConfig(Strict):
    """Root of the configuration file."""

    version: Literal[1] = Field(1, description="Config format version.")
    server: ServerConfig = Field(default_factory=ServerConfig, description="The HTTP server.")
    classes: dict[Name, WorkloadClass] = Field(
        default_factory=_default_classes, description="Workload classes (QoS tiers), by name."
    )
    default_class: Name = Field("default", description="Class of requests that name none.")
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig, description="Data governance.")
    pricing: PricingConfig = Field(default_factory=PricingConfig, description="Prices for the cost model.")
    resilience: ResilienceConfig = Field(
        default_factory=ResilienceConfig, description="Retries, caching, idempotency, offline mode."
    )
    decision_log: DecisionLogConfig = Field(
        default_factory=DecisionLogConfig, description="Where routing decisions are recorded."
    )
    tracing: TracingConfig = Field(
        default_factory=TracingConfig, description="OpenTelemetry traces (off by default)."
    )
    tenancy: TenancyConfig = Field(
        default_factory=TenancyConfig, description="Tenants and keys store, budgets, audit trail."
    )
    deployments: dict[Name, Deployment] = Field(
        ..., min_length=1, description="Concrete models on concrete runtimes/providers, by name."
    )
    models: dict[Name, ModelConfig] = Field(
        ..., min_length=1, description="Logical models clients ask for, by name."
    )


def effective_placement(dep: AnyDeployment) -> Placement:
    """The deployment's placement, defaulting by type."""
    if dep.placement is not None:
        return dep.placement
    return "local" if dep.type == "llamacpp" else "cloud"

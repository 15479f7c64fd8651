"""Configuration of the request records: the decision log and traces."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from hybridgate.config.base import Strict


class DecisionLogConfig(Strict):
    """One JSON line per request, in a file that rotates by itself."""

    path: str | None = Field(
        None, description="JSON-lines file for one record per request (relative to the config); none = off."
    )
    max_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Rotate when the file would grow past this size."
    )
    max_age_s: float | None = Field(
        None, gt=0, description="Also rotate when the file's first record is older than this (seconds)."
    )
    keep: int = Field(5, ge=1, le=1000, description="Rotated files kept (PATH.1 newest ... PATH.N oldest).")
    prompt_hash_key: SecretStr | None = Field(
        None,
        description="Key of the prompt hash (HMAC-SHA256 of the messages; use ${ENV}). Unset: a random "
        "key per process (per worker), so hashes match only within it.",
    )


TraceExporter = Literal["otlp", "console", "file"]


class TracingConfig(Strict):
    """OpenTelemetry traces: a span per request, a child span per attempt (GenAI conventions)."""

    enabled: bool = Field(False, description="Record traces (off: no spans are made at all).")
    exporter: TraceExporter = Field(
        "otlp", description="`otlp` (OTLP/HTTP protobuf), `console` (stderr) or `file` (JSON lines)."
    )
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces endpoint (exporter `otlp`)."
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Extra headers sent to the OTLP endpoint (e.g. an API key)."
    )
    path: str | None = Field(
        None, description="Span file (exporter `file`; relative to the config), one span per line."
    )
    sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of new traces recorded; a sampled incoming parent is kept."
    )
    service_name: str = Field("hybridgate", description="`service.name` of the spans.")
    record_content: bool = Field(
        False,
        description="Record prompts and completions in spans. Never for sensitive requests (declared "
        "confidential/restricted, or sensitive data found by the scan).",
    )

    @model_validator(mode="after")
    def _file_needs_path(self) -> TracingConfig:
        if self.enabled and self.exporter == "file" and not self.path:
            raise ValueError("tracing.exporter 'file' needs tracing.path")
        return self

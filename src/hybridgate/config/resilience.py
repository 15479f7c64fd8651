"""Resilience settings: circuit breakers, probes, local load polling, retries, hedging, caching,
idempotency and offline mode."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hybridgate.config.base import Strict


class BreakerConfig(Strict):
    """A deployment's circuit breaker: opens on evidence, lets one probe through, closes on success."""

    consecutive_failures: int = Field(5, ge=1, description="Open after this many failures in a row.")
    error_rate: float = Field(
        0.5, gt=0, le=1, description="Open when this share of the window's attempts failed..."
    )
    min_requests: int = Field(10, ge=1, description="...and the window holds at least this many attempts.")
    window_s: float = Field(30.0, gt=0, description="Sliding window of the error rate, seconds.")
    open_s: float = Field(5.0, gt=0, description="First open period; doubles after a failed probe.")
    max_open_s: float = Field(120.0, gt=0, description="Longest open period (and cap on a Retry-After).")


class ProbeConfig(Strict):
    """Active health probes: local runtimes get a real one-token inference; cloud deployments a
    request that costs no tokens (GET /models)."""

    enabled: bool | None = Field(
        None, description="Default: on for local deployments, off for cloud ones (paid endpoints)."
    )
    interval_s: float = Field(
        10.0, gt=0, description="Seconds between probes (a half-open breaker probes at once)."
    )


class LoadConfig(Strict):
    """Read a local runtime's own queue, where it exposes one (llama.cpp server, vLLM, Ollama)."""

    kind: Literal["llamacpp-server", "vllm", "ollama"] = Field(..., description="What the runtime is.")
    url: str | None = Field(None, description="Its base URL (default: the deployment's, without /v1).")
    interval_s: float = Field(1.0, gt=0, description="Seconds between polls.")


class RetryConfig(Strict):
    max_attempts: int = Field(4, ge=1, description="Attempts per request, all candidates together.")
    retry_budget_ratio: float = Field(
        0.1, ge=0, description="Retries and hedges allowed as a share of recent requests (e.g. 0.1 = 10%)."
    )
    retry_budget_window_s: float = Field(10.0, gt=0, description="Window of the retry budget, seconds.")
    retry_budget_min: int = Field(3, ge=0, description="Retries always allowed per window (low traffic).")
    backoff_base_s: float = Field(0.2, ge=0, description="First backoff of a 429 without Retry-After.")
    backoff_max_s: float = Field(5.0, ge=0, description="Longest wait before a retry on the same deployment.")


class CacheConfig(Strict):
    enabled: bool = Field(False, description="Serve exact repeats from cache, for classes with cache: true.")
    max_entries: int = Field(10_000, ge=1, description="Entries kept (least recently used go first).")
    ttl_s: float = Field(300.0, gt=0, description="How long an answer is fresh.")
    stale_ttl_s: float = Field(
        3600.0,
        ge=0,
        description="How long an expired answer may still be served when every candidate failed.",
    )


class IdempotencyConfig(Strict):
    ttl_s: float = Field(600.0, gt=0, description="How long a result is kept for its Idempotency-Key.")
    max_entries: int = Field(10_000, ge=1, description="Keys kept.")


class OfflineConfig(Strict):
    enabled: bool = Field(True, description="Switch to local-only when the cloud path is lost.")
    after_failures: int = Field(
        3,
        ge=1,
        description="Connect/DNS failures in a row across cloud deployments that mean the uplink is down.",
    )


class ResilienceConfig(Strict):
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries and the retry budget.")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="Response cache.")
    idempotency: IdempotencyConfig = Field(default_factory=IdempotencyConfig, description="Idempotency-Key.")
    offline: OfflineConfig = Field(default_factory=OfflineConfig, description="Offline (local-only) mode.")

"""Latency prediction: expected and p95 latency of a request on a deployment.

    latency = queue wait + time to first token (includes prefill) + decode(output tokens)

from a :class:`PerfEstimate` — live measurements where there are enough, priors otherwise.
Pure arithmetic on immutable inputs: the planner, ``explain`` and the simulator call it alike.
This is what lets a local-first class spill to the cloud exactly when the local queue would
break its budget.
"""

from __future__ import annotations

from typing import NamedTuple

from hybridgate.types import Placement

# Priors, from public figures (../shared/data/latency-figures.md, docs/performance.md):
# cloud APIs show 0.4-0.8 s median time to first token and 60-110 tokens/s; a 1B-class model in
# llama.cpp on a few CPU cores ~40-60 tokens/s, ~100 ms to first token on a short prompt and
# ~150-190 prompt tokens/s, one request at a time per slot.
CLOUD_PRIOR_TTFT_S = 0.6
CLOUD_PRIOR_TTFT_TAIL = 2.5  # p95 / p50 of time to first token (heavy-tailed providers)
CLOUD_PRIOR_TOKENS_PER_S = 80.0
CLOUD_PRIOR_PREFILL_PER_S = 5_000.0
LOCAL_PRIOR_TTFT_S = 0.1
LOCAL_PRIOR_TTFT_TAIL = 1.5
LOCAL_PRIOR_TOKENS_PER_S = 45.0
LOCAL_PRIOR_PREFILL_PER_S = 150.0
DECODE_TAIL = 1.2  # p95 / p50 of decode time


class PerfEstimate(NamedTuple):
    """What a deployment's speed and load look like now (immutable)."""

    ttft_p50_s: float
    ttft_p95_s: float
    tokens_per_s: float
    prefill_tokens_per_s: float
    concurrency: int | None  # requests served in parallel; None = unbounded (a cloud API)
    in_flight: int = 0  # attempts running or queued on it, as the gateway sees them
    service_s: float = 1.0  # mean time one request occupies a slot
    samples: int = 0  # live measurements behind the estimate (0 = priors only)
    # The time-to-first-token p95 that hedges wait for, tracked so that attempts cut short by
    # their hedge count (see health.tail); None until measured: ``ttft_p95_s`` then stands.
    hedge_ttft_s: float | None = None

    @property
    def queued(self) -> int:
        if self.concurrency is None:
            return 0
        return max(0, self.in_flight - self.concurrency)


def prior(
    placement: Placement,
    *,
    ttft_s: float | None = None,
    tokens_per_s: float | None = None,
    prefill_tokens_per_s: float | None = None,
    concurrency: int | None = None,
    expected_output_tokens: int = 256,
) -> PerfEstimate:
    """The estimate before any measurement, from configured priors or placement defaults."""
    if placement == "local":
        ttft, tail, tps, prefill, slots = (
            LOCAL_PRIOR_TTFT_S,
            LOCAL_PRIOR_TTFT_TAIL,
            LOCAL_PRIOR_TOKENS_PER_S,
            LOCAL_PRIOR_PREFILL_PER_S,
            1,
        )
    else:
        ttft, tail, tps, prefill, slots = (
            CLOUD_PRIOR_TTFT_S,
            CLOUD_PRIOR_TTFT_TAIL,
            CLOUD_PRIOR_TOKENS_PER_S,
            CLOUD_PRIOR_PREFILL_PER_S,
            None,
        )
    ttft = ttft_s if ttft_s is not None else ttft
    tps = tokens_per_s if tokens_per_s is not None else tps
    return PerfEstimate(
        ttft_p50_s=ttft,
        ttft_p95_s=ttft * tail,
        tokens_per_s=tps,
        prefill_tokens_per_s=prefill_tokens_per_s if prefill_tokens_per_s is not None else prefill,
        concurrency=concurrency if concurrency is not None else slots,
        service_s=ttft + expected_output_tokens / tps,
    )


class Prediction(NamedTuple):
    """Seconds."""

    queue_wait_s: float
    ttft_s: float
    ttft_p95_s: float
    expected_s: float
    p95_s: float


def predict(perf: PerfEstimate, prompt_tokens: int, output_tokens: int) -> Prediction:
    """Expected and p95 latency of a request of this size, given the deployment's state now."""
    wait = 0.0
    if perf.concurrency is not None and perf.in_flight >= perf.concurrency:
        # Everyone ahead of us must finish; with c slots they drain c at a time.
        ahead = perf.in_flight - perf.concurrency + 1
        wait = ahead * perf.service_s / perf.concurrency
    prefill = prompt_tokens / perf.prefill_tokens_per_s
    decode = output_tokens / perf.tokens_per_s
    ttft = wait + perf.ttft_p50_s + prefill
    ttft_p95 = wait + perf.ttft_p95_s + prefill
    return Prediction(
        queue_wait_s=wait,
        ttft_s=ttft,
        ttft_p95_s=ttft_p95,
        expected_s=ttft + decode,
        p95_s=ttft_p95 + decode * DECODE_TAIL,
    )

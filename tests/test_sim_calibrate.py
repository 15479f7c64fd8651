"""From measured samples to a simulator profile (hybridgate.sim.calibrate): the arithmetic.

Samples are generated from a known runtime (first-token time, prefill per token, decode rate),
so every fitted number has a right answer; the real runtime is measured in test_bench_local.py.
"""

from __future__ import annotations

import random

import pytest

from hybridgate.sim.calibrate import (
    CalibrationError,
    Measurement,
    Sample,
    fit_decode_context,
    fit_line,
    fit_prefill,
    fit_profile,
    lognormal_of,
    slowed,
)
from hybridgate.sim.models import BackendModel

TTFT_S, PER_TOKEN_S, DECODE_TPS, TEMPLATE = 0.001, 20e-6, 2000.0, 20
LENGTHS = (16, 200, 800, 1600)


def _sample(rng: random.Random, words: int, output: int, spike_s: float = 0.0) -> Sample:
    prompt = words + TEMPLATE
    ttft = (TTFT_S + prompt * PER_TOKEN_S) * rng.uniform(0.98, 1.02) + spike_s
    total = ttft + (output - 1) / (DECODE_TPS * rng.uniform(0.95, 1.05))
    return Sample(words, prompt, output, ttft, total)


def _measurement(seed: int = 1, spikes: bool = False) -> Measurement:
    rng = random.Random(seed)
    m = Measurement(start_s=[0.30, 0.25, 0.35], load_s=[0.01, 0.01, 0.01])
    m.short = [_sample(rng, 16, 2) for _ in range(10)]
    for i in range(10):
        for n in LENGTHS:
            # one run in five at each length is hit by another process (5-40 ms more)
            spike = rng.uniform(0.005, 0.04) if spikes and i % 5 == 0 else 0.0
            m.prefill.append(_sample(rng, n, 2, spike))
    m.decode = [_sample(rng, LENGTHS[i % len(LENGTHS)], 256) for i in range(10)]
    return m


def test_a_line_is_fitted_exactly() -> None:
    fit = fit_line([1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0, 9.0])
    assert (fit.intercept, fit.slope, fit.r2) == pytest.approx((1.0, 2.0, 1.0))
    with pytest.raises(CalibrationError):
        fit_line([2.0, 2.0], [1.0, 3.0])


def test_the_profile_has_the_runtimes_numbers() -> None:
    fitted = fit_profile(_measurement(), name="t", max_queue=7, description="d", sources=["s"])
    p = fitted.profile
    assert (p.name, p.description, p.sources) == ("t", "d", ["s"])
    assert 1 / p.prefill_tokens_per_s == pytest.approx(PER_TOKEN_S, rel=0.03)
    assert p.ttft.median == pytest.approx(TTFT_S, rel=0.1)  # the short prompt's prefill taken out
    assert p.decode_tps.median == pytest.approx(DECODE_TPS, rel=0.05)
    assert p.cold_start_s == pytest.approx(0.30)
    assert (p.slots, p.max_queue, p.error_rate, p.idle_unload_s, p.heavy_tail.probability) == (
        1,
        7,
        0,
        None,
        0,
    )
    assert p.ttft.min is not None
    assert p.ttft.p95 is not None
    assert p.ttft.min <= p.ttft.median <= p.ttft.p95
    assert fitted.short_overcount_s == 0.0
    assert fitted.prefill.r2 > 0.99


def test_the_simulator_then_reproduces_the_measured_first_token() -> None:
    """ttft + prompt / prefill at the short prompt's real token count is what was measured."""
    m = _measurement()
    p = fit_profile(m, name="t", max_queue=1, description="", sources=[]).profile
    model = BackendModel("local", p.model_copy(update={"ttft": p.ttft.model_copy(update={"p95": None})}))
    tokens = m.short[0].prompt_tokens
    measured = sorted(s.ttft_s for s in m.short)[len(m.short) // 2]
    assert model.draw(random.Random(1), tokens, 2, 1.0).ttft_s == pytest.approx(measured, rel=0.03)


def test_spikes_from_other_work_do_not_tilt_the_prefill_fit() -> None:
    calm = fit_prefill(_measurement(spikes=False).prefill)
    spiky = fit_prefill(_measurement(spikes=True).prefill)
    assert spiky.slope == pytest.approx(calm.slope, rel=0.03)


def test_a_prefill_that_does_not_grow_is_refused() -> None:
    m = _measurement()
    flat = [Sample(s.planned, s.prompt_tokens, 2, 0.002 - s.prompt_tokens * 1e-7, 0.003) for s in m.prefill]
    with pytest.raises(CalibrationError, match="does not grow"):
        fit_prefill(flat)


def test_a_convex_prefill_keeps_the_short_ttft_as_measured() -> None:
    """Attention makes long prompts dearer per token: the line's intercept goes negative, nothing
    is left to subtract, and how much the short prompt is then overstated is reported."""
    m = _measurement()
    m.prefill = [
        Sample(s.planned, s.prompt_tokens, 2, 1e-4 + (s.prompt_tokens * 1e-4) ** 2, 1.0) for s in m.prefill
    ]
    m.short = [Sample(16, 36, 2, 1e-4 + (36e-4) ** 2, 1.0) for _ in range(5)]
    fitted = fit_profile(m, name="t", max_queue=1, description="", sources=[])
    assert fitted.prefill.intercept <= 0
    assert fitted.profile.ttft.median == pytest.approx(m.short[0].ttft_s)
    assert fitted.short_overcount_s == pytest.approx(36 * fitted.prefill.slope)


def test_failed_runs_are_the_error_rate_and_missing_samples_an_error() -> None:
    m = _measurement()
    m.errors = 3
    p = fit_profile(m, name="t", max_queue=1, description="", sources=[]).profile
    assert p.error_rate == pytest.approx(3 / m.runs)
    with pytest.raises(CalibrationError):
        fit_profile(Measurement(), name="t", max_queue=1, description="", sources=[])


def test_decoding_that_slows_with_the_context_is_measured() -> None:
    rng = random.Random(1)
    samples = []
    for prompt in (100, 500, 1000, 2000):
        per_token = 200e-6 + prompt * 100e-9  # 0.1 µs more per token for every token of context
        ttft = 0.001
        samples.append(Sample(prompt, prompt, 101, ttft, ttft + 100 * per_token * rng.uniform(0.99, 1.01)))
    fit = fit_decode_context(samples)
    assert fit is not None
    assert fit.slope == pytest.approx(100e-9, rel=0.05)
    assert fit_decode_context(samples[:1]) is None


def test_lognormal_of_samples() -> None:
    spec = lognormal_of([1.0, 2.0, 3.0, 4.0, 10.0])
    assert (spec.median, spec.min, spec.max) == (3.0, 1.0, 10.0)
    assert spec.p95 == pytest.approx(8.8)
    with pytest.raises(CalibrationError):
        lognormal_of([])


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_slowed_multiplies_every_time_by_the_factor(factor: float) -> None:
    p = fit_profile(_measurement(), name="t", max_queue=1, description="", sources=[]).profile
    base, other = BackendModel("a", p), BackendModel("b", slowed(p, factor))
    for seed in range(20):
        a = base.draw(random.Random(seed), 700, 150, 1.0)
        b = other.draw(random.Random(seed), 700, 150, 1.0)
        assert b.ttft_s == pytest.approx(a.ttft_s * factor, rel=1e-9)
        assert b.total_s == pytest.approx(a.total_s * factor, rel=1e-9)

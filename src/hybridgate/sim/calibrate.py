"""From measurements of a local runtime to a simulator backend profile (pure arithmetic).

:mod:`hybridgate.sim.measure` runs the real llama.cpp runtime and records what each request
took; this turns those samples into a :class:`~hybridgate.sim.models.BackendProfile` with the
simulator's model of an attempt, ``TTFT = ttft draw + prompt tokens / prefill rate`` then
``(output tokens - 1) / decode draw``:

- ``prefill_tokens_per_s``: 1 / the least-squares slope of TTFT against prompt tokens, fitted
  through the lower quartile of the TTFTs at each planned prompt length, short prompt included
  (other work on the machine only ever adds time, in spikes of milliseconds: the lower quartile
  is the runtime's own cost even when a few runs at a length were unlucky);
- ``ttft``: a lognormal (median, p95, min, max) of the short-prompt TTFTs less the prefill the
  simulator adds back for their prompt tokens, so a short prompt reproduces what was measured.
  When the line's intercept is not positive (TTFT grows faster than linearly, as attention makes
  it on small models), no TTFT is left to subtract from: the short-prompt TTFTs are then taken as
  they are, and the simulator overstates a short prompt's TTFT by at most its prefill
  (``Fitted.short_overcount_s``);
- ``decode_tps``: a lognormal of each decode run's ``(completion tokens - 1) / (total - TTFT)``
  (the runs' prompts span the prompt lengths; how the time per token grows with the context is
  fitted too, :func:`fit_decode_context`, and reported: the profile has no place for it);
- ``cold_start_s``: the median time from starting the worker to its model being ready;
- ``slots`` 1 and ``max_queue`` the deployment's (the embedded runtime serves one request at a
  time); ``error_rate``: failed runs over all runs; no heavy tail (none is measured alone on a
  machine); ``idle_unload_s`` none (the embedded runtime keeps its model resident).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from hybridgate.sandbox.profile import HeavyTail, LogNormal
from hybridgate.sim.models import BackendProfile
from hybridgate.sim.sandbox_profile import scaled


class CalibrationError(ValueError):
    """The measurements do not support a profile (e.g. TTFT does not grow with the prompt)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured request: its size, and seconds to its first token and to its end."""

    planned: int  # the prompt length asked for (words): the group of a prefill point
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    total_s: float

    @property
    def decode_tps(self) -> float | None:
        """Tokens per second after the first one (None when there is nothing to time)."""
        decode_s = self.total_s - self.ttft_s
        if self.completion_tokens < 2 or decode_s <= 0:
            return None
        return (self.completion_tokens - 1) / decode_s


@dataclass(slots=True)
class Measurement:
    """What one ``bench local`` run recorded (times in seconds)."""

    start_s: list[float] = field(default_factory=list)  # worker started until its model was ready
    load_s: list[float] = field(default_factory=list)  # the model load alone, as the worker timed it
    short: list[Sample] = field(default_factory=list)  # short prompt, a few output tokens
    prefill: list[Sample] = field(default_factory=list)  # several prompt lengths, a few output tokens
    decode: list[Sample] = field(default_factory=list)  # longer answers
    errors: int = 0  # runs that failed

    @property
    def runs(self) -> int:
        return len(self.short) + len(self.prefill) + len(self.decode) + self.errors


def percentile(values: Sequence[float], q: float) -> float:
    """Linearly interpolated percentile (``q`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def lognormal_of(values: Sequence[float]) -> LogNormal:
    """The lognormal a profile gives for these samples: their median and p95, clipped to their range."""
    if not values:
        raise CalibrationError("no samples to fit a distribution to")
    median = percentile(values, 0.5)
    p95 = max(median, percentile(values, 0.95))
    return LogNormal(median=median, p95=p95, min=min(values), max=max(values))


@dataclass(frozen=True, slots=True)
class LineFit:
    """``y = intercept + slope * x``, least squares, with its coefficient of determination."""

    intercept: float
    slope: float
    r2: float


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> LineFit:
    if len(xs) != len(ys) or len(set(xs)) < 2:
        raise CalibrationError("a line needs points at two or more distinct x values")
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return LineFit(intercept, slope, 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0)


PREFILL_QUANTILE = 0.25


def prefill_points(samples: Sequence[Sample]) -> list[tuple[float, float]]:
    """(median prompt tokens, lower-quartile TTFT) per planned prompt length, ascending."""
    groups: dict[int, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.planned, []).append(s)
    return [
        (percentile([s.prompt_tokens for s in g], 0.5), percentile([s.ttft_s for s in g], PREFILL_QUANTILE))
        for _, g in sorted(groups.items())
    ]


def fit_prefill(samples: Sequence[Sample]) -> LineFit:
    """TTFT against prompt tokens through the per-length points; the slope must be positive."""
    points = prefill_points(samples)
    fit = fit_line([n for n, _ in points], [t for _, t in points])
    if fit.slope <= 0:
        raise CalibrationError(
            f"TTFT does not grow with the prompt (slope {fit.slope:.3g} s/token over "
            f"{len(points)} lengths): no prefill rate can be fitted; try longer --prompt-lengths"
        )
    return fit


def fit_decode_context(samples: Sequence[Sample]) -> LineFit | None:
    """Seconds per output token against the mean context while decoding (prompt + half the
    answer): what the profile's single decode rate leaves out (None without two contexts).

    llama.cpp attends over the whole context for every token, so decoding slows as the context
    grows; the simulator's ``decode_tps`` is drawn regardless of prompt and answer length.
    """
    points = [
        (s.prompt_tokens + s.completion_tokens / 2, 1.0 / rate)
        for s in samples
        if (rate := s.decode_tps) is not None
    ]
    if len({x for x, _ in points}) < 2:
        return None
    return fit_line([x for x, _ in points], [y for _, y in points])


@dataclass(frozen=True, slots=True)
class Fitted:
    """The profile and the numbers behind it."""

    profile: BackendProfile
    prefill: LineFit
    short_prompt_tokens: int
    short_overcount_s: float  # how much the profile overstates the short prompt's TTFT (median)
    decode_context: LineFit | None  # s/token against the context (not in the profile: see above)


def fit_profile(
    m: Measurement, *, name: str, max_queue: int, description: str, sources: Sequence[str]
) -> Fitted:
    """The backend profile of the measured runtime (see the module docstring)."""
    if not m.short or not m.prefill or not m.decode or not m.start_s:
        raise CalibrationError("every measurement needs samples (cold starts, short, prefill, decode)")
    prefill = fit_prefill([*m.short, *m.prefill])
    per_token = prefill.slope
    short_tokens = round(percentile([s.prompt_tokens for s in m.short], 0.5))
    if prefill.intercept > 0:
        firsts = [s.ttft_s - s.prompt_tokens * per_token for s in m.short]
        floor = min(s.ttft_s for s in m.short) * 0.01  # a single run far below the line stays positive
        ttft, overcount = lognormal_of([max(floor, t) for t in firsts]), 0.0
    else:
        ttft, overcount = lognormal_of([s.ttft_s for s in m.short]), short_tokens * per_token
    rates = [r for r in (s.decode_tps for s in m.decode) if r is not None]
    if not rates:
        raise CalibrationError("no decode run produced two or more tokens: nothing to time")
    profile = BackendProfile(
        name=name,
        description=description,
        sources=list(sources),
        slots=1,
        max_queue=max_queue,
        ttft=ttft,
        prefill_tokens_per_s=1.0 / per_token,
        decode_tps=lognormal_of(rates),
        heavy_tail=HeavyTail(probability=0.0),
        error_rate=m.errors / m.runs if m.runs else 0.0,
        cold_start_s=percentile(m.start_s, 0.5),
        idle_unload_s=None,
    )
    return Fitted(profile, prefill, short_tokens, overcount, fit_decode_context(m.decode))


def slowed(profile: BackendProfile, factor: float) -> BackendProfile:
    """The same runtime ``factor`` times slower (every TTFT, prefill and decode time times
    ``factor``; below 1, faster): what a calibration that far off would have the simulator model."""
    return profile.model_copy(
        update={
            "name": f"{profile.name} x{factor:g}",
            "ttft": scaled(profile.ttft, factor),
            "prefill_tokens_per_s": profile.prefill_tokens_per_s / factor,
            "decode_tps": scaled(profile.decode_tps, 1.0 / factor),
            "cold_start_s": profile.cold_start_s * factor,
        }
    )

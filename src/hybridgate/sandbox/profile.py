"""Latency profiles of the SANDBOX: how a stand-in cloud behaves in time.

A profile is a YAML file validated by :class:`Profile`. The built-in ones live in
``hybridgate/sandbox/profiles/`` and cite the public figures they were calibrated from; a path
to your own file works wherever a built-in name does::

    profile = load_profile("cloud-typical")
    timing = profile.draw_timing(random.Random(1), prompt_tokens=500, time_scale=1.0)
    timing.ttft_s, timing.token_interval_s

The model per request: time to first token is a lognormal draw, plus a prefill cost per prompt
token; with probability ``heavy_tail.probability`` the request is *slow* and its TTFT is
multiplied by a Pareto factor (the fat tail seen on shared cloud capacity). Decoding speed is a
lognormal draw of tokens per second, fixed for the request. Every delay is multiplied by the
``time_scale`` (0 turns all waiting off, 0.01 runs a cloud profile a hundred times faster).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hybridgate.sandbox.faults import FaultRule

_Z95 = 1.6448536269514722  # standard normal quantile at 0.95


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogNormal(_Spec):
    """A lognormal given by its median and either its 95th percentile or ``sigma``; clipped to [min, max]."""

    median: float = Field(..., gt=0)
    p95: float | None = Field(None, gt=0, description="95th percentile; sets sigma = ln(p95/median)/1.645.")
    sigma: float | None = Field(None, ge=0, description="Standard deviation of the underlying normal.")
    min: float | None = Field(None, ge=0)
    max: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_spread(self) -> Self:
        if self.p95 is not None and self.sigma is not None:
            raise ValueError("give p95 or sigma, not both")
        if self.p95 is not None and self.p95 < self.median:
            raise ValueError("p95 must be at least the median")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self

    @property
    def spread(self) -> float:
        """The sigma of the underlying normal distribution."""
        if self.sigma is not None:
            return self.sigma
        if self.p95 is not None:
            return math.log(self.p95 / self.median) / _Z95
        return 0.0

    def draw(self, rng: random.Random) -> float:
        sigma = self.spread
        value = self.median if sigma == 0 else rng.lognormvariate(math.log(self.median), sigma)
        if self.min is not None and value < self.min:
            return self.min
        if self.max is not None and value > self.max:
            return self.max
        return value


class HeavyTail(_Spec):
    """With ``probability``, a request is slow: its TTFT is multiplied by a capped Pareto factor."""

    probability: float = Field(0.0, ge=0, le=1)
    factor_min: float = Field(3.0, ge=1, description="Smallest multiplier (the Pareto scale).")
    alpha: float = Field(1.5, gt=0, description="Pareto shape: smaller means a fatter tail.")
    factor_max: float = Field(50.0, ge=1, description="Cap on the multiplier.")

    def draw(self, rng: random.Random) -> float:
        """1.0 for a normal request, else the slow-down factor."""
        if self.probability == 0 or rng.random() >= self.probability:
            return 1.0
        return min(self.factor_max, self.factor_min * rng.paretovariate(self.alpha))


class EmbeddingSpec(_Spec):
    dims: int = Field(256, gt=0, le=8192, description="Vector size when the request names none.")
    latency: LogNormal = Field(default_factory=lambda: LogNormal(median=0.05, p95=0.12))


@dataclass(frozen=True, slots=True)
class Timing:
    """When one request's tokens come out, already multiplied by the time scale."""

    ttft_s: float
    token_interval_s: float
    slow: bool


class Profile(_Spec):
    """One sandbox behaviour: latency, capacity, answer lengths and standing fault rules."""

    name: str = Field(..., min_length=1)
    description: str = ""
    time_scale: float = Field(1.0, ge=0, description="Multiplies every delay of the latency model.")
    models: list[str] = Field(
        default_factory=lambda: ["sandbox-model"],
        min_length=1,
        description="Names /v1/models lists (a name without 'sandbox' in it is listed as 'sandbox/NAME').",
    )
    context_window: int = Field(128_000, gt=0, description="Prompt + max_tokens beyond this get 400.")
    ttft: LogNormal = Field(..., description="Seconds from arrival (after any queueing) to the first token.")
    decode_tps: LogNormal = Field(..., description="Output tokens per second, drawn once per request.")
    prefill_s_per_token: float = Field(0.0, ge=0, description="Extra TTFT per prompt token.")
    output_tokens: LogNormal = Field(
        default_factory=lambda: LogNormal(median=120, p95=400, min=1, max=4096),
        description="Natural answer length in tokens (then capped by max_tokens).",
    )
    heavy_tail: HeavyTail = Field(default_factory=HeavyTail)
    slots: int | None = Field(None, gt=0, description="Requests served at once; None = unlimited.")
    max_queue: int | None = Field(
        None, ge=0, description="Requests waiting for a slot; beyond it: overloaded."
    )
    tool_call_probability: float = Field(
        0.5, ge=0, le=1, description="Chance of a tool call when tools are given and the choice is 'auto'."
    )
    embedding: EmbeddingSpec = Field(default_factory=EmbeddingSpec)
    faults: list[FaultRule] = Field(default_factory=list, description="Fault rules installed at start.")

    def draw_timing(self, rng: random.Random, prompt_tokens: int, time_scale: float) -> Timing:
        """Draw the TTFT and decode pace of one request."""
        if time_scale == 0:
            return Timing(0.0, 0.0, slow=False)
        factor = self.heavy_tail.draw(rng)
        ttft = (self.ttft.draw(rng) + self.prefill_s_per_token * prompt_tokens) * factor
        interval = 1.0 / self.decode_tps.draw(rng)
        return Timing(ttft * time_scale, interval * time_scale, slow=factor > 1.0)

    def draw_output_tokens(self, rng: random.Random) -> int:
        """The natural length of an answer, at least one token."""
        return max(1, round(self.output_tokens.draw(rng)))


class ProfileError(ValueError):
    """A profile name that is not built in, a missing file, or a file that does not validate."""


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped with hybridgate."""
    folder = resources.files("hybridgate.sandbox") / "profiles"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile YAML file by path."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError(f"sandbox profile file not found: {name_or_path}")
        text, origin = path.read_text(encoding="utf-8"), str(path)
    else:
        resource = resources.files("hybridgate.sandbox") / "profiles" / f"{name_or_path}.yaml"
        if not resource.is_file():
            known = ", ".join(builtin_profiles())
            raise ProfileError(f"unknown sandbox profile {name_or_path!r} (built in: {known})")
        text, origin = resource.read_text(encoding="utf-8"), name_or_path
    try:
        return Profile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise ProfileError(f"invalid sandbox profile {origin}: {exc}") from exc

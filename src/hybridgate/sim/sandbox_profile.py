"""A SANDBOX latency profile read as a simulator backend profile: one file feeds both.

The SANDBOX provider (:mod:`hybridgate.sandbox.profile`) and the simulator's backend models
(:mod:`hybridgate.sim.models`) draw from the same families of distributions, so a sandbox profile
converts to a :class:`~hybridgate.sim.models.BackendProfile` exactly, its ``time_scale`` applied.
With ``s`` the time scale:

==========================  ================================================================
sandbox                     simulator
==========================  ================================================================
``ttft`` (seconds)          ``ttft``: median, p95, min, max times ``s`` (sigma unchanged)
``prefill_s_per_token``     ``prefill_tokens_per_s`` = 1 / (``prefill_s_per_token`` × ``s``)
                            (infinite when the sandbox charges no prefill)
``decode_tps``              ``decode_tps``: median, p95, min, max divided by ``s`` (the sandbox
                            waits 1 / tps × ``s`` between tokens)
``heavy_tail``              ``heavy_tail`` unchanged (a factor on TTFT + prefill in both)
``slots``, ``max_queue``    unchanged
(nothing)                   ``error_rate`` 0, ``cold_start_s`` 0, no idle unload
==========================  ================================================================

Per request both then wait ``(ttft + prefill × prompt tokens) × tail factor`` to the first token
and ``(output tokens - 1) / tps`` more to the last. Not converted, because the simulator takes
them from elsewhere: answer lengths (the workload's ``output_tokens``; the sandbox answers
``min(its natural length, max_tokens)``, so a profile used for validation makes its natural length
at least every ``max_tokens`` sent), the context window, tool calls and embeddings. A profile with
standing ``faults`` is refused: the simulator's faults are a schedule of their own
(``--faults``), and a sandbox fault's timing (an error at once) is not the simulator's
``error_rate`` (an error after the first token). A ``time_scale`` of 0 (no waiting at all) has
no timing to simulate and is refused too.

In a workload file, ``backends: {cloud: "sandbox:cloud-typical"}`` (a built-in name) or
``"sandbox:profiles/my-cloud.yaml"`` (a path relative to the workload file) uses this.
"""

from __future__ import annotations

import math
from pathlib import Path

from hybridgate.errors import ConfigError
from hybridgate.sandbox.profile import LogNormal, Profile, ProfileError, load_profile
from hybridgate.sim.models import BackendProfile

PREFIX = "sandbox:"


def scaled(spec: LogNormal, factor: float) -> LogNormal:
    """The same lognormal with every quantile multiplied by ``factor`` (> 0)."""
    return LogNormal(
        median=spec.median * factor,
        p95=None if spec.p95 is None else spec.p95 * factor,
        sigma=spec.sigma,
        min=None if spec.min is None else spec.min * factor,
        max=None if spec.max is None else spec.max * factor,
    )


def backend_profile_of(profile: Profile, origin: str = "") -> BackendProfile:
    """The simulator's model of ``profile`` at its own ``time_scale``; raises :class:`ConfigError`
    for what cannot be converted exactly (standing faults, time scale 0)."""
    scale = profile.time_scale
    problems: list[tuple[str, str]] = []
    if scale == 0:
        problems.append(("time_scale", "a time scale of 0 (no waiting at all) has no timing to simulate"))
    if profile.faults:
        kinds = ", ".join(sorted({f.kind for f in profile.faults}))
        problems.append(
            ("faults", f"standing faults ({kinds}) are not converted: give them as a --faults schedule")
        )
    if problems:
        where = origin or profile.name
        raise ConfigError([(f"sandbox profile {where}: {path}", msg) for path, msg in problems])
    per_token = profile.prefill_s_per_token * scale
    source = f"the SANDBOX profile {origin or profile.name}"
    return BackendProfile(
        name=profile.name,
        description=f"SANDBOX profile {profile.name} at time_scale {scale:g}: {profile.description}",
        sources=[f"converted from {source} at time_scale {scale:g} (hybridgate.sim.sandbox_profile)"],
        slots=profile.slots,
        max_queue=profile.max_queue,
        ttft=scaled(profile.ttft, scale),
        prefill_tokens_per_s=math.inf if per_token == 0 else 1.0 / per_token,
        decode_tps=scaled(profile.decode_tps, 1.0 / scale),
        heavy_tail=profile.heavy_tail,
        error_rate=0.0,
        cold_start_s=0.0,
        idle_unload_s=None,
    )


def is_sandbox_reference(value: str) -> bool:
    """Whether a workload's backend entry names a sandbox profile (``sandbox:NAME_OR_PATH``)."""
    return value.startswith(PREFIX)


def load_sandbox_backend(value: str, base: Path) -> BackendProfile:
    """``sandbox:NAME`` (built in) or ``sandbox:PATH`` (relative to ``base``) as a backend profile."""
    ref = value.removeprefix(PREFIX).strip()
    looks_like_path = ref.endswith((".yaml", ".yml")) or "/" in ref
    target = str((base / ref).resolve()) if looks_like_path else ref
    try:
        profile = load_profile(target)
    except ProfileError as exc:
        raise ConfigError([("", str(exc))]) from exc
    return backend_profile_of(profile, ref)

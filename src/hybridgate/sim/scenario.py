"""Assembling a :class:`~hybridgate.sim.engine.Scenario` from the files named on the command line,
with every cross-reference checked (classes, deployments, the model) before anything runs."""

from __future__ import annotations

from pathlib import Path

from hybridgate.backends.base import capabilities_of
from hybridgate.config.loader import load_config
from hybridgate.errors import ConfigError
from hybridgate.policy.table import compile_policy
from hybridgate.sim.engine import Scenario
from hybridgate.sim.faults import FaultSchedule, load_faults
from hybridgate.sim.models import BackendProfile, load_profile
from hybridgate.sim.sandbox_profile import is_sandbox_reference, load_sandbox_backend
from hybridgate.sim.trace import TraceRecord, load_trace
from hybridgate.sim.workload import load_workload


def load_scenario(
    config_path: Path,
    workload_path: Path,
    faults_path: Path | None = None,
    *,
    seed: int = 1,
    requests: int | None = None,
    duration_s: float | None = None,
    local_share: float = 0.5,
) -> Scenario:
    """Raises :class:`ConfigError` (each problem with its YAML path) on any invalid file."""
    loaded = load_config(config_path, env={})
    config = loaded.config
    caps = {name: capabilities_of(dep) for name, dep in config.deployments.items()}
    policy = compile_policy(config, caps)
    workload = load_workload(workload_path)
    problems: list[tuple[str, str]] = []
    if workload.model not in policy.models:
        problems.append(("model", f"model {workload.model!r} is not in the configuration"))
    profiles: dict[str, BackendProfile] = {}
    for name, file in workload.backends.items():
        if name not in config.deployments:
            problems.append((f"backends.{name}", f"deployment {name!r} is not in the configuration"))
            continue
        try:
            if is_sandbox_reference(file):  # a SANDBOX profile, converted exactly
                profiles[name] = load_sandbox_backend(file, workload_path.parent)
            else:
                profiles[name] = load_profile((workload_path.parent / file).resolve())
        except ConfigError as exc:
            problems += [(f"backends.{name} -> {file}: {where}", msg) for where, msg in exc.problems]
    for i, load in enumerate(workload.classes):
        if load.workload_class not in config.classes:
            known = ", ".join(sorted(config.classes))
            problems.append(
                (f"classes[{i}].class", f"unknown workload class {load.workload_class!r} ({known})")
            )
    trace: list[TraceRecord] = []
    if workload.trace is not None:
        trace = load_trace((workload_path.parent / workload.trace).resolve(), workload.trace_speed)
        unknown = sorted({r.workload_class for r in trace} - set(config.classes))
        if unknown:
            problems.append(("trace", f"classes not in the configuration: {', '.join(unknown)}"))
    faults = load_faults(faults_path) if faults_path is not None else FaultSchedule()
    for i, fault in enumerate(faults.faults):
        for name in fault.deployments:
            if name not in profiles:
                problems.append((f"faults[{i}].deployments", f"deployment {name!r} is not modelled"))
    if not problems and not any(n in profiles for n in policy.resolve(workload.model).deployments):
        problems.append(("backends", f"no deployment of model {workload.model!r} is modelled"))
    if problems:
        raise ConfigError(problems)
    return Scenario(
        config, policy, workload, profiles, faults, seed, requests, duration_s, local_share, tuple(trace)
    )

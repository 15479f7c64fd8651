"""Building simulator scenarios in a temp folder from the shipped example (examples/sim/)."""

from __future__ import annotations

from pathlib import Path

import yaml

from hybridgate.sim.engine import Scenario
from hybridgate.sim.scenario import load_scenario

SIM_EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"
PROFILES = SIM_EXAMPLES / "profiles"
BACKENDS = {
    "local-a": str(PROFILES / "local-1b-cpu.yaml"),
    "local-b": str(PROFILES / "local-1b-cpu.yaml"),
    "cloud-us": str(PROFILES / "cloud-typical.yaml"),
    "cloud-eu": str(PROFILES / "cloud-typical.yaml"),
}


def actuation(rate: float, **extra: object) -> dict[str, object]:
    return {
        "class": "actuation",
        "rate_per_s": rate,
        "prompt_tokens": {"median": 60, "p95": 150, "min": 10, "max": 400},
        "output_tokens": {"median": 20, "p95": 40, "min": 1, "max": 64},
        "regions": {"us": 1.0},
        **extra,
    }


def scenario(
    tmp_path: Path,
    classes: list[dict[str, object]],
    *,
    faults: list[dict[str, object]] | None = None,
    config_edit: tuple[str, str] | None = None,
    seed: int = 1,
    requests: int | None = None,
    duration_s: float | None = None,
    backends: dict[str, str] | None = None,
) -> Scenario:
    """The example gateway config (optionally with one text replacement), this workload and faults."""
    config = (SIM_EXAMPLES / "gateway.yaml").read_text()
    if config_edit is not None:
        assert config_edit[0] in config
        config = config.replace(*config_edit)
    (tmp_path / "gateway.yaml").write_text(config)
    workload = {"model": "hybrid", "backends": backends or BACKENDS, "classes": classes, "queue_sample_s": 5}
    (tmp_path / "workload.yaml").write_text(yaml.safe_dump(workload))
    faults_path = None
    if faults is not None:
        faults_path = tmp_path / "faults.yaml"
        faults_path.write_text(yaml.safe_dump({"faults": faults}))
    return load_scenario(
        tmp_path / "gateway.yaml",
        tmp_path / "workload.yaml",
        faults_path,
        seed=seed,
        requests=requests,
        duration_s=duration_s,
    )

"""The three arms' gateway configurations, all derived from the one demo configuration.

- **hybrid**: the configuration as it is: each class's placement, budgets and data rules.
- **local-only**: every class ``placement: local-only`` (the cloud deployments stay configured
  but are never planned): one box, no cloud.
- **cloud-only**: every class ``placement: cloud-only`` and the content scan off
  (``detection.enabled: false, allow_unscanned: true``): what an agent calling the cloud API
  directly does. Like the simulator's cloud-only baseline it does not consult the data rules, so
  its sensitive prompts reach the cloud: those are counted as governance violations.

Each arm's file is written next to its results (``ARM/gateway.yaml``) with absolute paths, its
own decision log and port, and validated like any configuration before it is served.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hybridgate.config.loader import LoadedConfig, load_config_text, parse_yaml
from hybridgate.config.schema import LlamaCppDeployment, SandboxDeployment
from hybridgate.demo.workload import CLASS_NAMES
from hybridgate.errors import ConfigError

ARMS = ("hybrid", "local-only", "cloud-only")
BASELINES = ARMS[1:]


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """The demo configuration as read (``raw``, for deriving the arms) and as validated."""

    path: Path
    raw: Mapping[str, Any]
    loaded: LoadedConfig


def read_demo_config(path: Path, model: Path | None) -> DemoConfig:
    """Read and validate ``path``; ``model`` replaces every llama.cpp deployment's model file.

    Raises :class:`ConfigError` for an unreadable or invalid file, a model file that does not
    exist, or a configuration the demo cannot drive (it needs its five classes, and local and
    sandbox deployments).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("--config", f"cannot read {path}: {exc}")]) from exc
    raw, _ = parse_yaml(text)
    if not isinstance(raw, dict):
        raise ConfigError([("(root)", "the configuration must be a YAML mapping")])
    raw = _absolute_paths(raw, path.parent, model)
    loaded = load_config_text(yaml.safe_dump(raw, sort_keys=False), source=path)
    _check_models(loaded, model is not None)
    return DemoConfig(path, raw, loaded)


def _absolute_paths(raw: dict[str, Any], base: Path, model: Path | None) -> dict[str, Any]:
    """``raw`` with model files and profile files absolute (the arms' files live elsewhere)."""
    out = copy.deepcopy(raw)
    deployments = out.get("deployments")
    for dep in deployments.values() if isinstance(deployments, dict) else ():
        if not isinstance(dep, dict):
            continue
        if dep.get("type") == "llamacpp":
            if model is not None:
                dep["model_path"] = str(model.resolve())
            elif isinstance(dep.get("model_path"), str):
                dep["model_path"] = str((base / dep["model_path"]).resolve())
        profile = dep.get("profile")
        if dep.get("type") == "sandbox" and isinstance(profile, str) and profile.endswith((".yaml", ".yml")):
            dep["profile"] = str((base / profile).resolve())
    return out


def _check_models(loaded: LoadedConfig, overridden: bool) -> None:
    deployments = loaded.config.deployments
    local = {n: d for n, d in deployments.items() if isinstance(d, LlamaCppDeployment)}
    problems = [
        (
            "--model" if overridden else f"deployments.{name}.model_path",
            f"model file {dep.model_path} does not exist: run `make models` "
            "(or `hybridgate models prepare --dir models`), or give --model",
        )
        for name, dep in local.items()
        if not Path(dep.model_path).is_file()
    ]
    if not local:
        problems.append(("deployments", "the demo needs a llamacpp deployment (the local runtime)"))
    if not any(isinstance(d, SandboxDeployment) for d in deployments.values()):
        problems.append(("deployments", "the demo needs sandbox deployments (its cloud, with faults)"))
    missing = [c for c in CLASS_NAMES if c not in loaded.config.classes]
    if missing:
        problems.append(("classes", f"the demo's workload needs the classes {', '.join(missing)}"))
    if problems:
        raise ConfigError(problems)


def arm_config(demo: DemoConfig, arm: str, *, decisions: Path, port: int) -> dict[str, Any]:
    """The configuration ``arm`` serves: the demo's, with its overrides, log and port."""
    out = copy.deepcopy(dict(demo.raw))
    server = dict(out.get("server") or {})
    server["port"] = port
    out["server"] = server
    out["decision_log"] = {**(out.get("decision_log") or {}), "path": str(decisions)}
    if arm == "hybrid":
        return out
    placement = {"local-only": "local-only", "cloud-only": "cloud-only"}[arm]
    out["classes"] = {
        name: {**cls, "placement": placement} for name, cls in (out.get("classes") or {}).items()
    }
    if arm == "cloud-only":
        governance = dict(out.get("governance") or {})
        governance["detection"] = {
            **(governance.get("detection") or {}),
            "enabled": False,
            "allow_unscanned": True,
        }
        out["governance"] = governance
    return out


def write_arm_config(demo: DemoConfig, arm: str, folder: Path, port: int) -> Path:
    """``folder/gateway.yaml`` for ``arm`` (validated first); its decision log goes in ``folder``."""
    config = arm_config(demo, arm, decisions=folder / "decisions.jsonl", port=port)
    text = f"# hybridgate demo, arm {arm}: derived from {demo.path}\n" + yaml.safe_dump(
        config, sort_keys=False
    )
    load_config_text(text, source=folder / "gateway.yaml")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return path

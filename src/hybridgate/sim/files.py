"""Reading the simulator's YAML files (backend profiles, workloads, fault schedules).

Errors name the YAML path and line of each problem, as the gateway's configuration loader does,
and are raised as :class:`~hybridgate.errors.ConfigError` so the CLI prints them without a
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from hybridgate.config.loader import parse_yaml
from hybridgate.errors import ConfigError
from hybridgate.validation import format_path, real_path

M = TypeVar("M", bound=BaseModel)


def load_model(path: Path, model: type[M], what: str) -> M:
    """Parse the YAML file at ``path`` into ``model``; raises ConfigError naming paths and lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"cannot read {what} {path}: {exc}")]) from exc
    data, lines = parse_yaml(text)
    if not isinstance(data, dict):
        raise ConfigError([("(root)", f"the {what} must be a YAML mapping")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            steps = tuple(real_path(data, tuple(error["loc"]), error["type"] == "missing"))
            probe = steps
            while probe and probe not in lines:
                probe = probe[:-1]
            line = lines.get(probe)
            name = format_path(list(steps)) or "(root)"
            problems.append((f"{name} (line {line})" if line else name, error["msg"]))
        raise ConfigError(problems) from exc

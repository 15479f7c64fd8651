"""Load a configuration file: YAML, ``${ENV}`` interpolation, validation, lint.

Every problem is reported with the YAML path of the value at fault and its line, for example
``deployments.gpt.timeouts.total (line 14): Input should be greater than 0``.

Interpolation happens on string values after YAML parsing, so an environment variable can never
change the structure of the file. ``${VAR}`` takes the variable, ``${VAR:-default}`` a default when
it is unset or empty, and ``$${`` writes a literal ``${``. A deployment that refers to an unset
variable is *unconfigured* (reported, skipped by routing) unless it sets ``required: true``;
elsewhere an unset variable is an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hybridgate.config.schema import AnyDeployment, GatewayConfig, LlamaCppDeployment, SandboxDeployment
from hybridgate.errors import ConfigError
from hybridgate.validation import format_path, real_path

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration plus what the loader learned on the way."""

    config: GatewayConfig
    source: Path | None
    unconfigured: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[tuple[str, str], ...] = ()

    def is_configured(self, deployment: str) -> bool:
        return deployment not in self.unconfigured


def _line_map(node: yaml.Node, path: PathKey, lines: dict[PathKey, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            _line_map(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), lines)


class _Interpolator:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.missing: list[tuple[PathKey, str]] = []

    def apply(self, value: Any, path: PathKey) -> Any:
        if isinstance(value, str):
            return self._string(value, path)
        if isinstance(value, dict):
            return {k: self.apply(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.apply(v, (*path, i)) for i, v in enumerate(value)]
        return value

    def _string(self, text: str, path: PathKey) -> str:
        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            value = self.env.get(name)
            if value:
                return value
            if default is not None:
                return default
            self.missing.append((path, name))
            return ""

        return _VAR.sub(repl, text) if "$" in text else text


def parse_yaml(text: str) -> tuple[Any, dict[PathKey, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([(where, f"YAML syntax error: {problem}")]) from exc
    lines: dict[PathKey, int] = {}
    if node is not None:
        _line_map(node, (), lines)
    return data, lines


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, interpolate, validate and lint the file at ``path``; raises :class:`ConfigError`."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"cannot read {source}: {exc}")]) from exc
    return load_config_text(text, source=source, env=env)


def load_config_text(
    text: str, *, source: Path | None = None, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    data, lines = parse_yaml(text)
    if not isinstance(data, dict):
        raise ConfigError([("(root)", "the configuration must be a YAML mapping")])

    def where(p: PathKey) -> str:
        probe = p
        while probe and probe not in lines:
            probe = probe[:-1]
        line = lines.get(probe)
        name = format_path(p) or "(root)"
        return f"{name} (line {line})" if line else name

    interp = _Interpolator(os.environ if env is None else env)
    data = interp.apply(data, ())

    unconfigured: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    deployments = data.get("deployments")
    for var_path, var in interp.missing:
        dep_name = var_path[1] if len(var_path) > 1 and var_path[0] == "deployments" else None
        required = (
            isinstance(deployments, dict)
            and isinstance(deployments.get(dep_name), dict)
            and bool(deployments[dep_name].get("required", False))
        )
        if isinstance(dep_name, str) and not required:
            reason = unconfigured.get(dep_name, "")
            note = f"environment variable {var} is not set"
            unconfigured[dep_name] = f"{reason}; {note}" if reason else note
        else:
            problems.append((where(var_path), f"environment variable {var} is not set"))
    if problems:
        raise ConfigError(problems)

    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = [
            (where(tuple(real_path(data, tuple(e["loc"]), e["type"] == "missing"))), e["msg"])
            for e in exc.errors(include_url=False)
        ]
        raise ConfigError(problems) from exc

    config = _resolve_paths(config, source)
    problems, warnings = lint(config, unconfigured, where)
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(config=config, source=source, unconfigured=unconfigured, warnings=tuple(warnings))


def _is_relative_file(profile: str) -> bool:
    """A sandbox profile given as a relative YAML path (not a built-in profile name)."""
    return profile.endswith((".yaml", ".yml")) and not Path(profile).is_absolute()


def _resolve_paths(config: GatewayConfig, source: Path | None) -> GatewayConfig:
    base = source.parent if source is not None else Path.cwd()
    updated: dict[str, AnyDeployment] = {}
    for name, dep in config.deployments.items():
        if isinstance(dep, LlamaCppDeployment) and not Path(dep.model_path).is_absolute():
            updated[name] = dep.model_copy(update={"model_path": str((base / dep.model_path).resolve())})
        elif isinstance(dep, SandboxDeployment) and _is_relative_file(dep.profile):
            updated[name] = dep.model_copy(update={"profile": str((base / dep.profile).resolve())})
    if not updated:
        return config
    return config.model_copy(update={"deployments": {**config.deployments, **updated}})


def lint(
    config: GatewayConfig, unconfigured: Mapping[str, str], where: Any = format_path
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Cross-reference checks: returns (errors, warnings), each a list of (path, message)."""
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    owner: dict[str, str] = {}
    used: set[str] = set()
    for model_name, model in config.models.items():
        for i, dep_name in enumerate(model.deployments):
            used.add(dep_name)
            if dep_name not in config.deployments:
                known = ", ".join(sorted(config.deployments))
                errors.append(
                    (
                        where(("models", model_name, "deployments", i)),
                        f"unknown deployment {dep_name!r} (known: {known})",
                    )
                )
        if len(set(model.deployments)) != len(model.deployments):
            errors.append((where(("models", model_name, "deployments")), "a deployment is listed twice"))
        for i, name in enumerate((model_name, *model.aliases)):
            if name in owner and owner[name] != model_name:
                p = ("models", model_name) if i == 0 else ("models", model_name, "aliases", i - 1)
                errors.append((where(p), f"name {name!r} is already used by model {owner[name]!r}"))
            owner.setdefault(name, model_name)
        if all(d in unconfigured for d in model.deployments if d in config.deployments):
            warnings.append((where(("models", model_name)), "every deployment of this model is unconfigured"))
    too_many = workers_problem(config, config.server.workers)
    if too_many is not None:
        errors.append((where(("server", "workers")), too_many))
    for name, dep in config.deployments.items():
        if name not in used:
            warnings.append((where(("deployments", name)), "deployment is not used by any model"))
        if name in unconfigured:
            warnings.append((where(("deployments", name)), f"unconfigured: {unconfigured[name]}"))
        if isinstance(dep, LlamaCppDeployment) and not Path(dep.model_path).exists():
            warnings.append(
                (
                    where(("deployments", name, "model_path")),
                    f"model file {dep.model_path} does not exist (yet)",
                )
            )
        if dep.max_output_tokens is not None and dep.max_output_tokens > dep.context_window:
            errors.append((where(("deployments", name, "max_output_tokens")), "exceeds context_window"))
        if dep.timeouts.first_token > dep.timeouts.total or dep.timeouts.idle > dep.timeouts.total:
            errors.append(
                (where(("deployments", name, "timeouts")), "first_token and idle must not exceed total")
            )
    if not auth_configured(config):
        warnings.append((where(("server", "auth")), f"`serve` will refuse: {NO_AUTH}"))
    tracing = config.tracing
    if tracing.enabled and tracing.record_content:
        warnings.append(
            (
                where(("tracing", "record_content")),
                "prompts and completions of non-sensitive requests will be recorded in traces",
            )
        )
    if config.decision_log.path is not None and config.decision_log.prompt_hash_key is None:
        warnings.append(
            (
                where(("decision_log", "prompt_hash_key")),
                "not set: prompt hashes match only within one process (a random key per worker)",
            )
        )
    return errors, warnings


NO_AUTH = (
    "no client keys (server.auth.api_keys) and no key store (tenancy.store): give keys, or set "
    "server.auth.disabled: true to serve without authentication on purpose (local development only)"
)


def auth_configured(config: GatewayConfig) -> bool:
    """Keys to check, or authentication turned off on purpose: ``serve`` needs one or the other
    (authentication is never off by omission)."""
    auth = config.server.auth
    return bool(auth.api_keys) or config.tenancy.store is not None or auth.disabled


def workers_problem(config: GatewayConfig, workers: int) -> str | None:
    """Why ``workers`` server processes may not serve ``config``, or None when they may.

    Every worker is a whole gateway with its own state. So an embedded ``llamacpp`` deployment
    would be loaded once per worker (refused unless ``server.local_models_per_worker`` says it is
    meant), and budgets and rate limits would be enforced per worker, letting each worker spend
    the whole amount: refused (fail closed) until that state is shared between workers.
    """
    if workers <= 1:
        return None
    tenancy = config.tenancy
    if tenancy.budgets or tenancy.rate_limits.rpm or tenancy.rate_limits.tpm or tenancy.store:
        return (
            f"budgets and rate limits are enforced in each server process, so {workers} workers "
            "could each spend a whole budget: serve tenancy (tenancy.store, tenancy.budgets, "
            "tenancy.rate_limits) with one worker"
        )
    if config.server.local_models_per_worker:
        return None
    local = [name for name, dep in config.deployments.items() if isinstance(dep, LlamaCppDeployment)]
    if not local:
        return None
    return (
        f"{workers} workers would each load every embedded llamacpp model ({', '.join(local)}): "
        "set server.local_models_per_worker: true if that is meant, or serve the model with "
        "llama.cpp's own server (a deployment of type openai) and keep the workers"
    )

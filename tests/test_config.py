"""Configuration loading, interpolation, validation with YAML paths, and `hybridgate check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from hybridgate.cli import app
from hybridgate.config import load_config, load_config_text
from hybridgate.config.reference import SECTIONS, render_reference
from hybridgate.config.schema import LlamaCppDeployment, OpenAIDeployment
from hybridgate.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = """
version: 1
deployments:
  gpt:
    type: openai
    api_key: ${TEST_KEY}
    model: gpt-4o-mini
  local:
    type: llamacpp
    model_path: models/tiny.gguf
models:
  chat:
    deployments: [local, gpt]
    aliases: [default]
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, env=env or {})
    return info.value.problems


def test_examples_are_valid() -> None:
    for name in ("default.yaml", "hybrid-sandbox.yaml"):
        loaded = load_config(ROOT / "examples" / name, env={})
        assert loaded.config.models


def test_env_interpolation_and_secret() -> None:
    loaded = load_config_text(MINIMAL, env={"TEST_KEY": "sk-secret-value-123"})
    gpt = loaded.config.deployments["gpt"]
    assert isinstance(gpt, OpenAIDeployment)
    assert gpt.api_key is not None
    assert gpt.api_key.get_secret_value() == "sk-secret-value-123"
    assert "sk-secret-value-123" not in repr(loaded.config)
    assert loaded.is_configured("gpt")


def test_unset_variable_makes_deployment_unconfigured_not_an_error() -> None:
    loaded = load_config_text(MINIMAL, env={})
    assert not loaded.is_configured("gpt")
    assert "TEST_KEY" in loaded.unconfigured["gpt"]
    assert any("unconfigured" in message for _, message in loaded.warnings)


def test_required_deployment_with_unset_variable_is_an_error() -> None:
    text = MINIMAL.replace("    type: openai\n", "    type: openai\n    required: true\n")
    [(where, message)] = problems_of(text)
    assert where.startswith("deployments.gpt.api_key (line ")
    assert "TEST_KEY" in message


def test_defaults_and_escapes() -> None:
    text = MINIMAL.replace("model: gpt-4o-mini", "model: ${MODEL:-gpt-4o}$${literal}")
    gpt = load_config_text(text, env={"TEST_KEY": "k"}).config.deployments["gpt"]
    assert isinstance(gpt, OpenAIDeployment)
    assert gpt.model == "gpt-4o${literal}"


def test_relative_model_path_is_resolved_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "gw.yaml"
    path.parent.mkdir()
    path.write_text(MINIMAL)
    local = load_config(path, env={}).config.deployments["local"]
    assert isinstance(local, LlamaCppDeployment)
    assert local.model_path == str(tmp_path / "conf" / "models" / "tiny.gguf")


@pytest.mark.parametrize(
    ("mutation", "where", "fragment"),
    [
        (
            ("    model: gpt-4o-mini\n", "    model: gpt-4o-mini\n    modle: x\n"),
            "deployments.gpt.modle",
            "Extra",
        ),
        (("type: llamacpp", "type: llamacp"), "deployments.local", "does not match"),
        (("[local, gpt]", "[local, gtp]"), "models.chat.deployments[1]", "unknown deployment 'gtp'"),
        (("version: 1", "version: 2"), "version", "Input should be 1"),
        (
            ("model_path: models/tiny.gguf", "model_path: models/tiny.gguf\n    context_window: -5"),
            "deployments.local.context_window",
            "greater than 0",
        ),
        (
            ("aliases: [default]", "aliases: [local]\n  local:\n    deployments: [local]"),
            "models.local",
            "already used by model 'chat'",
        ),
    ],
)
def test_problems_name_their_yaml_path(mutation: tuple[str, str], where: str, fragment: str) -> None:
    text = MINIMAL.replace(*mutation)
    assert text != MINIMAL
    problems = problems_of(text, {"TEST_KEY": "k"})
    matching = [(w, m) for w, m in problems if w.startswith(where + " (line ") and fragment in m]
    assert matching, problems


def test_line_numbers_point_at_the_value() -> None:
    text = MINIMAL.replace("model: gpt-4o-mini", "model: gpt-4o-mini\n    timeouts: {total: 0}")
    [(where, _)] = problems_of(text, {"TEST_KEY": "k"})
    assert where == "deployments.gpt.timeouts.total (line 8)"


def test_yaml_syntax_error_has_a_line() -> None:
    [(where, message)] = problems_of("version: 1\ndeployments: [\n")
    assert where.startswith("line ")
    assert "YAML" in message


def test_not_a_mapping() -> None:
    assert problems_of("- a\n- b\n") == [("(root)", "the configuration must be a YAML mapping")]


def test_check_command(tmp_path: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(app, ["check", str(ROOT / "examples" / "default.yaml")])
    assert good.exit_code == 0, good.output
    assert "valid" in good.output
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(MINIMAL.replace("[local, gpt]", "[local, nope]"))
    bad = runner.invoke(app, ["check", str(bad_file)])
    assert bad.exit_code == 2
    assert "models.chat.deployments[1]" in bad.output
    missing = runner.invoke(app, ["check", str(tmp_path / "absent.yaml")])
    assert missing.exit_code == 2
    assert "cannot read" in missing.output


def test_version_flag() -> None:
    from hybridgate import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"hybridgate {__version__}"


def test_json_schema_export() -> None:
    result = CliRunner().invoke(app, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert set(schema["properties"]) >= {"version", "server", "deployments", "models"}
    assert schema["additionalProperties"] is False


def test_every_option_is_documented() -> None:
    for _, model in SECTIONS:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
    assert render_reference() in (ROOT / "docs" / "configuration.md").read_text(), (
        "docs/configuration.md is out of date: regenerate its reference with `hybridgate config reference`"
    )


def test_every_section_is_in_the_reference() -> None:
    from hybridgate.config import governance, pricing, resilience, routing, schema, telemetry

    documented = {m for _, m in SECTIONS}
    modules = {m.__name__ for m in (schema, routing, governance, pricing, resilience, telemetry)}
    public_models = [
        v
        for module in (schema, routing, governance, pricing, resilience, telemetry)
        for v in vars(module).values()
        if isinstance(v, type)
        and issubclass(v, BaseModel)
        and v.__module__ in modules
        and not v.__name__.startswith("_")
    ]
    for model in public_models:
        assert model in documented, f"{model.__name__} is missing from the configuration reference"

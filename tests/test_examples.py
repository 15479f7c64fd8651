"""The shipped example configurations really serve (models generated into a temp folder)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.support.processes import start_gateway

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _localised(name: str, models_dir: Path, tmp_path: Path) -> Path:
    text = (EXAMPLES / name).read_text().replace("../models/", f"{models_dir}/")
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("example", "models"),
    [("default.yaml", ["local", "hybrid"]), ("hybrid-sandbox.yaml", ["local", "hybrid", "cloud"])],
)
def test_example_serves(example: str, models: list[str], models_dir: Path, tmp_path: Path) -> None:
    # Without cloud keys, the default config's cloud deployments must be dormant, not errors.
    proc, url = start_gateway(
        _localised(example, models_dir, tmp_path), env={"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}
    )
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)
        for model in models:
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert reply.choices[0].message.content, model
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200, ready.text
        listed = {m.id: m.model_dump() for m in client.models.list()}
        assert set(models) <= set(listed)
        if example == "default.yaml":
            states = {d["name"]: d["state"] for d in listed["gpt-4o-mini"]["deployments"]}
            assert states == {"openai-gpt-4o-mini": "unconfigured"}
    finally:
        proc.stop()
    assert "Traceback" not in proc.output

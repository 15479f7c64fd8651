"""Helpers shared by the wire codecs."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from hybridgate.validation import format_path, real_path


def validation_message(exc: ValidationError, body: Any = None) -> tuple[str, str | None]:
    """One clear sentence for the most specific problem in ``exc``, and the field it names."""
    errors = exc.errors(include_url=False)
    body = body if body is not None else (errors[0].get("input") if errors and not errors[0]["loc"] else None)
    best: tuple[int, str, str | None] | None = None
    for e in errors:
        path = (
            real_path(body, tuple(e["loc"]), e["type"] == "missing") if body is not None else list(e["loc"])
        )
        if e["type"] == "union_tag_invalid":  # name the discriminator field itself
            path.append(str(e.get("ctx", {}).get("discriminator", "")).strip("'"))
        param = format_path(path) or None
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "Field required"
        text = f"{param}: {msg}" if param else msg
        score = len(path)
        if best is None or score > best[0]:
            best = (score, text, param)
    if best is None:
        return "invalid request", None
    return best[1], best[2]

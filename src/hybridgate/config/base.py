"""Shared bits of the configuration models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/\-]*$")]


class Strict(BaseModel):
    """Unknown keys are errors (a typo names its YAML path instead of being ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

"""The planner: a pure function from (request, routing table, health snapshot) to a RoutePlan.

No awaits, no I/O, no clock reads: for equal inputs it returns equal plans. The server, the
``explain`` command and the simulator call this same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from hybridgate.backends.base import Capabilities
from hybridgate.errors import ContextLengthExceeded, ModelNotFound, NoRouteAvailable, UnsupportedFeature
from hybridgate.health.snapshot import HealthSnapshot
from hybridgate.types import ImagePart, InferenceRequest, Timeouts

Operation = Literal["chat", "embeddings"]


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """What the planner knows of a deployment: static facts from config and the adapter."""

    name: str
    capabilities: Capabilities
    timeouts: Timeouts


@dataclass(frozen=True, slots=True)
class LogicalModel:
    name: str
    deployments: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class RoutingTable:
    """Compiled once at start-up: model names (and aliases) to logical models, and the deployments."""

    models: Mapping[str, LogicalModel]
    deployments: Mapping[str, DeploymentSpec]

    def resolve(self, requested: str) -> LogicalModel:
        model = self.models.get(requested)
        if model is None:
            raise ModelNotFound(f"model {requested!r} does not exist", param="model")
        return model


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why one candidate was kept or dropped."""

    deployment: str
    accepted: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Explanation:
    model: str
    verdicts: tuple[Verdict, ...]
    summary: str

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(v.deployment for v in self.verdicts if v.accepted)


@dataclass(frozen=True, slots=True)
class Candidate:
    deployment: str
    timeouts: Timeouts
    placement: str


@dataclass(frozen=True, slots=True)
class RoutePlan:
    model: str
    candidates: tuple[Candidate, ...]
    explanation: Explanation = field(compare=False)


def estimate_prompt_tokens(request: InferenceRequest) -> int:
    """A cheap upper-leaning estimate (about 4 characters per token, plus per-message overhead)."""
    chars = 0
    for m in request.messages:
        chars += 16
        for part in m.content:
            chars += len(part.text) if part.type == "text" else 3000
        for call in m.tool_calls:
            chars += len(call.name) + len(call.arguments)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description or "") + 64 * len(tool.parameters)
    return chars // 4 + 1


def _reject_reason(request: InferenceRequest, caps: Capabilities, prompt_tokens: int) -> str | None:
    if not caps.chat:
        return "does not serve chat"
    if request.tools and not caps.tools:
        return "does not support tools"
    if request.stream and not caps.streaming:
        return "does not support streaming"
    if not caps.vision and any(isinstance(p, ImagePart) for m in request.messages for p in m.content):
        return "does not accept images"
    wanted = prompt_tokens + (request.max_tokens or 1)
    if wanted > caps.context_window:
        return f"context window {caps.context_window} < ~{wanted} tokens"
    return None


def plan_chat(request: InferenceRequest, table: RoutingTable, snapshot: HealthSnapshot) -> RoutePlan:
    """Candidates for a chat request, in order. Raises when none is acceptable."""
    model = table.resolve(request.model)
    prompt_tokens = estimate_prompt_tokens(request)
    verdicts: list[Verdict] = []
    candidates: list[Candidate] = []
    too_small = 0
    for name in model.deployments:
        spec = table.deployments[name]
        health = snapshot.of(name)
        reason = None if health.routable else f"{health.state.value}: {health.detail}".rstrip(": ")
        if reason is None:
            reason = _reject_reason(request, spec.capabilities, prompt_tokens)
            too_small += reason is not None and reason.startswith("context window")
        if reason is None:
            verdicts.append(Verdict(name, True, "capable and ready"))
            candidates.append(Candidate(name, spec.timeouts, spec.capabilities.placement))
        else:
            verdicts.append(Verdict(name, False, reason))
    summary = f"{len(candidates)} of {len(verdicts)} deployments eligible; tried in configured order"
    explanation = Explanation(model.name, tuple(verdicts), summary)
    if not candidates:
        _raise_no_candidate(model.name, verdicts, too_small)
    return RoutePlan(model.name, tuple(candidates), explanation)


def plan_embeddings(model_name: str, table: RoutingTable, snapshot: HealthSnapshot) -> RoutePlan:
    model = table.resolve(model_name)
    verdicts: list[Verdict] = []
    candidates: list[Candidate] = []
    for name in model.deployments:
        spec = table.deployments[name]
        health = snapshot.of(name)
        if not spec.capabilities.embeddings:
            verdicts.append(Verdict(name, False, "does not serve embeddings"))
        elif not health.routable:
            verdicts.append(Verdict(name, False, f"{health.state.value}: {health.detail}".rstrip(": ")))
        else:
            verdicts.append(Verdict(name, True, "capable and ready"))
            candidates.append(Candidate(name, spec.timeouts, spec.capabilities.placement))
    explanation = Explanation(
        model.name, tuple(verdicts), f"{len(candidates)} embedding deployments eligible"
    )
    if not candidates:
        if not any(table.deployments[n].capabilities.embeddings for n in model.deployments):
            raise UnsupportedFeature(f"model {model.name!r} does not serve embeddings", param="model")
        _raise_no_candidate(model.name, verdicts, 0)
    return RoutePlan(model.name, tuple(candidates), explanation)


def _raise_no_candidate(model: str, verdicts: list[Verdict], too_small: int) -> None:
    detail = "; ".join(f"{v.deployment}: {v.reason}" for v in verdicts)
    if too_small and too_small == len(verdicts):
        raise ContextLengthExceeded(
            f"the request does not fit the context window of any deployment of {model!r} ({detail})",
            param="messages",
        )
    capability = [v for v in verdicts if v.reason.startswith("does not")]
    if capability and len(capability) == len(verdicts):
        raise UnsupportedFeature(f"no deployment of {model!r} can serve this request ({detail})")
    raise NoRouteAvailable(f"no deployment of {model!r} is available ({detail})")


def build_table(
    models: Mapping[str, tuple[tuple[str, ...], str, tuple[str, ...]]],
    deployments: Mapping[str, DeploymentSpec],
) -> RoutingTable:
    """``models`` maps name -> (deployments, description, aliases)."""
    table: dict[str, LogicalModel] = {}
    for name, (deps, description, aliases) in models.items():
        logical = LogicalModel(name, deps, description)
        table[name] = logical
        for alias in aliases:
            table[alias] = logical
    return RoutingTable(models=table, deployments=dict(deployments))

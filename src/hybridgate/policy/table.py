"""The compiled policy: everything static the planner needs, built once from the configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from hybridgate.backends.base import Capabilities
from hybridgate.config.governance import GovernanceConfig
from hybridgate.config.routing import WorkloadClass
from hybridgate.config.schema import AnyDeployment, GatewayConfig
from hybridgate.cost.model import CostModel, cost_model
from hybridgate.errors import ModelNotFound
from hybridgate.health.predictor import PerfEstimate, prior
from hybridgate.policy.context import RequestContext
from hybridgate.policy.explain import Budget
from hybridgate.policy.governance import DataDecision, DataProfile, clean_decision, decide
from hybridgate.types import Timeouts

# Request features as bits, so the planner checks a deployment's capabilities in one operation.
NEEDS_CHAT, NEEDS_TOOLS, NEEDS_STREAM, NEEDS_IMAGES = 1, 2, 4, 8


def lacking(caps: Capabilities) -> int:
    """The NEEDS_* bits a deployment cannot serve."""
    return (
        (0 if caps.chat else NEEDS_CHAT)
        | (0 if caps.tools else NEEDS_TOOLS)
        | (0 if caps.streaming else NEEDS_STREAM)
        | (0 if caps.vision else NEEDS_IMAGES)
    )


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """Static facts of a deployment: what it can do, its deadlines, prices and latency priors."""

    name: str
    capabilities: Capabilities
    timeouts: Timeouts
    cost: CostModel
    prior: PerfEstimate
    lacks: int  # NEEDS_* bits it cannot serve


class DeploymentRow(NamedTuple):
    """One deployment of a logical model as the planner's loop reads it: the static facts it
    checks and prices with, unpacked in one step (built once, with the policy)."""

    spec: DeploymentSpec
    name: str
    lacks: int  # NEEDS_* bits it cannot serve
    context_window: int
    cloud: bool  # placement, as its adapter reports it
    region: str
    local_priced: bool  # priced by compute time (else by tokens and egress)
    compute_per_second: float
    input_per_token: float
    output_per_token: float
    egress_per_byte: Mapping[str, float]
    default_egress_per_byte: float

    @staticmethod
    def of(spec: DeploymentSpec) -> DeploymentRow:
        caps, cost = spec.capabilities, spec.cost
        return DeploymentRow(
            spec,
            spec.name,
            spec.lacks,
            caps.context_window,
            caps.placement == "cloud",
            caps.region,
            cost.placement == "local",
            cost.compute_per_second,
            cost.input_per_token,
            cost.output_per_token,
            cost.egress_per_byte,
            cost.default_egress_per_byte,
        )


@dataclass(frozen=True, slots=True)
class LogicalModel:
    name: str
    deployments: tuple[str, ...]
    description: str = ""
    rows: tuple[DeploymentRow, ...] = ()  # the deployments' static facts, in order (compile_policy)


@dataclass(frozen=True)
class Policy:
    models: Mapping[str, LogicalModel]  # names and aliases
    deployments: Mapping[str, DeploymentSpec]
    classes: Mapping[str, WorkloadClass]
    governance: GovernanceConfig
    default_class: str
    budgets: Mapping[str, Budget]  # each class's latency budget, precomputed
    _clean: dict[tuple[str, str], DataDecision] = field(default_factory=dict, repr=False, compare=False)

    def decide(self, profile: DataProfile, ctx: RequestContext, cls: WorkloadClass) -> DataDecision:
        """The governance decision, cached for the common case (nothing sensitive found)."""
        if profile.kinds or profile.scan_failed or ctx.sensitivity in ("confidential", "restricted"):
            return decide(profile, ctx, cls, self.governance)
        key = (ctx.region, ctx.tenant)
        decision = self._clean.get(key)
        if decision is None:
            if len(self._clean) > 4096:  # regions come from requests: keep the cache bounded
                self._clean.clear()
            decision = self._clean[key] = clean_decision(ctx, self.governance)
        return decision

    def resolve(self, requested: str) -> LogicalModel:
        model = self.models.get(requested)
        if model is None:
            raise ModelNotFound(f"model {requested!r} does not exist", param="model")
        return model


def deployment_prior(dep: AnyDeployment, placement: str, expected_output_tokens: int = 256) -> PerfEstimate:
    e = dep.expected
    return prior(
        "local" if placement == "local" else "cloud",
        ttft_s=e.ttft_ms / 1000.0 if e.ttft_ms is not None else None,
        tokens_per_s=e.tokens_per_s,
        prefill_tokens_per_s=e.prefill_tokens_per_s,
        concurrency=e.concurrency,
        expected_output_tokens=expected_output_tokens,
    )


def compile_policy(config: GatewayConfig, capabilities: Mapping[str, Capabilities]) -> Policy:
    """``capabilities``: each deployment's, as its adapter reports them (or derived from config)."""
    deployments = {}
    for name, dep in config.deployments.items():
        caps = capabilities[name]
        deployments[name] = DeploymentSpec(
            name=name,
            capabilities=caps,
            timeouts=Timeouts(**dep.timeouts.model_dump()),
            cost=cost_model(name, dep, config.pricing),
            prior=deployment_prior(dep, caps.placement),
            lacks=lacking(caps),
        )
    models: dict[str, LogicalModel] = {}
    for name, model in config.models.items():
        rows = tuple(DeploymentRow.of(deployments[d]) for d in model.deployments)
        logical = LogicalModel(name, tuple(model.deployments), model.description, rows)
        models[name] = logical
        for alias in model.aliases:
            models[alias] = logical
    return Policy(
        models=models,
        deployments=deployments,
        classes=dict(config.classes),
        governance=config.governance,
        default_class=config.default_class,
        budgets={
            name: Budget(c.latency.p95_ms, c.latency.p99_ms, c.latency.ttft_ms)
            for name, c in config.classes.items()
        },
    )

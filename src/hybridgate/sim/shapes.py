"""Request shapes: the real request objects the planner sees, built once and reused.

Building an :class:`~hybridgate.types.InferenceRequest`, a
:class:`~hybridgate.policy.context.RequestContext` and a data profile for each of a million
requests would cost more than planning them, so each class draws its prompt sizes into a pool of
:data:`POOL` sizes and every combination of (prompt size, declared sensitivity, region, tenant,
sensitive content found) is built the first time a request needs it.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from hybridgate.config.governance import SENSITIVITY_ORDER, Sensitivity
from hybridgate.errors import SensitiveDataRefused
from hybridgate.policy.context import RequestContext
from hybridgate.policy.governance import DataDecision, DataProfile
from hybridgate.policy.table import Policy
from hybridgate.sim.models import LogNormalDraw
from hybridgate.sim.trace import TraceRecord
from hybridgate.sim.workload import ClassLoad, Mix
from hybridgate.types import InferenceRequest, Message

POOL = 32


class Shape:
    """One reusable request: what the planner is given, and what governance says of it."""

    __slots__ = ("ctx", "decision", "index", "profile", "prompt_tokens", "request", "stream")

    def __init__(
        self,
        index: int,
        request: InferenceRequest,
        ctx: RequestContext,
        profile: DataProfile,
        prompt_tokens: int,
        decision: DataDecision | None,
    ) -> None:
        self.index = index  # the class's index in the workload
        self.request = request
        self.ctx = ctx
        self.profile = profile
        self.prompt_tokens = prompt_tokens
        self.stream = request.stream
        self.decision = decision  # None: governance refuses it

    def violates(self, region: str, redacted: bool) -> bool:
        """Would sending it to a cloud deployment in ``region`` break the data rules?"""
        d = self.decision
        if d is None or not d.cloud_allowed:
            return True
        if d.redact and not redacted:
            return True
        return d.allowed_regions is not None and region not in d.allowed_regions


def _prompt_text(tokens: int) -> str:
    # The planner estimates ~4 characters per token plus 16 per message: match it.
    return "x" * max(1, 4 * tokens - 20)


class ShapePool:
    """The shapes of one workload class."""

    def __init__(self, index: int, load: ClassLoad, model: str, policy: Policy, rng: random.Random) -> None:
        self.index = index
        self.load = load
        self.model = model
        self.policy = policy
        self.prompts = [max(1, round(load.prompt_tokens.draw(rng))) for _ in range(POOL)]
        self.output_tokens = LogNormalDraw(load.output_tokens)
        self.declared = Mix({str(k): v for k, v in load.declared.items()})
        self.regions = Mix(load.regions)
        self.tenants = Mix(load.tenants)
        self.sensitive_share = load.sensitive_share
        self._built: dict[tuple[int, str, str, str, bool], Shape] = {}

    def pick(self, rng: random.Random) -> Shape:
        key = (
            rng.randrange(POOL),
            self.declared.pick(rng) if len(self.declared.values) > 1 else self.declared.values[0],
            self.regions.pick(rng) if len(self.regions.values) > 1 else self.regions.values[0],
            self.tenants.pick(rng) if len(self.tenants.values) > 1 else self.tenants.values[0],
            self.sensitive_share > 0 and rng.random() < self.sensitive_share,
        )
        shape = self._built.get(key)
        if shape is None:
            shape = self._built[key] = self._build(*key)
        return shape

    def _build(self, prompt_i: int, declared: str, region: str, tenant: str, sensitive: bool) -> Shape:
        load = self.load
        kinds = frozenset(load.sensitive_kinds) if sensitive else frozenset[str]()
        sensitivity: Sensitivity = next(s for s in SENSITIVITY_ORDER if s == declared)
        key = ShapeKey(
            load.workload_class, self.prompts[prompt_i], sensitivity, region, tenant, kinds, load.stream
        )
        return build_shape(self.index, key, self.model, self.policy)


class ShapeKey(NamedTuple):
    workload_class: str
    prompt_tokens: int
    sensitivity: Sensitivity
    region: str
    tenant: str
    kinds: frozenset[str]
    stream: bool


def build_shape(index: int, key: ShapeKey, model: str, policy: Policy) -> Shape:
    """The request, context and data profile the planner will see, and the governance verdict."""
    request = InferenceRequest(
        model=model,
        messages=(Message.of_text("user", _prompt_text(key.prompt_tokens)),),
        stream=key.stream,
    )
    region = policy.governance.default_region if key.region == "default" else key.region
    ctx = RequestContext(key.workload_class, key.tenant, key.sensitivity, region)
    profile = DataProfile(key.kinds)
    try:
        decision: DataDecision | None = policy.decide(profile, ctx, policy.classes[key.workload_class])
    except SensitiveDataRefused:
        decision = None
    return Shape(index, request, ctx, profile, key.prompt_tokens, decision)


class TraceShapes:
    """Shapes of replayed requests, built once per distinct (class, size, data, origin)."""

    def __init__(self, model: str, policy: Policy) -> None:
        self.model = model
        self.policy = policy
        self._built: dict[ShapeKey, Shape] = {}

    def of(self, record: TraceRecord) -> Shape:
        key = ShapeKey(
            record.workload_class,
            record.prompt_tokens,
            record.sensitivity,
            record.region,
            record.tenant,
            record.kinds,
            record.stream,
        )
        shape = self._built.get(key)
        if shape is None:
            shape = self._built[key] = build_shape(-1, key, self.model, self.policy)
        return shape

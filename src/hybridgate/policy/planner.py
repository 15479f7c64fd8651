"""The planner: a pure function from a request and what is known now to a RoutePlan.

    plan_chat(request, ctx, data, snapshot, policy) -> RoutePlan (candidates + Explanation)

No awaits, no I/O, no clock: equal inputs give equal plans, so the server, ``hybridgate
explain`` and the simulator run the same code. For each deployment of the requested model it
decides keep or drop, and why (health, capability, placement preference, data governance,
residency, cost ceiling); for each one kept it predicts latency (p95 against the class budget)
and cost; then it orders them by the class's preference:

1. candidates that meet the budget on the preferred placement (local for ``local-first``),
2. candidates that meet the budget elsewhere (this is the spill to the cloud),
3. the rest, fastest first;

within a tier the cheapest first. So a local-first class stays local while local meets its
budget, and spills to the cloud exactly when the local queue would break it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, overload

from hybridgate.backends.base import Capabilities
from hybridgate.config.routing import WorkloadClass
from hybridgate.errors import ContextLengthExceeded, NoRouteAvailable, PermissionDenied, UnsupportedFeature
from hybridgate.health.predictor import DECODE_TAIL
from hybridgate.health.snapshot import DeploymentHealth, DeploymentState, HealthSnapshot
from hybridgate.policy.context import RequestContext
from hybridgate.policy.explain import Budget, Explanation, Verdict
from hybridgate.policy.governance import DataDecision, DataProfile, decide
from hybridgate.policy.table import (
    NEEDS_CHAT,
    NEEDS_IMAGES,
    NEEDS_STREAM,
    NEEDS_TOOLS,
    DeploymentSpec,
    Policy,
)
from hybridgate.types import EmbeddingRequest, InferenceRequest, Timeouts

_READY = DeploymentState.READY


class Candidate(NamedTuple):
    """One deployment to try, with what the planner predicted for it."""

    deployment: str
    placement: str
    configured: Timeouts  # the deployment's own deadlines
    budget: Budget | None = None
    redact: bool = False
    predicted_s: float | None = None  # expected latency
    predicted_p95_s: float | None = None
    predicted_ttft_p95_s: float | None = None
    estimated_cost_usd: float | None = None
    deadlines: Timeouts | None = None  # ``timeouts``, when already worked out
    predicted_wait_s: float = 0.0  # the queue wait included in the predictions

    @property
    def timeouts(self) -> Timeouts:
        """This attempt's deadlines: from the budget and the predicted p95, never looser than the
        deployment's own (:func:`attempt_timeouts`)."""
        if self.deadlines is not None:
            return self.deadlines
        if self.budget is None or self.predicted_p95_s is None:
            return self.configured
        return attempt_timeouts(self.configured, self.budget, self.predicted_p95_s)


class HedgeSpec(NamedTuple):
    """Send the same request to the next candidate when the first is slower than its predicted
    p95: no token after ``first_token_s`` (streamed), no answer after ``answer_s`` (not streamed).
    At the p95, about one request in twenty is hedged ("The Tail at Scale", Dean & Barroso 2013)."""

    first_token_s: float
    answer_s: float


class Candidates(Sequence[Candidate]):
    """The plan's candidates in order, each built when first asked for (most requests are
    served by the first, so the rest are never built)."""

    __slots__ = ("_budget", "_built", "_order", "_redact")

    def __init__(self, order: Sequence[tuple[Any, ...]], budget: Budget, redact: bool) -> None:
        self._order = order
        self._budget = budget
        self._redact = redact
        self._built: dict[int, Candidate] = {}

    def __len__(self) -> int:
        return len(self._order)

    @overload
    def __getitem__(self, index: int) -> Candidate: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Candidate]: ...

    def __getitem__(self, index: int | slice) -> Candidate | Sequence[Candidate]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        built = self._built.get(index)
        if built is not None:
            return built
        if index < 0:
            index += len(self._order)
            built = self._built.get(index)
        if built is None:
            s = _Scored._make(self._order[index])
            spec, budget = s.spec, self._budget
            placement = spec.capabilities.placement
            built = self._built[index] = Candidate(
                spec.name,
                placement,
                spec.timeouts,
                budget,
                self._redact and placement == "cloud",
                s.expected_s,
                s.p95_s,
                s.ttft_p95_s,
                s.cost_usd,
                attempt_timeouts(spec.timeouts, budget, s.p95_s),
                s.queue_wait_s,
            )
        return built

    def __iter__(self) -> Iterator[Candidate]:
        for i in range(len(self._order)):
            yield self[i]

    @property
    def needs_redaction(self) -> bool:
        return self._redact and any(
            _Scored._make(s).spec.capabilities.placement == "cloud" for s in self._order
        )


class RoutePlan(NamedTuple):
    """The planner's answer: candidates in order, why, and how to hedge (None: no hedging)."""

    model: str
    workload_class: str
    priority: int
    candidates: Sequence[Candidate]
    explanation: Explanation
    hedge: HedgeSpec | None = None

    @property
    def needs_redaction(self) -> bool:
        candidates = self.candidates
        if isinstance(candidates, Candidates):
            return candidates.needs_redaction
        return any(c.redact for c in candidates)


def budget_of(cls: WorkloadClass, ctx: RequestContext) -> Budget:
    """The class budget, or the request's own (tighter or looser) when it declares one."""
    latency = cls.latency
    if ctx.latency_budget_ms is None:
        return Budget(latency.p95_ms, latency.p99_ms, latency.ttft_ms)
    requested = ctx.latency_budget_ms
    return Budget(requested, requested, min(latency.ttft_ms, requested))


def attempt_timeouts(configured: Timeouts, budget: Budget, predicted_p95_s: float) -> Timeouts:
    """Per-attempt deadlines from the budget, never looser than the deployment's own.

    A silent provider cannot hold a request past its budget; a healthy answer that streams
    longer than the p99 budget (a long generation) may run to twice its own predicted p95.
    """
    ttft_s = budget.ttft_ms / 1000.0
    p99_s = budget.p99_ms / 1000.0
    total = min(configured.total, max(p99_s, 2.0 * predicted_p95_s))
    return Timeouts(
        connect=min(configured.connect, max(0.5, ttft_s)),
        first_token=min(configured.first_token, 2.0 * ttft_s, total),
        idle=min(configured.idle, max(1.0, ttft_s), total),
        total=total,
    )


class _Needs(NamedTuple):
    """What a request needs of a deployment, worked out in one pass per plan."""

    prompt_tokens: int
    tokens: int  # prompt estimate + max_tokens
    tools: bool
    stream: bool
    images: bool
    mask: int  # the features needed, as NEEDS_* bits (see hybridgate.policy.table.lacking)

    @staticmethod
    def of(request: InferenceRequest) -> _Needs:
        chars = 0
        images = False
        for m in request.messages:
            chars += 16
            for part in m.content:
                if part.type == "text":
                    chars += len(part.text)
                else:
                    chars += 3000
                    images = True
            for call in m.tool_calls:
                chars += len(call.name) + len(call.arguments)
        for tool in request.tools:
            chars += len(tool.name) + len(tool.description or "") + 64 * len(tool.parameters)
        prompt = chars // 4 + 1
        tools, stream = bool(request.tools), request.stream
        mask = (
            NEEDS_CHAT
            | (NEEDS_TOOLS if tools else 0)
            | (NEEDS_STREAM if stream else 0)
            | (NEEDS_IMAGES if images else 0)
        )
        return _Needs(prompt, prompt + (request.max_tokens or 1), tools, stream, images, mask)


def estimate_prompt_tokens(request: InferenceRequest) -> int:
    """A cheap upper-leaning estimate (about 4 characters per token, plus per-message overhead)."""
    return _Needs.of(request).prompt_tokens


def _capability_problem(needs: _Needs, caps: Capabilities) -> str | None:
    if not caps.chat:
        return "does not serve chat"
    if needs.tools and not caps.tools:
        return "does not support tools"
    if needs.stream and not caps.streaming:
        return "does not support streaming"
    if needs.images and not caps.vision:
        return "does not accept images"
    if needs.tokens > caps.context_window:
        return f"context window {caps.context_window} < ~{needs.tokens} tokens"
    return None


def _placement_rules(
    cls: WorkloadClass, data: DataDecision, ctx: RequestContext
) -> tuple[str | None, str | None]:
    """(why cloud is excluded, why local is excluded) for this class, data and context, or None."""
    cloud: str | None = None
    if ctx.local_only is not None:
        cloud = ctx.local_only
    elif cls.placement == "local-only":
        cloud = "class is local-only"
    elif not data.cloud_allowed:
        cloud = f"data governance: {data.rule}"
    local = "class is cloud-only" if cls.placement == "cloud-only" else None
    return cloud, local


def _placement_problem(
    caps: Capabilities, no_cloud: str | None, no_local: str | None, regions: frozenset[str] | None
) -> str | None:
    """Placement preference, data governance and residency, for one deployment."""
    if caps.placement != "cloud":
        return no_local
    if no_cloud is not None:
        return no_cloud
    if regions is not None and caps.region not in regions:
        return f"residency: region {caps.region!r} not allowed (allowed: {', '.join(sorted(regions))})"
    return None


class _Scored(NamedTuple):
    """One candidate that passed the filters. The hot loop stores these as plain tuples (much
    cheaper to build) and sorts them: the first four fields are the rank, unique because it
    ends with the position. Readers wrap a row with ``_Scored._make`` when they need names."""

    tier: int  # 0 meets the budget on the preferred placement, 1 elsewhere (the spill), 2 misses it
    rank_a: float  # tiers 0-1: cost; tier 2: p95
    rank_b: float  # tiers 0-1: p95; tier 2: cost
    position: int  # in the model's configured order
    spec: DeploymentSpec
    queue_wait_s: float
    ttft_p95_s: float
    expected_s: float
    p95_s: float
    cost_usd: float
    meets: bool


def _summary(
    order: Sequence[tuple[Any, ...]], budget: Budget, cls: WorkloadClass, offline: bool = False
) -> str:
    summary = _summary_of(order, budget, cls)
    return f"offline, cloud deployments not tried; {summary}" if offline else summary


def _summary_of(order: Sequence[tuple[Any, ...]], budget: Budget, cls: WorkloadClass) -> str:
    if not order:
        return "no eligible deployment"
    first = _Scored._make(order[0])
    p95, ttft = round(first.p95_s * 1000), round(first.ttft_p95_s * 1000)
    head = f"{cls.placement}: {first.spec.name} ({first.spec.capabilities.placement})"
    if not first.meets:
        wanted = f"p95 {budget.p95_ms:.0f} ms, first token {budget.ttft_ms:.0f} ms"
        return f"{head} is the fastest, but no deployment meets the budget ({wanted}; predicted {p95}/{ttft})"
    preferred = "cloud" if cls.placement in ("cloud-first", "cloud-only") else "local"
    spilled = first.spec.capabilities.placement != preferred and cls.placement.endswith("-first")
    why = f"meets the budget (predicted p95 {p95} ms <= {budget.p95_ms:.0f} ms) at ${first.cost_usd:.6f}"
    if spilled:
        return f"{head} {why}; no {preferred} deployment meets the budget (spill)"
    return f"{head} {why}"


def _names(order: Sequence[tuple[Any, ...]]) -> tuple[str, ...]:
    return tuple([row[4].name for row in order])


def plan_chat(
    request: InferenceRequest,
    ctx: RequestContext,
    profile: DataProfile,
    snapshot: HealthSnapshot,
    policy: Policy,
) -> RoutePlan:
    """Candidates for a chat request in order, with the Explanation. Raises when none is acceptable."""
    model = policy.resolve(request.model)
    cls = policy.classes[ctx.workload_class]
    if cls.models and model.name not in cls.models:
        raise PermissionDenied(f"workload class {ctx.workload_class!r} may not use model {model.name!r}")
    data = policy.decide(profile, ctx, cls)
    budget = policy.budgets[ctx.workload_class] if ctx.latency_budget_ms is None else budget_of(cls, ctx)
    needs = _Needs.of(request)
    needed, tokens, prompt = needs.mask, needs.tokens, needs.prompt_tokens
    output = request.max_tokens or cls.expected_output_tokens
    n_bytes, origin = 4 * (prompt + output), ctx.region
    ceiling = cls.max_cost_usd
    if ctx.max_cost_usd is not None and (ceiling is None or ctx.max_cost_usd < ceiling):
        ceiling = ctx.max_cost_usd
    p95_budget_s, ttft_budget_s = budget.p95_ms / 1000.0, budget.ttft_ms / 1000.0
    # Rank tiers: 0 meets the budget on the preferred placement, 1 meets it elsewhere (the spill),
    # 2 misses it (fastest first). Within a tier the cheapest first, then the configured order.
    cloud_tier = 0 if cls.placement in ("cloud-first", "cloud-only") else 1
    local_tier = 1 - cloud_tier
    no_cloud, no_local = _placement_rules(cls, data, ctx)
    regions = data.allowed_regions
    offline = snapshot.offline
    # The hot loop (a plan is made for every request; 20 deployments must take microseconds):
    # it inlines the arithmetic of health.predictor.predict and CostModel.estimate (a test
    # checks they agree), reads each deployment's static facts from one precomputed row, and
    # records just enough to order the candidates. The Explanation's verdicts, order and summary
    # are built from these records when first read.
    rejected: list[tuple[int, str, str]] = []  # (position, deployment, reason or "" to word later)
    scored: list[tuple[Any, ...]] = []  # _Scored rows
    too_small = 0
    states = snapshot.deployments
    for position, row in enumerate(model.rows):
        spec, name, lacks, window, cloud, region, local_priced, per_s, per_in, per_out, egress, other = row
        health = states.get(name)
        if health is None or health.state is not _READY:
            reason = f"{health.state.value}: {health.detail}".rstrip(": ") if health else "no health known"
            rejected.append((position, name, reason))
            continue
        problem = None
        if lacks & needed or tokens > window:
            problem = _capability_problem(needs, spec.capabilities)
            too_small += problem is not None and problem.startswith("context window")
        elif not cloud:
            problem = no_local
        elif offline:
            problem = f"offline: {snapshot.offline_reason}"
        elif no_cloud is not None or (regions is not None and region not in regions):
            problem = ""  # placement, governance or residency: worded when the verdicts are built
        if problem is not None:
            rejected.append((position, name, problem))
            continue
        ttft_p50_s, ttft_p95_s, tokens_per_s, prefill_per_s, slots, in_flight, service_s, _, _ = (
            health.perf or spec.prior
        )
        wait = 0.0
        if slots is not None and in_flight >= slots:
            wait = (in_flight - slots + 1) * service_s / slots
        prefill = prompt / prefill_per_s
        decode = output / tokens_per_s
        ttft_p95 = wait + ttft_p95_s + prefill
        p95 = ttft_p95 + decode * DECODE_TAIL
        expected = wait + ttft_p50_s + prefill + decode
        if local_priced:
            cost = expected * per_s
        else:
            cost = prompt * per_in + output * per_out + n_bytes * egress.get(origin, other)
        if ceiling is not None and cost > ceiling:
            rejected.append(
                (position, name, f"estimated ${cost:.6f} exceeds the ${ceiling:.6f} cost ceiling")
            )
            continue
        if p95 <= p95_budget_s and ttft_p95 <= ttft_budget_s:
            tier = cloud_tier if cloud else local_tier
            scored.append((tier, cost, p95, position, spec, wait, ttft_p95, expected, p95, cost, True))
        else:
            scored.append((2, p95, cost, position, spec, wait, ttft_p95, expected, p95, cost, False))
    order = sorted(scored)  # by rank, which is unique (it ends with the position)
    went_offline = offline and any(reason.startswith("offline:") for _, _, reason in rejected)
    explanation = Explanation(
        model=model.name,
        workload_class=ctx.workload_class,
        placement=cls.placement,
        budget=budget,
        data=data,
        verdicts=lambda: _verdicts(policy, cls, rejected, scored, data, ctx),
        order=lambda: _names(order),
        summary=lambda: _summary(order, budget, cls, went_offline),
    )
    if not order:
        _raise_no_candidate(model.name, explanation.verdicts, too_small)
    hedge = None
    if cls.hedge and len(order) > 1:
        head = order[0]
        hedge = _hedge(head[6], head[8], states.get(head[4].name))
    candidates = Candidates(order, budget, data.redact)
    return RoutePlan(model.name, ctx.workload_class, cls.priority, candidates, explanation, hedge)


def _hedge(ttft_p95_s: float, p95_s: float, health: DeploymentHealth | None) -> HedgeSpec:
    """Hedge at the head's predicted p95 (first token, answer), with the tracked first-token p95
    (which attempts cut short by earlier hedges still inform) in place of the sketch's when there
    is one."""
    perf = health.perf if health is not None else None
    shift = 0.0
    if perf is not None and perf.hedge_ttft_s is not None:
        shift = perf.hedge_ttft_s - perf.ttft_p95_s
    return HedgeSpec(max(0.0, ttft_p95_s + shift), max(0.0, p95_s + shift))


def _verdicts(
    policy: Policy,
    cls: WorkloadClass,
    rejected: Sequence[tuple[int, str, str]],
    scored: Sequence[tuple[Any, ...]],
    data: DataDecision,
    ctx: RequestContext,
) -> tuple[Verdict, ...]:
    """Every candidate's verdict, in the model's configured order."""
    entries: list[tuple[int, Verdict]] = []
    no_cloud, no_local = _placement_rules(cls, data, ctx)
    for position, name, reason in rejected:
        caps = policy.deployments[name].capabilities
        reason = reason or _placement_problem(caps, no_cloud, no_local, data.allowed_regions) or "placement"
        entries.append((position, Verdict(name, caps.placement, caps.region, False, reason)))
    for row in scored:
        s = _Scored._make(row)
        caps = s.spec.capabilities
        redact = data.redact and caps.placement == "cloud"
        verdict = Verdict.scored(
            s.spec.name,
            caps.placement,
            caps.region,
            (s.queue_wait_s, s.ttft_p95_s, s.expected_s, s.p95_s),
            (s.cost_usd, s.spec.cost.priced),
            s.meets,
            redact,
        )
        entries.append((s.position, verdict))
    return tuple(v for _, v in sorted(entries, key=lambda e: e[0]))


def plan_embeddings(
    request: EmbeddingRequest,
    ctx: RequestContext,
    profile: DataProfile,
    snapshot: HealthSnapshot,
    policy: Policy,
) -> RoutePlan:
    """Candidates for an embeddings request: capability, health and governance (no redaction:
    redacted text would embed to a different vector, so sensitive inputs stay local)."""
    model = policy.resolve(request.model)
    cls = policy.classes[ctx.workload_class]
    data = decide(profile, ctx, cls, policy.governance)
    if data.redact:
        data = DataDecision(
            True,
            False,
            False,
            f"{data.rule}; embeddings are not redacted: keep local",
            data.allowed_regions,
            data.kinds,
        )
    no_cloud, no_local = _placement_rules(cls, data, ctx)
    verdicts: list[Verdict] = []
    candidates: list[Candidate] = []
    for name in model.deployments:
        spec = policy.deployments[name]
        caps = spec.capabilities
        health = snapshot.of(name)
        problem = None
        if not caps.embeddings:
            problem = "does not serve embeddings"
        elif not health.routable:
            problem = f"{health.state.value}: {health.detail}".rstrip(": ")
        elif caps.placement == "cloud" and snapshot.offline:
            problem = f"offline: {snapshot.offline_reason}"
        else:
            problem = _placement_problem(caps, no_cloud, no_local, data.allowed_regions)
        if problem is not None:
            verdicts.append(Verdict(name, caps.placement, caps.region, False, problem))
            continue
        verdicts.append(Verdict(name, caps.placement, caps.region, True, "capable, ready and allowed"))
        candidates.append(Candidate(name, caps.placement, spec.timeouts))
    budget = budget_of(cls, ctx)
    explanation = Explanation(
        model=model.name,
        workload_class=ctx.workload_class,
        placement=cls.placement,
        budget=budget,
        data=data,
        verdicts=tuple(verdicts),
        order=tuple(c.deployment for c in candidates),
        summary=f"{len(candidates)} embedding deployment(s) eligible, in configured order",
    )
    if not candidates:
        if not any(policy.deployments[n].capabilities.embeddings for n in model.deployments):
            raise UnsupportedFeature(f"model {model.name!r} does not serve embeddings", param="model")
        _raise_no_candidate(model.name, verdicts, 0)
    return RoutePlan(model.name, ctx.workload_class, cls.priority, tuple(candidates), explanation)


def _raise_no_candidate(model: str, verdicts: Sequence[Verdict], too_small: int) -> None:
    detail = "; ".join(f"{v.deployment}: {v.reason}" for v in verdicts)
    if too_small and too_small == len(verdicts):
        raise ContextLengthExceeded(
            f"the request does not fit the context window of any deployment of {model!r} ({detail})",
            param="messages",
        )
    capability = [v for v in verdicts if v.reason.startswith("does not")]
    if capability and len(capability) == len(verdicts):
        raise UnsupportedFeature(f"no deployment of {model!r} can serve this request ({detail})")
    raise NoRouteAvailable(f"no deployment of {model!r} is acceptable ({detail})")

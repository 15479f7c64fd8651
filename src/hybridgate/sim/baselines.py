"""Routers: the policy (the real planner) and the baselines it is compared with.

A router turns a request shape into a :class:`Route` (candidates in order, optionally a hedge);
the engine then runs every route alike, with the real breakers, retry policy and budget. So the
baselines differ from the policy only in *where* they send requests, which is what the comparison
is about.

=================  ==========================================================================
policy             ``plan_chat`` with the live health snapshot: the server's own decision
local-only         local deployments, least busy first
cloud-only         cloud deployments, cheapest estimate first (governance not consulted)
static-split       a fixed share ``--split`` to local, the rest to the cloud, round robin
lowest-latency     LiteLLM's ``latency-based-routing``: the deployment with the lowest mean of
                   its last 10 observed latencies per output token (unknown: 0, tried first)
oracle             knows each request's realised latency on every deployment (the draws, the
                   queue ahead, the faults) and picks the fastest one governance allows: a
                   greedy clairvoyant bound, not a global optimum over all schedules
=================  ==========================================================================

Only the policy and the oracle apply the data rules; the others show what ignoring them costs
(governance violations are counted for every route alike).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

from hybridgate.errors import NoRouteAvailable, SensitiveDataRefused
from hybridgate.health.live import LiveHealth
from hybridgate.policy.planner import Candidate, HedgeSpec, plan_chat
from hybridgate.policy.table import Policy
from hybridgate.sim.faults import FaultIndex
from hybridgate.sim.models import BackendModel, Timing
from hybridgate.sim.shapes import Shape

BASELINES = ("local-only", "cloud-only", "static-split", "lowest-latency", "oracle")
ROUTERS = ("policy", *BASELINES)


class Route(NamedTuple):
    candidates: Sequence[Candidate]
    hedge: HedgeSpec | None = None
    committed: Mapping[str, Timing] | None = None  # draws the oracle already made


class Router(Protocol):
    name: str

    def route(self, shape: Shape, output_tokens: int, now: float) -> Route:
        """Where to send it; raises a HybridgateError to refuse it."""
        ...

    def observe(self, deployment: str, seconds: float, output_tokens: int) -> None:
        """A successful attempt (only latency-based routers care)."""
        ...


class _Context(NamedTuple):
    """What routers may look at: the policy, the modelled deployments, live health, the faults."""

    policy: Policy
    deployments: Sequence[str]  # the requested model's modelled deployments, configured order
    health: LiveHealth
    backends: Mapping[str, BackendModel]
    faults: FaultIndex
    rng: random.Random


class PolicyRouter:
    name = "policy"

    def __init__(self, env: _Context) -> None:
        self._policy = env.policy
        self._health = env.health

    def route(self, shape: Shape, output_tokens: int, now: float) -> Route:
        plan = plan_chat(shape.request, shape.ctx, shape.profile, self._health.snapshot(), self._policy)
        return Route(plan.candidates, plan.hedge)

    def observe(self, deployment: str, seconds: float, output_tokens: int) -> None:
        pass


class _Fixed:
    """Baselines: candidates from the configured deployments, no hedging."""

    name = ""

    def __init__(self, env: _Context) -> None:
        self.env = env
        specs = env.policy.deployments
        self.candidates = {
            n: Candidate(n, specs[n].capabilities.placement, specs[n].timeouts) for n in env.deployments
        }
        self.local = [n for n in env.deployments if specs[n].capabilities.placement == "local"]
        self.cloud = [n for n in env.deployments if specs[n].capabilities.placement == "cloud"]

    def _route(self, names: Sequence[str]) -> Route:
        if not names:
            raise NoRouteAvailable(f"{self.name}: no deployment of this placement")
        return Route([self.candidates[n] for n in names])

    def observe(self, deployment: str, seconds: float, output_tokens: int) -> None:
        pass


class LocalOnly(_Fixed):
    name = "local-only"

    def route(self, shape: Shape, output_tokens: int, now: float) -> Route:
        stats = self.env.health.stats
        return self._route(sorted(self.local, key=lambda n: stats[n].in_flight))


class CloudOnly(_Fixed):
    name = "cloud-only"

    def __init__(self, env: _Context) -> None:
        super().__init__(env)
        specs = env.policy.deployments
        self.cloud.sort(key=lambda n: specs[n].cost.input_per_token + specs[n].cost.output_per_token)

    def route(self, shape: Shape, output_tokens: int, now: float) -> Route:
        return self._route(self.cloud)


class StaticSplit(_Fixed):
    name = "static-split"

    def __init__(self, env: _Context, local_share: float) -> None:
        super().__init__(env)
        self.share = local_share
        self._turn = 0

    def route(self, shape: Shape, output_tokens: int, now: float) -> Route:
        first, second = (
            (self.local, self.cloud) if self.env.rng.random() < self.share else (self.cloud, self.local)
        )
        if not first:
            first, second = second, first
        self._turn += 1
        k = self._turn % len(first)
        return self._route([*first[k:], *first[:k], *second])


class LowestLatency(_Fixed):
    name = "lowest-latency"

    def __init__(self, env: _Context) -> None:
        super().__init__(env)
        self._seen: dict[str, deque[float]] = {n: deque(maxlen=10) for n in env.deployments}

    def _mean(self, name: str) -> float:
        seen = self._seen[name]
        return sum(seen) / len(seen) if seen else 0.0

    def route(self, shape: Shape, output_tokens: int, now: float) -> Route:
        return self._route(sorted(self.env.deployments, key=self._mean))

    def observe(self, deployment: str, seconds: float, output_tokens: int) -> None:
        self._seen[deployment].append(seconds / max(1, output_tokens))


class Oracle(_Fixed):
    name = "oracle"

    def route(self, shape: Shape, output_tokens: int, now: float) -> Route:
        env, decision = self.env, shape.decision
        redact = decision is not None and decision.redact
        timings: dict[str, Timing] = {}
        realised: list[tuple[float, int, str]] = []
        for position, name in enumerate(env.deployments):
            spec = env.policy.deployments[name]
            if spec.capabilities.placement == "cloud" and shape.violates(spec.capabilities.region, redact):
                continue
            effect = env.faults.effect(name, now)
            backend = env.backends[name]
            timing = timings[name] = backend.draw(
                env.rng, shape.prompt_tokens, output_tokens, effect.slow_factor
            )
            failing = effect.fail is not None or timing.error or effect.rate_limit_probability >= 1.0
            at = backend.start_after(now) + backend.cold_start(now) + timing.total_s
            realised.append((float("inf") if failing else at, position, name))
        if not realised:
            raise SensitiveDataRefused("oracle: governance allows no deployment")
        order = [name for _, _, name in sorted(realised)]
        specs = env.policy.deployments
        candidates = [
            Candidate(
                n, specs[n].capabilities.placement, specs[n].timeouts, redact=redact and n in self.cloud
            )
            for n in order
        ]
        return Route(candidates, None, timings)


def make_router(name: str, env: _Context, local_share: float = 0.5) -> Router:
    factories: dict[str, Callable[[], Router]] = {
        "policy": lambda: PolicyRouter(env),
        "local-only": lambda: LocalOnly(env),
        "cloud-only": lambda: CloudOnly(env),
        "static-split": lambda: StaticSplit(env, local_share),
        "lowest-latency": lambda: LowestLatency(env),
        "oracle": lambda: Oracle(env),
    }
    if name not in factories:
        raise ValueError(f"unknown router {name!r} (known: {', '.join(ROUTERS)})")
    return factories[name]()


RouterEnv = _Context

"""The requests a simulated workload generates, written out: to send the same traffic for real.

:func:`planned_requests` draws a scenario's arrivals and request shapes with the engine's own
random streams (the :class:`~hybridgate.sim.engine.Engine`'s ``arrivals``, ``pools`` and
``pick_rng``, seeded from ``--seed`` as every run is) in the engine's order: arrivals merged by
time, each one's shape and then its output length drawn from the shared request stream. So the
list is exactly what ``hybridgate simulate`` with the same files and seed admits (a test holds
the two to it), and a real client can send it at those times. Classes only: a replayed trace is
already a list of requests.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from hybridgate.config.governance import Sensitivity
from hybridgate.errors import ConfigError
from hybridgate.sim.engine import Engine, Scenario
from hybridgate.sim.shapes import Shape


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request of the workload: when it arrives and what it is."""

    t: float  # seconds from the start
    workload_class: str
    prompt_tokens: int
    output_tokens: int
    stream: bool
    sensitivity: Sensitivity
    region: str
    tenant: str
    sensitive_kinds: frozenset[str]

    @classmethod
    def of(cls, t: float, shape: Shape, output_tokens: int) -> PlannedRequest:
        """The request the engine admits at ``t`` with this shape and output length."""
        ctx = shape.ctx
        return cls(
            t,
            ctx.workload_class,
            shape.prompt_tokens,
            output_tokens,
            shape.stream,
            ctx.sensitivity,
            ctx.region,
            ctx.tenant,
            shape.profile.kinds,
        )


def planned_requests(scenario: Scenario) -> list[PlannedRequest]:
    """Every request the scenario's classes generate within its duration (or request count)."""
    if scenario.trace:
        raise ConfigError(
            [("trace", "a replayed trace is not planned here: it is a list of requests already")]
        )
    engine = Engine(scenario, "local-only")  # the router is never asked: only its draws are used
    heap = [(arrivals.next(), i) for i, arrivals in enumerate(engine.arrivals)]
    heapq.heapify(heap)
    limit = scenario.duration_s or scenario.workload.duration_s or 60.0
    out: list[PlannedRequest] = []
    while heap:
        t, i = heapq.heappop(heap)
        if scenario.requests is not None and len(out) >= scenario.requests:
            break
        if scenario.requests is None and t >= limit:
            break
        heapq.heappush(heap, (engine.arrivals[i].next(), i))
        pool = engine.pools[i]
        shape = pool.pick(engine.pick_rng)
        out.append(PlannedRequest.of(t, shape, max(1, round(pool.output_tokens(engine.pick_rng)))))
    return out

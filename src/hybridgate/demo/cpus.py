"""CPU placement: the local runtime gets a core of its own; everything else shares the rest.

On a small machine every process of the demo competes for the same cores, and some of them are
not part of the edge box being demonstrated: the sandbox clouds stand in for work done in a data
centre, and the agents' client (the ``openai`` SDK, parsing every streamed chunk) for the robots.
Left to the scheduler, their work slows the llama.cpp runtime down — more in the hybrid arm,
whose cloud streams keep them busy, than in local-only — which would charge the stand-ins' CPU to
hybrid routing. So, where there are at least two CPUs, the demo pins itself (and so every child
it starts: the gateways, their sandboxes) to all CPUs but one, and each local runtime worker,
every thread of it, to that one. The same in every arm. Other work on the machine is not
controlled: the report records the load average.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CpuPlan:
    local: frozenset[int]  # the local runtime's worker threads
    rest: frozenset[int]  # the demo itself, the gateways, the sandboxes

    def to_dict(self) -> dict[str, list[int]]:
        return {"local_runtime": sorted(self.local), "everything_else": sorted(self.rest)}


def plan_cpus() -> CpuPlan | None:
    """The split, or None where the platform cannot pin or there are fewer than two CPUs."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None
    return CpuPlan(local=frozenset(available[-1:]), rest=frozenset(available[:-1]))


def pin_self(plan: CpuPlan) -> None:
    """This process (and every child started from now on) to ``plan.rest``."""
    os.sched_setaffinity(0, plan.rest)


def pin_process(pid: int, cpus: frozenset[int]) -> int:
    """Every thread of ``pid`` to ``cpus``; returns how many threads were pinned (0: it is gone)."""
    pinned = 0
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)
            pinned += 1
    return pinned

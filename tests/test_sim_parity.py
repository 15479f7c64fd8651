"""The simulator's attempt loop makes the executor's decisions: on the same failure of the first
candidate, the real :class:`~hybridgate.execution.executor.Executor` (scripted backends, manual
clock) and the simulator (the same failure as a fault) attempt the same deployments as often."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from hybridgate.clock import ManualClock
from hybridgate.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from hybridgate.execution.executor import Payload
from hybridgate.sim.engine import Engine
from tests.support.sim import scenario
from tests.test_executor import REQUEST, Scripted, drive, executor, plan

PLANNING = {
    "class": "planning",
    "rate_per_s": 1.0,
    "prompt_tokens": {"median": 200, "min": 200, "max": 200},
    "output_tokens": {"median": 50, "min": 50, "max": 50},
    "regions": {"us": 1.0},
}
WINDOW = {"deployments": ["cloud-us"], "start_s": 0, "end_s": 10_000}
CASES: dict[str, tuple[dict[str, object], Callable[[], UpstreamError]]] = {
    "server_error": ({"kind": "outage", **WINDOW}, lambda: UpstreamServerError("503", deployment="cloud-us")),
    "connection": (
        {"kind": "partition", **WINDOW},
        lambda: UpstreamConnectionError("refused", deployment="cloud-us"),
    ),
    "rate_limited": (
        {"kind": "rate_limit", "probability": 1.0, "retry_after_s": 1.0, **WINDOW},
        lambda: UpstreamRateLimited("429", deployment="cloud-us", retry_after=1.0),
    ),
    "timeout": (
        {"kind": "latency_spike", "factor": 10_000, **WINDOW},
        lambda: UpstreamTimeout("slow", deployment="cloud-us"),
    ),
}


async def _executor_attempts(error: UpstreamError) -> Counter[str]:
    clock = ManualClock()
    first = Scripted("cloud-us", [error for _ in range(5)])
    second = Scripted("cloud-eu")
    task = asyncio.ensure_future(
        executor(clock, first, second).complete(plan(["cloud-us", "cloud-eu"]), Payload(REQUEST))
    )
    await drive(clock, task)
    assert task.result().deployment == "cloud-eu"
    return Counter({"cloud-us": len(first.calls), "cloud-eu": len(second.calls)})


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_same_attempts_as_the_executor(kind: str, tmp_path: Path) -> None:
    fault, make_error = CASES[kind]
    sc = scenario(tmp_path, [PLANNING], faults=[fault], requests=1)
    result = Engine(sc, "policy").run()
    assert result.classes["planning"].by_placement["cloud"] == 1
    simulated = Counter({k: v for k, v in result.attempts.items() if v})
    assert simulated == await _executor_attempts(make_error())
    assert result.errors[kind] == simulated["cloud-us"]

"""``planned_requests``: the requests a simulated workload generates, exactly as the engine admits them.

The real arm of bench/sim_vs_real.py sends this list to a real gateway, so it must be the
simulator's own traffic: the same times, classes, sizes and data, request for request.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hybridgate.errors import ConfigError
from hybridgate.sim.engine import Engine, SimRequest
from hybridgate.sim.schedule import PlannedRequest, planned_requests
from hybridgate.sim.trace import TraceRecord
from tests.support.sim import actuation, scenario


class _Recording(Engine):
    """The engine, noting every request it admits (its own draws, nothing replaced)."""

    admitted: list[PlannedRequest]

    def _admit(self, req: SimRequest) -> None:
        self.admitted.append(PlannedRequest.of(self.clock.now, req.shape, req.output))
        super()._admit(req)


def _classes() -> list[dict[str, object]]:
    return [
        actuation(3.0, arrival={"kind": "bursts", "every_s": 10, "length_s": 2, "factor": 5}),
        {
            "class": "interactive",
            "rate_per_s": 2.0,
            "stream": True,
            "sensitive_share": 0.3,
            "declared": {"public": 0.8, "confidential": 0.2},
            "regions": {"us": 0.5, "eu": 0.5},
        },
    ]


@pytest.mark.parametrize("seed", [1, 7])
def test_the_same_requests_as_the_engine_admits(tmp_path: Path, seed: int) -> None:
    sc = scenario(tmp_path, _classes(), seed=seed, duration_s=40.0)
    engine = _Recording(sc, "policy")
    engine.admitted = []
    engine.run()
    planned = planned_requests(sc)
    assert len(planned) > 150
    assert planned == engine.admitted
    # the mixes are really drawn (the comparison above is not of constant fields)
    assert {p.workload_class for p in planned} == {"actuation", "interactive"}
    assert {p.region for p in planned if p.workload_class == "interactive"} == {"us", "eu"}
    assert any(p.sensitive_kinds for p in planned)
    assert len({p.prompt_tokens for p in planned}) > 10


def test_a_request_count_limit_is_the_engines(tmp_path: Path) -> None:
    sc = scenario(tmp_path, _classes(), requests=123)
    engine = _Recording(sc, "local-only")
    engine.admitted = []
    engine.run()
    assert planned_requests(sc) == engine.admitted
    assert len(engine.admitted) == 123


def test_seeded(tmp_path: Path) -> None:
    a = planned_requests(scenario(tmp_path, _classes(), seed=3, duration_s=20.0))
    b = planned_requests(scenario(tmp_path, _classes(), seed=3, duration_s=20.0))
    c = planned_requests(scenario(tmp_path, _classes(), seed=4, duration_s=20.0))
    assert a == b
    assert a != c
    assert [p.t for p in a] == sorted(p.t for p in a)
    assert all(p.t < 20.0 for p in a)


def test_a_trace_is_not_planned(tmp_path: Path) -> None:
    sc = scenario(tmp_path, _classes(), duration_s=5.0)
    record = TraceRecord(0.0, "actuation", "default", "us", "public", False, 100, 10, frozenset())
    with_trace = replace(sc, trace=(record,))
    with pytest.raises(ConfigError, match="trace"):
        planned_requests(with_trace)

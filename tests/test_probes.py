"""The prober's scheduling, on a ManualClock, against test doubles of the Backend protocol.

The doubles implement :class:`~hybridgate.backends.base.Backend` (checked with ``isinstance``);
their ``probe()`` answers from a script, or hangs until released. Time moves only when a test
advances the clock; ``settle()`` just lets the event loop run what is ready (no waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable

import pytest

from hybridgate.backends.base import Backend, Capabilities, ProbeResult
from hybridgate.clock import ManualClock
from hybridgate.config import load_config_text
from hybridgate.config.resilience import BreakerConfig
from hybridgate.errors import UnsupportedFeature
from hybridgate.health.breaker import BreakerState
from hybridgate.health.live import LiveHealth
from hybridgate.health.predictor import prior
from hybridgate.health.probes import Prober, ProbeSettings, probe_settings
from hybridgate.health.snapshot import DeploymentState
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    Placement,
    StreamEvent,
    Timeouts,
)


class ScriptedBackend:
    """A deployment whose probe answers from ``script`` (then succeeds), or hangs while ``hold``."""

    def __init__(self, name: str, placement: Placement, script: Iterable[ProbeResult] = ()) -> None:
        self.name = name
        self.capabilities = Capabilities(placement=placement, region="local", context_window=4096)
        self.script = deque(script)
        self.hold = False
        self.release = asyncio.Event()
        self.calls = 0
        self.cancelled = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def complete(self, request: InferenceRequest, timeouts: Timeouts) -> Completion:
        raise UnsupportedFeature("a probe-only test double")

    def stream(self, request: InferenceRequest, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        raise UnsupportedFeature("a probe-only test double")

    async def embed(self, request: EmbeddingRequest, timeouts: Timeouts) -> EmbeddingResult:
        raise UnsupportedFeature("a probe-only test double")

    async def probe(self) -> ProbeResult:
        self.calls += 1
        if self.hold:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return self.script.popleft() if self.script else ProbeResult(ok=True, latency_s=0.01, detail="ok")


FAIL = ProbeResult(ok=False, latency_s=0.01, detail="connection")
BREAKER = BreakerConfig(consecutive_failures=2, open_s=5, max_open_s=60)


def setup(
    *backends: ScriptedBackend, settings: dict[str, ProbeSettings] | None = None
) -> tuple[ManualClock, LiveHealth, Prober]:
    clock = ManualClock()
    health = LiveHealth(
        {b.name: prior(b.capabilities.placement) for b in backends},
        clock=clock,
        placements={b.name: b.capabilities.placement for b in backends},
        breakers={b.name: BREAKER for b in backends},
    )
    for b in backends:
        assert isinstance(b, Backend)
        health.set_state(b.name, DeploymentState.READY)
    defaults = {
        b.name: ProbeSettings(enabled=b.capabilities.placement == "local", interval_s=10, timeout_s=3)
        for b in backends
    }
    prober = Prober({b.name: b for b in backends}, health, {**defaults, **(settings or {})}, clock)
    return clock, health, prober


async def settle(until: Callable[[], bool] = lambda: False) -> None:
    """Let the event loop run everything that is ready (and stop early once ``until`` holds)."""
    for _ in range(50):
        if until():
            return
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def running(prober: Prober) -> AsyncIterator[None]:
    task = asyncio.ensure_future(prober.run())
    await settle()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def advance(clock: ManualClock, seconds: float) -> None:
    clock.advance(seconds)
    await settle()


def fail_attempts(health: LiveHealth, name: str, n: int, kind: str = "server_error") -> None:
    for _ in range(n):
        assert health.admit(name)
        health.started(name)
        health.failed(name, kind)
        health.finished(name)


async def test_enabled_deployments_are_probed_every_interval() -> None:
    local, cloud = ScriptedBackend("local", "local"), ScriptedBackend("cloud", "cloud")
    clock, health, prober = setup(local, cloud)
    async with running(prober):
        assert (local.calls, cloud.calls) == (1, 0), "local at once; cloud probes are off by default"
        record = health.snapshot().of("local").last_probe
        assert record is not None
        assert (record.ok, record.detail, record.at) == (True, "ok", clock.wall())
        await advance(clock, 9.9)
        assert local.calls == 1
        await advance(clock, 0.1)
        assert local.calls == 2
        await advance(clock, 30)
        assert local.calls == 3, "one probe per wake-up, not a burst to catch up"
        await advance(clock, 10)
        assert (local.calls, cloud.calls) == (4, 0)


async def test_a_busy_deployment_is_not_probed() -> None:
    local = ScriptedBackend("local", "local")
    clock, health, prober = setup(local)
    async with running(prober):
        assert local.calls == 1
        health.started("local")  # live traffic: the better evidence
        await advance(clock, 10)
        assert local.calls == 1
        health.finished("local")
        await advance(clock, 10)
        assert local.calls == 2


async def test_a_half_open_deployment_is_probed_at_once_and_success_closes_it() -> None:
    cloud = ScriptedBackend("cloud", "cloud")
    clock, health, prober = setup(cloud)
    async with running(prober):
        fail_attempts(health, "cloud", 2)  # opens; the prober hears of it and waits for half-open
        assert health.snapshot().of("cloud").breaker is BreakerState.OPEN
        cloud.hold = True
        await advance(clock, 4.9)
        assert cloud.calls == 0
        await advance(clock, 0.1)
        assert cloud.calls == 1, "half-open: probed at once, although cloud probes are off"
        assert not health.admit("cloud"), "the probe holds the one trial"
        cloud.release.set()
        await settle(lambda: health.breakers["cloud"].state is BreakerState.CLOSED)
        assert health.snapshot().of("cloud").breaker is BreakerState.CLOSED
        assert health.admit("cloud")
        await advance(clock, 60)
        assert cloud.calls == 1, "closed again: no more cloud probes"


async def test_failed_trial_probes_back_off_until_one_succeeds() -> None:
    local = ScriptedBackend("local", "local", [ProbeResult(True, 0.01)] + [FAIL] * 3)
    clock, health, prober = setup(local)
    async with running(prober):
        assert local.calls == 1
        await advance(clock, 10)
        await advance(clock, 10)  # two failed periodic probes in a row: open for 5 s
        assert local.calls == 3
        assert health.snapshot().of("local").state is DeploymentState.CIRCUIT_OPEN
        probed_at = []
        for wait in (5, 10):
            before = local.calls
            await advance(clock, wait - 0.01)
            assert local.calls == before
            await advance(clock, 0.01)
            assert local.calls == before + 1
            probed_at.append(wait)
        assert health.breakers["local"].state is BreakerState.CLOSED, "the third trial succeeded"
        assert probed_at == [5, 10]
        entry = health.snapshot().of("local")
        assert entry.last_probe is not None
        assert entry.last_probe.ok


async def test_a_probe_that_hangs_fails_at_its_timeout() -> None:
    local = ScriptedBackend("local", "local")
    local.hold = True
    clock, health, prober = setup(local)
    async with running(prober):
        assert local.calls == 1
        await advance(clock, 2.9)
        assert health.snapshot().of("local").last_probe is None
        await advance(clock, 0.1)
        record = health.snapshot().of("local").last_probe
        assert record is not None
        assert (record.ok, record.latency_s, record.detail) == (False, 3, "probe timed out after 3s")
        assert local.cancelled == 1, "the abandoned probe was cancelled"
        assert health.breakers["local"].describe().consecutive_failures == 1


async def test_while_offline_cloud_deployments_are_probed_until_one_answers() -> None:
    a = ScriptedBackend("cloud-a", "cloud", [FAIL])
    b = ScriptedBackend("cloud-b", "cloud")
    b.hold = True
    clock, health, prober = setup(a, b)
    async with running(prober):
        for name in ("cloud-a", "cloud-b", "cloud-a"):  # three connection failures: the uplink is down
            health.started(name)
            health.failed(name, "connection")
            health.finished(name)
        await settle()
        assert health.snapshot().offline
        assert (a.calls, b.calls) == (0, 1), "recovery probe at once (cloud-a's breaker is open: later)"
        b.release.set()
        await settle()
        assert not health.snapshot().offline, "cloud-b answered: the uplink is back"
        await advance(clock, 5)
        assert (a.calls, b.calls) == (1, 1), "cloud-a's half-open trial; no more periodic cloud probes"
        assert health.breakers["cloud-a"].state is BreakerState.OPEN


async def test_stopping_the_prober_hands_back_the_trial() -> None:
    cloud = ScriptedBackend("cloud", "cloud")
    clock, health, prober = setup(cloud)
    async with running(prober):
        fail_attempts(health, "cloud", 2)
        cloud.hold = True
        await advance(clock, 5)
        assert cloud.calls == 1
        assert not health.admit("cloud")
    assert cloud.cancelled == 1
    assert health.admit("cloud"), "the trial is free for a request"


async def test_deployments_that_are_not_ready_are_not_probed() -> None:
    local = ScriptedBackend("local", "local")
    clock, health, prober = setup(local)
    health.set_state("local", DeploymentState.UNCONFIGURED, "no model")
    async with running(prober):
        await advance(clock, 30)
        assert local.calls == 0


async def test_probe_returns_the_backends_answer() -> None:
    local = ScriptedBackend("local", "local", [FAIL])
    _, _, prober = setup(local)
    assert await prober.probe("local") == FAIL


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", {"gpt": ProbeSettings(False, 10.0, 10.0), "local": ProbeSettings(True, 10.0, 10.0)}),
        (
            "    probe: {enabled: true, interval_s: 2}\n",
            {"gpt": ProbeSettings(True, 2.0, 2.0), "local": ProbeSettings(True, 10.0, 10.0)},
        ),
    ],
)
def test_probe_settings_default_by_placement(extra: str, expected: dict[str, ProbeSettings]) -> None:
    text = f"""
version: 1
deployments:
  gpt:
    type: openai
    model: gpt-4o-mini
{extra}  local:
    type: llamacpp
    model_path: models/tiny.gguf
models:
  chat:
    deployments: [local, gpt]
"""
    assert probe_settings(load_config_text(text, env={}).config) == expected

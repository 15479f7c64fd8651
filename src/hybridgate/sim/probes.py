"""Active probes in simulated time: the server's :class:`~hybridgate.health.probes.Prober` rules
on the engine's clock.

The real prober is an asyncio task; here its decision (``Prober._start_due``) runs on a tick of
:data:`TICK_S` simulated seconds: a half-open breaker's trial is taken by a probe at once; a
deployment whose probes are enabled (``deployments.<name>.probe``: local by default) is probed
every ``interval_s`` when idle; while offline, every cloud deployment is probed so the way back
is noticed. The outcome goes to the real ``LiveHealth.probed``. A probe fails while a fault that
fails attempts (outage, partition, node down) is active, or when a latency spike pushes it past
its timeout; a cloud probe (a model list) takes ``CLOUD_PROBE_S``, a local one a first token
(and, being an inference, keeps the model loaded).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from hybridgate.backends.base import ProbeResult
from hybridgate.config.schema import GatewayConfig
from hybridgate.health.breaker import BreakerState
from hybridgate.health.live import LiveHealth
from hybridgate.health.probes import ProbeSettings, probe_settings
from hybridgate.health.snapshot import DeploymentState
from hybridgate.sim.faults import FaultIndex
from hybridgate.sim.models import BackendModel

TICK_S = 0.25
CLOUD_PROBE_S = 0.1


class SimProber:
    def __init__(
        self,
        config: GatewayConfig,
        health: LiveHealth,
        backends: Mapping[str, BackendModel],
        faults: FaultIndex,
        rng: random.Random,
        schedule: Callable[[float, tuple[str, ProbeResult]], None],
    ) -> None:
        self.health = health
        self.backends = backends
        self.faults = faults
        self.rng = rng
        self.schedule = schedule  # (when, (deployment, result)) -> a probe-done event
        self.settings = probe_settings(config)
        self._next: dict[str, float] = {}
        self._running: set[str] = set()
        self.sent = 0

    def _settings(self, name: str) -> ProbeSettings:
        return self.settings.get(name) or ProbeSettings(enabled=False)

    def _periodic(self, name: str) -> bool:
        return self._settings(name).enabled or (self.health.offline and self.health.is_cloud(name))

    def start_due(self, now: float) -> None:
        """``Prober._start_due``, at ``now``."""
        health = self.health
        for name in self.backends:
            if name in self._running or health.state(name)[0] is not DeploymentState.READY:
                continue
            breaker = health.breakers[name]
            if breaker.trial_available:
                if health.admit(name):
                    self._launch(name, now)
                continue
            if breaker.state is not BreakerState.CLOSED or not self._periodic(name):
                continue
            if now < self._next.get(name, now):
                continue
            if health.stats[name].in_flight == 0:
                self._launch(name, now)
            else:
                self._next[name] = now + self._settings(name).interval_s

    def _launch(self, name: str, now: float) -> None:
        settings = self._settings(name)
        self._next[name] = now + settings.interval_s
        self._running.add(name)
        self.sent += 1
        effect = self.faults.effect(name, now)
        backend = self.backends[name]
        if backend.slots is None:
            latency = CLOUD_PROBE_S * effect.slow_factor
        else:
            latency = backend.draw(self.rng, 1, 1, effect.slow_factor).ttft_s
            backend.last_active = now  # a one-token inference: it keeps the model loaded
        if effect.fail is not None:
            result = ProbeResult(False, effect.fail_after_s, f"{effect.fail.value} (simulated fault)")
            latency = effect.fail_after_s
        elif latency > settings.timeout_s:
            result = ProbeResult(False, settings.timeout_s, f"probe timed out after {settings.timeout_s:g}s")
            latency = settings.timeout_s
        else:
            result = ProbeResult(True, latency)
        self.schedule(now + latency, (name, result))

    def done(self, name: str, result: ProbeResult) -> None:
        self._running.discard(name)
        self.health.probed(name, result)

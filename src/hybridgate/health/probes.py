"""Active health probes: ask a deployment whether it works before a request has to find out.

:class:`Prober` runs as one task (``run()`` until cancelled) and calls each backend's
``probe()`` (the :class:`~hybridgate.backends.base.Backend` protocol; it never raises):

- **every** ``interval_s`` for deployments whose probe is enabled (``deployments.<name>.probe``;
  by default on for local placements, off for cloud ones) — but not while the deployment is
  busy with live traffic, which is better evidence and which a probe would only queue behind;
- **at once** for any deployment whose breaker turned half-open (whatever its probe setting):
  the probe takes the breaker's single trial, and its success closes the breaker;
- and, **while offline**, every ``interval_s`` for every cloud deployment, so that the way
  back is noticed (a cloud probe is a GET of the model list: no tokens, no cost).

Each probe is bounded by ``timeout_s`` on the injected clock; its result goes to
:meth:`LiveHealth.probed <hybridgate.health.live.LiveHealth.probed>` (the breaker and the
last-probe record). What a probe costs: llama.cpp in-process, one real one-token inference
through the worker's queue; ``openai``/``anthropic``/``sandbox``, ``GET /models``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from hybridgate.backends.base import Backend, ProbeResult
from hybridgate.clock import Clock
from hybridgate.config.schema import GatewayConfig, effective_placement
from hybridgate.errors import HybridgateError
from hybridgate.health.breaker import BreakerState
from hybridgate.health.live import LiveHealth
from hybridgate.health.snapshot import DeploymentState

log = logging.getLogger("hybridgate.health")

DEFAULT_PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """One deployment's probing: periodic or not, how often, how long one probe may take."""

    enabled: bool
    interval_s: float = 10.0
    timeout_s: float = DEFAULT_PROBE_TIMEOUT_S


def probe_settings(config: GatewayConfig) -> dict[str, ProbeSettings]:
    """Every deployment's :class:`ProbeSettings` from ``deployments.<name>.probe``."""
    out: dict[str, ProbeSettings] = {}
    for name, dep in config.deployments.items():
        enabled = dep.probe.enabled
        if enabled is None:
            enabled = effective_placement(dep) == "local"
        interval = dep.probe.interval_s
        out[name] = ProbeSettings(enabled, interval, min(DEFAULT_PROBE_TIMEOUT_S, max(interval, 1.0)))
    return out


class Prober:
    """Schedules probes; see the module docstring. Deployments without settings are probed only
    when half-open (and, for cloud ones, while offline) at the default interval."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        health: LiveHealth,
        settings: Mapping[str, ProbeSettings],
        clock: Clock,
    ) -> None:
        self.backends = backends
        self.health = health
        self.settings = settings
        self._clock = clock
        self._next: dict[str, float] = {}  # when each deployment's next periodic probe is due
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self.probes_sent = 0

    def _settings(self, name: str) -> ProbeSettings:
        return self.settings.get(name) or ProbeSettings(enabled=False)

    async def run(self) -> None:
        """Probe until cancelled; in-flight probes are cancelled with it."""
        unsubscribe = self.health.on_breaker_change(self._wake.set)
        try:
            while True:
                self._wake.clear()
                self._start_due()
                await self._sleep(self._next_due())
        finally:
            unsubscribe()
            tasks = list(self._running.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _start_due(self) -> None:
        now = self._clock.monotonic()
        health = self.health
        for name in self.backends:
            if name in self._running or health.state(name)[0] is not DeploymentState.READY:
                continue
            breaker = health.breakers[name]
            if breaker.trial_available:
                if health.admit(name):  # this probe is the breaker's one trial
                    self._launch(name, trial=True)
                continue
            if breaker.state is not BreakerState.CLOSED or not self._periodic(name):
                continue
            if now < self._next.get(name, now):
                continue
            if health.stats[name].in_flight == 0:  # live traffic is the better probe
                self._launch(name, trial=False)
            else:
                self._next[name] = now + self._settings(name).interval_s

    def _periodic(self, name: str) -> bool:
        return self._settings(name).enabled or (self.health.offline and self.health.is_cloud(name))

    def _next_due(self) -> float | None:
        """When something is next due: a periodic probe, or a breaker's next change."""
        now = self._clock.monotonic()
        health = self.health
        times = [
            self._next.get(name, now)
            for name in self.backends
            if name not in self._running
            and health.state(name)[0] is DeploymentState.READY
            and health.breakers[name].state is BreakerState.CLOSED
            and self._periodic(name)
        ]
        change = health.next_breaker_change_at()
        if change is not None:
            times.append(change)
        return min(times) if times else None

    async def _sleep(self, until: float | None) -> None:
        """Until ``until`` (monotonic; None: indefinitely), or until a breaker or probe wakes us."""
        waiter: asyncio.Future[object] = asyncio.ensure_future(self._wake.wait())
        waiting = {waiter}
        if until is not None:
            waiting.add(asyncio.ensure_future(self._clock.sleep(until - self._clock.monotonic())))
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiting:
                task.cancel()

    def _launch(self, name: str, *, trial: bool) -> None:
        # Any probe, a trial too, stands for the periodic one.
        self._next[name] = self._clock.monotonic() + self._settings(name).interval_s
        self.probes_sent += 1
        task = asyncio.ensure_future(self._probe(name, trial))
        self._running[name] = task
        task.add_done_callback(lambda _: self._done(name))

    def _done(self, name: str) -> None:
        self._running.pop(name, None)
        self._wake.set()

    async def probe(self, name: str) -> ProbeResult:
        """Probe one deployment now, bounded by its timeout (a timeout is a failed probe)."""
        timeout = self._settings(name).timeout_s
        call = asyncio.ensure_future(self._call(name))
        timer = asyncio.ensure_future(self._clock.sleep(timeout))
        try:
            done, _ = await asyncio.wait({call, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not call.done():
                call.cancel()
        if call in done:
            return call.result()
        with contextlib.suppress(asyncio.CancelledError):
            await call  # let the abandoned probe unwind (its connection, its queue slot)
        return ProbeResult(ok=False, latency_s=timeout, detail=f"probe timed out after {timeout:g}s")

    async def _call(self, name: str) -> ProbeResult:
        started = self._clock.monotonic()
        try:
            return await self.backends[name].probe()
        except HybridgateError as exc:  # the protocol says probe() never raises; one that does failed
            return ProbeResult(ok=False, latency_s=self._clock.monotonic() - started, detail=exc.message)

    async def _probe(self, name: str, trial: bool) -> None:
        try:
            result = await self.probe(name)
        except asyncio.CancelledError:
            if trial:  # the prober is stopping: hand the breaker's trial back
                self.health.breakers[name].release()
            raise
        if not result.ok:
            log.info("probe of %s failed: %s", name, result.detail)
        self.health.probed(name, result)

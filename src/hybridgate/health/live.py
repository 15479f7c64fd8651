"""Live health: every deployment's measured speed, load, errors, breaker and probes, and the
immutable snapshot of it that the planner reads.

The executor reports every attempt (admit, start, success or failure, end); the prober reports
probes; the load poller reports what runtimes say of their own queues. Per deployment this
keeps windowed statistics (:class:`~hybridgate.health.stats.DeploymentStats`) and a circuit
breaker (:class:`~hybridgate.health.breaker.CircuitBreaker`); across cloud deployments, the
offline flag (:class:`~hybridgate.health.offline.OfflineTracker`). Owned by the event loop: no
locks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from hybridgate.backends.base import ProbeResult
from hybridgate.clock import Clock, SystemClock
from hybridgate.config.resilience import BreakerConfig, OfflineConfig
from hybridgate.config.schema import GatewayConfig, effective_placement
from hybridgate.errors import ErrorKind
from hybridgate.health.breaker import BreakerState, CircuitBreaker
from hybridgate.health.offline import OfflineTracker
from hybridgate.health.predictor import PerfEstimate
from hybridgate.health.snapshot import DeploymentHealth, DeploymentState, HealthSnapshot, ProbeRecord
from hybridgate.health.stats import WINDOW_S, WINDOW_SLOTS, DeploymentStats
from hybridgate.types import Placement, Usage

if TYPE_CHECKING:
    from hybridgate.health.load import LoadReading

__all__ = ["DeploymentStats", "LiveHealth"]


class LiveHealth:
    """Every deployment's state, statistics and circuit breaker; records outcomes, takes snapshots.

    It is the executor's :class:`~hybridgate.execution.executor.AttemptObserver` (``admit``,
    ``started``, ``succeeded``, ``failed``, ``finished``), the prober's and load poller's sink
    (``probed``, ``record_load``), and the source of the immutable
    :class:`~hybridgate.health.snapshot.HealthSnapshot` the planner reads. A snapshot is rebuilt
    only for the deployments that changed since the last one (and, every window slot or when an
    open breaker's period ends, for time's sake), so taking one per request stays cheap.
    """

    def __init__(
        self,
        priors: Mapping[str, PerfEstimate],
        *,
        clock: Clock | None = None,
        placements: Mapping[str, Placement] | None = None,
        breakers: Mapping[str, BreakerConfig] | None = None,
        offline: OfflineConfig | None = None,
        window_s: float = WINDOW_S,
        slots: int = WINDOW_SLOTS,
        min_samples: int = 5,
    ) -> None:
        clock = clock or SystemClock()
        self._clock = clock
        self._now = clock.monotonic
        self.stats = {
            name: DeploymentStats(p, clock=clock, window_s=window_s, slots=slots, min_samples=min_samples)
            for name, p in priors.items()
        }
        configs = breakers or {}
        self.breakers = {name: CircuitBreaker(configs.get(name) or BreakerConfig(), clock) for name in priors}
        # Without placements, a deployment of unbounded concurrency is taken to be a cloud API.
        self._cloud = frozenset(
            name
            for name, p in priors.items()
            if (placements[name] == "cloud" if placements and name in placements else p.concurrency is None)
        )
        self._offline = OfflineTracker(offline or OfflineConfig(), clock)
        self._states: dict[str, tuple[DeploymentState, str]] = {
            name: (DeploymentState.STARTING, "") for name in priors
        }
        self._reports = dict.fromkeys(priors, 0)  # successes/failures not yet matched by a finish
        self._listeners: list[Callable[[], None]] = []
        self._tick = window_s / slots
        self._dirty: set[str] = set(priors)
        self._wake_at = float("-inf")  # when time alone changes something (a breaker, a window)
        self._entries: dict[str, DeploymentHealth] = {}
        self._snapshot = HealthSnapshot({})

    @classmethod
    def from_config(
        cls,
        config: GatewayConfig,
        priors: Mapping[str, PerfEstimate],
        *,
        clock: Clock,
        placements: Mapping[str, Placement] | None = None,
    ) -> LiveHealth:
        """Breakers and offline detection as configured; ``placements`` as the backends report them."""
        deployments = config.deployments
        return cls(
            priors,
            clock=clock,
            placements=placements or {name: effective_placement(d) for name, d in deployments.items()},
            breakers={name: d.breaker for name, d in deployments.items()},
            offline=config.resilience.offline,
        )

    # ------------------------------------------------------------------ lifecycle state

    def set_state(self, name: str, state: DeploymentState, detail: str = "") -> None:
        """The deployment's lifecycle: starting, ready, failed or unconfigured."""
        self._states[name] = (state, detail)
        self._dirty.add(name)

    def state(self, name: str) -> tuple[DeploymentState, str]:
        """The lifecycle state set by :meth:`set_state` (the snapshot adds ``circuit_open``)."""
        return self._states[name]

    def is_cloud(self, name: str) -> bool:
        return name in self._cloud

    @property
    def offline(self) -> bool:
        return self._offline.offline

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> HealthSnapshot:
        """The immutable health of every deployment, now."""
        if not self._dirty and self._now() < self._wake_at:
            return self._snapshot
        now = self._now()
        if now >= self._wake_at:
            # Time alone moved something: statistics windows turned, open periods ended.
            self._dirty.update(self.stats)
            half_open = self.next_half_open_at()
            self._wake_at = now + self._tick if half_open is None else min(now + self._tick, half_open)
        entries = dict(self._entries)
        for name in self._dirty:
            entries[name] = self._entry(name)
        self._dirty.clear()
        self._entries = entries
        off = self._offline
        self._snapshot = HealthSnapshot(entries, off.offline, off.since, off.reason)
        return self._snapshot

    def _entry(self, name: str) -> DeploymentHealth:
        state, detail = self._states[name]
        stats, breaker = self.stats[name], self.breakers[name]
        position = breaker.state
        if state is DeploymentState.READY and position is BreakerState.OPEN:
            state, detail = DeploymentState.CIRCUIT_OPEN, breaker.open_detail()
        perf, queue_depth, loaded, error_rate = stats.current()
        return DeploymentHealth(
            state, detail, perf, position, queue_depth, loaded, error_rate, stats.last_probe
        )

    # ------------------------------------------------------------------ AttemptObserver

    def admit(self, deployment: str) -> bool:
        """May an attempt go to ``deployment`` now? Closed breaker: yes; open: no; half-open: yes
        for the one trial. An admitted attempt must end in ``finished`` (after ``succeeded`` or
        ``failed`` if it got that far)."""
        breaker = self.breakers.get(deployment)
        return breaker is None or breaker.try_acquire()

    def started(self, deployment: str) -> None:
        self.stats[deployment].started()
        self._dirty.add(deployment)

    def succeeded(
        self,
        deployment: str,
        *,
        usage: Usage,
        ttft_s: float | None,
        duration_s: float,
        backup: bool = False,
        late: bool = False,
    ) -> None:
        self.stats[deployment].record_success(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            ttft_s=ttft_s,
            duration_s=duration_s,
            backup=backup,
            late=late,
        )
        self._reports[deployment] += 1
        self._outcome(deployment, ok=True)

    def failed(self, deployment: str, kind: str, retry_after: float | None = None) -> None:
        """An attempt failed with ``kind`` (an :class:`~hybridgate.errors.ErrorKind` value);
        ``retry_after`` is the provider's Retry-After in seconds, if it sent one."""
        self.stats[deployment].record_error(kind)
        self._reports[deployment] += 1
        self._outcome(deployment, ok=False, kind=kind, retry_after=retry_after)

    def cut_short(
        self,
        deployment: str,
        over_s: float,
        *,
        backup: bool = False,
        elapsed_s: float | None = None,
        predicted_wait_s: float = 0.0,
    ) -> None:
        self.stats[deployment].record_cut_short(
            over_s, backup=backup, elapsed_s=elapsed_s, predicted_wait_s=predicted_wait_s
        )
        self._dirty.add(deployment)

    def finished(self, deployment: str) -> None:
        self.stats[deployment].finished()
        if self._reports[deployment] > 0:
            self._reports[deployment] -= 1
        elif self.breakers[deployment].release():
            # Ended with no verdict (cancelled, e.g. a hedge that lost): its half-open trial is free.
            self._notify()
        self._dirty.add(deployment)

    # ------------------------------------------------------------------ probes and runtime load

    def probed(self, deployment: str, result: ProbeResult) -> None:
        """An active probe's outcome: recorded, and fed to the breaker like an attempt's."""
        self.stats[deployment].last_probe = ProbeRecord(
            self._clock.wall(), result.ok, result.latency_s, result.detail
        )
        self._outcome(deployment, ok=result.ok, kind=ErrorKind.UNAVAILABLE, probe=True)

    def record_load(self, deployment: str, reading: LoadReading | None) -> None:
        """What the runtime says of its own load (None: the poll failed, nothing is known)."""
        self.stats[deployment].runtime = reading
        self._dirty.add(deployment)

    def _outcome(
        self, name: str, *, ok: bool, kind: str = "", retry_after: float | None = None, probe: bool = False
    ) -> None:
        breaker = self.breakers[name]
        before = breaker.state
        if ok:
            breaker.record_success()
        else:
            breaker.record_failure(kind, retry_after)
        after = breaker.state
        self._dirty.add(name)
        cloud = name in self._cloud
        changed = after is not before
        if cloud:
            # A failed probe says nothing of the kind of failure: it leaves the connection count be.
            offline = self._offline
            if offline.cloud_succeeded() if ok else not probe and offline.cloud_failed(name, kind):
                self._wake_at = float("-inf")  # the snapshot's offline fields change
                changed = True
            if changed and after is BreakerState.OPEN:
                self._check_cloud_lost()
        if after is BreakerState.OPEN:
            until = breaker.open_until
            if until is not None and until < self._wake_at:
                self._wake_at = until
        if changed:
            self._notify()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _check_cloud_lost(self) -> None:
        cloud = [n for n in self._cloud if self._states[n][0] is DeploymentState.READY]
        lost = all(
            self.breakers[n].state is not BreakerState.CLOSED and self.breakers[n].failed_trials > 0
            for n in cloud
        )
        if cloud and lost and self._offline.breakers_lost(cloud):
            self._wake_at = float("-inf")
            self._notify()

    # ------------------------------------------------------------------ for the prober

    def on_breaker_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when a breaker changes state, a half-open trial is handed back, or the
        offline flag changes; returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def next_half_open_at(self) -> float | None:
        """The earliest moment (monotonic) an open breaker turns half-open, if any is open."""
        times = [t for b in self.breakers.values() if (t := b.open_until) is not None]
        return min(times) if times else None

    def next_breaker_change_at(self) -> float | None:
        """The earliest moment (monotonic) time alone changes any breaker's answer to ``admit``."""
        times = [t for b in self.breakers.values() if (t := b.next_change_at()) is not None]
        return min(times) if times else None

    # ------------------------------------------------------------------ introspection

    def describe(self, name: str) -> dict[str, object]:
        """Everything known of one deployment, JSON-serialisable: for /readyz and the dashboard."""
        stats = self.stats[name]
        entry = self.snapshot().of(name)
        probe = stats.last_probe
        runtime = stats.runtime
        return {
            "state": entry.state.value,
            "detail": entry.detail,
            "breaker": self.breakers[name].describe().to_dict(),
            "in_flight": stats.in_flight,
            "queue_depth": entry.queue_depth,
            "loaded": entry.loaded,
            "completed": stats.completed,
            "errors": dict(stats.errors),
            "error_rate": round(entry.error_rate, 4),
            "latency": stats.quantiles(),
            "last_probe": None if probe is None else probe._asdict(),
            "runtime": None if runtime is None else runtime.to_dict(),
        }

    def offline_status(self) -> dict[str, object]:
        off = self._offline
        return {"offline": off.offline, "since": off.since, "reason": off.reason}

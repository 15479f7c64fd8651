"""Live measurements of one deployment, turned into the planner's :class:`PerfEstimate`.

The executor reports every attempt (start, first token, end, usage); this keeps the last
``window`` samples of each quantity and re-estimates when one arrives. Until ``min_samples``
measurements exist the configured priors stand. Owned by the event loop: no locks.
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from collections.abc import Mapping

from hybridgate.health.predictor import PerfEstimate
from hybridgate.health.snapshot import DeploymentHealth, DeploymentState, HealthSnapshot
from hybridgate.types import Usage


def _quantile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class DeploymentStats:
    """Rolling windows of time to first token, decode rate and service time; in-flight count."""

    def __init__(self, prior: PerfEstimate, *, window: int = 128, min_samples: int = 5) -> None:
        self.prior = prior
        self.min_samples = min_samples
        self.in_flight = 0
        self.errors: Counter[str] = Counter()
        self.completed = 0
        self._ttft: deque[float] = deque(maxlen=window)  # base TTFT: prefill of the prompt removed
        self._tps: deque[float] = deque(maxlen=window)
        self._service: deque[float] = deque(maxlen=window)
        self._estimate = prior

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    def record_success(
        self, *, prompt_tokens: int, completion_tokens: int, ttft_s: float | None, duration_s: float
    ) -> None:
        """One completed attempt. ``ttft_s`` is None when not streamed (it is then inferred)."""
        self.completed += 1
        estimate = self._estimate
        prefill = prompt_tokens / estimate.prefill_tokens_per_s
        if ttft_s is not None and completion_tokens >= 2 and duration_s > ttft_s:
            self._tps.append((completion_tokens - 1) / (duration_s - ttft_s))
        if ttft_s is None:
            ttft_s = duration_s - completion_tokens / estimate.tokens_per_s
        self._ttft.append(max(0.0, ttft_s - prefill))
        self._service.append(duration_s)
        self._refresh()

    def record_error(self, kind: str) -> None:
        self.errors[kind] += 1

    def _refresh(self) -> None:
        est = self.prior
        if len(self._ttft) >= self.min_samples:
            ordered = sorted(self._ttft)
            est = est._replace(ttft_p50_s=_quantile(ordered, 0.5), ttft_p95_s=_quantile(ordered, 0.95))
        if len(self._tps) >= self.min_samples:
            est = est._replace(tokens_per_s=statistics.median(self._tps))
        if len(self._service) >= self.min_samples:
            est = est._replace(service_s=statistics.fmean(self._service))
        self._estimate = est._replace(samples=len(self._ttft) if len(self._ttft) >= self.min_samples else 0)

    def estimate(self) -> PerfEstimate:
        """The current estimate, with the current in-flight count."""
        est = self._estimate
        return est if est.in_flight == self.in_flight else est._replace(in_flight=self.in_flight)


class LiveHealth:
    """Every deployment's state and statistics; records attempts and takes snapshots.

    It is the executor's :class:`~hybridgate.execution.executor.AttemptObserver`, and the source
    of the immutable :class:`~hybridgate.health.snapshot.HealthSnapshot` the planner reads. A
    snapshot is rebuilt only for the deployments that changed since the last one, so taking one
    per request stays cheap.
    """

    def __init__(self, priors: Mapping[str, PerfEstimate]) -> None:
        self.stats = {name: DeploymentStats(p) for name, p in priors.items()}
        self._states: dict[str, tuple[DeploymentState, str]] = {
            name: (DeploymentState.STARTING, "") for name in priors
        }
        self._dirty: set[str] = set(priors)
        self._entries: dict[str, DeploymentHealth] = {}
        self._snapshot = HealthSnapshot({})

    def set_state(self, name: str, state: DeploymentState, detail: str = "") -> None:
        self._states[name] = (state, detail)
        self._dirty.add(name)

    def state(self, name: str) -> tuple[DeploymentState, str]:
        return self._states[name]

    def snapshot(self) -> HealthSnapshot:
        if self._dirty:
            entries = dict(self._entries)
            for name in self._dirty:
                state, detail = self._states[name]
                entries[name] = DeploymentHealth(state, detail, self.stats[name].estimate())
            self._dirty.clear()
            self._entries = entries
            self._snapshot = HealthSnapshot(entries)
        return self._snapshot

    # AttemptObserver
    def started(self, deployment: str) -> None:
        self.stats[deployment].started()
        self._dirty.add(deployment)

    def succeeded(self, deployment: str, *, usage: Usage, ttft_s: float | None, duration_s: float) -> None:
        self.stats[deployment].record_success(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            ttft_s=ttft_s,
            duration_s=duration_s,
        )
        self._dirty.add(deployment)

    def failed(self, deployment: str, kind: str) -> None:
        self.stats[deployment].record_error(kind)

    def finished(self, deployment: str) -> None:
        self.stats[deployment].finished()
        self._dirty.add(deployment)

"""Offline detection: has the gateway lost its path to the cloud?

Two kinds of evidence say the uplink is down, either is enough (``resilience.offline``):

- ``after_failures`` connection failures (refused, reset, DNS) **in a row** across all cloud
  deployments, with no cloud answer in between. Any answer from a provider, even an error
  status, proves the network works and starts the count again; timeouts prove nothing either
  way and leave it as it is.
- every cloud deployment's circuit breaker is open (or half-open) **and** at least one trial of
  each has failed since: the probes are failing too.

Offline clears as soon as any cloud request or probe succeeds. While offline, the planner drops
cloud candidates ("offline: ...") and the prober keeps probing the cloud deployments (a GET of
the model list: no tokens) so that the way back is noticed.
"""

from __future__ import annotations

from collections.abc import Iterable

from hybridgate.clock import Clock
from hybridgate.config.resilience import OfflineConfig
from hybridgate.errors import ErrorKind


class OfflineTracker:
    """The offline flag, with since when and why. Fed by :class:`~hybridgate.health.live.LiveHealth`."""

    def __init__(self, config: OfflineConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self.offline = False
        self.since: float | None = None  # wall-clock seconds
        self.reason = ""
        self.connection_failures = 0  # in a row, across cloud deployments

    def cloud_failed(self, deployment: str, kind: str) -> bool:
        """A cloud attempt failed; returns whether the flag changed."""
        if kind == ErrorKind.CONNECTION:
            self.connection_failures += 1
            if self.connection_failures >= self.config.after_failures:
                return self._go_offline(
                    f"{self.connection_failures} connection failures in a row "
                    f"across cloud deployments (last: {deployment})"
                )
        elif kind != ErrorKind.TIMEOUT:
            self.connection_failures = 0  # the provider answered: the network works
        return False

    def cloud_succeeded(self) -> bool:
        """A cloud request or probe succeeded; returns whether the flag changed."""
        self.connection_failures = 0
        if not self.offline:
            return False
        self.offline, self.since, self.reason = False, None, ""
        return True

    def breakers_lost(self, cloud: Iterable[str]) -> bool:
        """Every cloud breaker is open and its trials failed (``cloud`` names them); returns whether
        the flag changed."""
        names = sorted(cloud)
        if not names:
            return False
        return self._go_offline(
            f"every cloud deployment's circuit is open and its trials failed ({', '.join(names)})"
        )

    def _go_offline(self, reason: str) -> bool:
        if self.offline or not self.config.enabled:
            return False
        self.offline, self.since, self.reason = True, self._clock.wall(), reason
        return True

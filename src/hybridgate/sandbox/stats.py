"""What the SANDBOX saw: counters and a bounded log of the inference requests it received.

``GET /sandbox/stats`` returns :meth:`Stats.snapshot`; tests of the resilience layer assert on
it (how many attempts reached the upstream, which faults they met, when their first token left).
Times are ``time.monotonic()`` of the sandbox process, the same clock as the test process on
the same machine.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    """One inference request. Fields after ``stream`` are filled in as the request proceeds.

    ``outcome`` is ``in_progress`` until the request ends, then one of ``ok``, ``invalid``,
    ``error`` (an error reply, natural or injected), ``overloaded``, ``reset``, ``cut`` (connection
    closed mid-stream) or ``disconnected`` (the client went away first). ``fault`` names the
    injected fault, if any.
    """

    seq: int
    endpoint: str
    arrival: float
    model: str | None
    stream: bool
    outcome: str = "in_progress"
    fault: str | None = None
    status: int | None = None
    slow: bool = False
    queued_s: float = 0.0
    planned_ttft_s: float | None = None
    planned_tps: float | None = None
    """The decode speed drawn for it (tokens per second; None when the time scale is 0)."""
    first_token_s: float | None = None
    """Seconds from arrival to the first token leaving (the whole body, when not streamed)."""
    duration_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


class Stats:
    """Counters plus the last ``log_size`` request records."""

    def __init__(self, log_size: int = 10_000) -> None:
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._seq = 0
        self.in_flight = 0
        self.waiting_for_slot = 0
        self.max_in_flight = 0
        self.model_list_requests = 0
        self._outcomes: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._endpoints: Counter[str] = Counter()

    def arrive(self, endpoint: str, arrival: float, model: str | None, stream: bool) -> RequestRecord:
        self._seq += 1
        record = RequestRecord(self._seq, endpoint, arrival, model, stream)
        self._log.append(record)
        self._endpoints[endpoint] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return record

    def leave(self, record: RequestRecord, now: float) -> None:
        self.in_flight -= 1
        if record.outcome == "in_progress":
            record.outcome = "ok"
        record.duration_s = now - record.arrival
        self._outcomes[record.outcome] += 1
        if record.fault is not None:
            self._faults[record.fault] += 1

    def reset(self) -> None:
        """Forget counters and the log (requests still running keep being counted in flight)."""
        self._log.clear()
        self._outcomes.clear()
        self._faults.clear()
        self._endpoints.clear()
        self.max_in_flight = self.in_flight
        self.model_list_requests = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "sandbox": True,
            "counters": {
                "requests": sum(self._endpoints.values()),
                "by_endpoint": dict(self._endpoints),
                "by_outcome": dict(self._outcomes),
                "by_fault": dict(self._faults),
                "in_flight": self.in_flight,
                "waiting_for_slot": self.waiting_for_slot,
                "max_in_flight": self.max_in_flight,
                "model_list_requests": self.model_list_requests,
            },
            "requests": list(self._log),
        }

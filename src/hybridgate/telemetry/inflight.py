"""One request on its way through the gateway: what its trace and decision-log record need.

An :class:`Inflight` is made when a request arrives and sees every attempt the executor makes for
it (it is the request's ``AttemptTracer``): it keeps them, for the decision log even when the
request fails, and hands each to the request's trace span when the request is traced.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from hybridgate.execution.executor import Attempt, AttemptTrace
from hybridgate.policy.context import RequestContext
from hybridgate.policy.planner import RoutePlan
from hybridgate.telemetry.tracing import RequestTrace
from hybridgate.types import EmbeddingRequest, InferenceRequest, Usage

_NOTHING = contextlib.nullcontext()  # reusable, stateless


class _Untraced:
    """The AttemptTrace of an attempt of an untraced request."""

    __slots__ = ()

    def active(self) -> AbstractContextManager[object]:
        return _NOTHING

    def end(self, attempt: Attempt, usage: Usage | None = None, finish_reason: str | None = None) -> None:
        pass


UNTRACED = _Untraced()


@dataclass(slots=True, eq=False)
class Inflight:
    """A request being served: its id, context, plan once made, attempts, and trace."""

    request: InferenceRequest | EmbeddingRequest
    ctx: RequestContext
    arrived: float
    id: str
    operation: str = "chat"
    trace: RequestTrace | None = None
    plan: RoutePlan | None = None
    attempts: list[Attempt] = field(default_factory=list)

    def attempt(self, attempt: Attempt) -> AttemptTrace:
        self.attempts.append(attempt)
        if self.trace is None:
            return UNTRACED
        return self.trace.attempt(attempt)

"""The discrete-event engine: a heap of events on virtual time, in plain Python (no asyncio).

What is the server's own code and what is the simulator's (docs/simulator.md has the table):

- shared: the planner (``plan_chat``, via :class:`~hybridgate.sim.baselines.PolicyRouter`), the
  live health (:class:`~hybridgate.health.live.LiveHealth`: windowed statistics, the latency
  predictor's inputs, circuit breakers, offline detection, the hedge tail tracker), the
  :class:`~hybridgate.execution.retry.RetryPolicy` decisions and the
  :class:`~hybridgate.execution.retry.RetryBudget`, per-attempt deadlines
  (``Candidate.timeouts``), the hedge delay (``RoutePlan.hedge``) and the cost model. They read
  :class:`VirtualClock`, so breakers open and half-open and windows slide in simulated time.
- re-implemented: the prober's scheduling rules (:mod:`hybridgate.sim.probes`; the results go
  to the real ``LiveHealth.probed``).
- the simulator's own: the attempt loop below. It mirrors ``Executor.walk`` and
  ``Executor._hedged`` step by step (admit, started, succeeded/failed, cut_short, finished; retry
  same / next / stop; hedge after the plan's delay when the budget and the second candidate's
  breaker allow), because the executor's loop awaits backends and cannot run a million requests
  a minute. A test holds the two to the same decisions on the same failures.
"""

from __future__ import annotations

import functools
import heapq
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hybridgate.config.schema import GatewayConfig
from hybridgate.errors import (
    BackendCrashed,
    BackendOverloaded,
    BackendUnavailable,
    ErrorKind,
    HybridgateError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from hybridgate.execution.retry import Action, RetryBudget, RetryPolicy
from hybridgate.health.live import LiveHealth
from hybridgate.health.snapshot import DeploymentState
from hybridgate.policy.table import Policy
from hybridgate.sim.baselines import Route, RouterEnv, make_router
from hybridgate.sim.faults import NO_EFFECT, FaultIndex, FaultSchedule
from hybridgate.sim.models import Attempt, BackendModel, BackendProfile
from hybridgate.sim.probes import TICK_S, SimProber
from hybridgate.sim.results import ClassResult, RunResult
from hybridgate.sim.shapes import Shape, ShapePool, TraceShapes
from hybridgate.sim.trace import TraceRecord
from hybridgate.sim.workload import Arrivals, Workload
from hybridgate.types import Usage

_ERRORS: dict[ErrorKind, type[UpstreamError]] = {
    ErrorKind.SERVER_ERROR: UpstreamServerError,
    ErrorKind.CONNECTION: UpstreamConnectionError,
    ErrorKind.TIMEOUT: UpstreamTimeout,
    ErrorKind.RATE_LIMITED: UpstreamRateLimited,
    ErrorKind.OVERLOADED: BackendOverloaded,
    ErrorKind.CRASHED: BackendCrashed,
    ErrorKind.UNAVAILABLE: BackendUnavailable,
}
_ARRIVE, _END, _QUEUE_TIMEOUT, _HEDGE, _RETRY, _SAMPLE, _NODE_DOWN, _REPLAY, _PROBE_TICK, _PROBE_DONE = range(
    10
)
_WALK, _RACE = 0, 1


class VirtualClock:
    """The :class:`~hybridgate.clock.Clock` the shared code reads: time is what the engine says."""

    def __init__(self, start: float = 0.0, wall_offset: float = 1_700_000_000.0) -> None:
        self.now = start
        self._wall_offset = wall_offset

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        raise RuntimeError("simulated time does not sleep: the engine schedules events instead")


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything a run needs besides the router; shared by the policy and every baseline."""

    config: GatewayConfig
    policy: Policy
    workload: Workload
    profiles: Mapping[str, BackendProfile]
    faults: FaultSchedule
    seed: int = 1
    requests: int | None = None
    duration_s: float | None = None
    local_share: float = 0.5  # static-split
    trace: tuple[TraceRecord, ...] = ()  # a decision log to replay


class SimRequest:
    __slots__ = (
        "arrival",
        "attempts",
        "done",
        "i",
        "output",
        "phase",
        "racing",
        "route",
        "shape",
        "tries",
        "walk_at",
    )

    def __init__(self, shape: Shape, output: int, arrival: float) -> None:
        self.shape = shape
        self.output = output
        self.arrival = arrival
        self.route: Route | None = None
        self.i = 0
        self.tries: dict[str, int] = {}
        self.attempts = 0  # attempts started (a count: a list would make a reference cycle)
        self.racing: list[Attempt] = []  # emptied when the request is done (see _finish)
        self.phase = _WALK
        self.walk_at = 0.0  # when the attempt loop began (its deadline is worked out on a failure)
        self.done = False


class Engine:
    """One run of one router over the scenario's workload."""

    def __init__(
        self, scenario: Scenario, router: str, progress: Callable[[int], None] | None = None
    ) -> None:
        self.sc = scenario
        self.clock = VirtualClock()
        config, policy, workload = scenario.config, scenario.policy, scenario.workload
        names = [n for n in policy.resolve(workload.model).deployments if n in scenario.profiles]
        self.cloud = {n: policy.deployments[n].capabilities.placement == "cloud" for n in names}
        # The embedded runtime queues in the gateway and reports its first token; an HTTP server
        # (llama.cpp, vLLM, a cloud API) queues on its side and sends a whole answer's first byte
        # only at its end (backends/http.py): only a stream's first token is watched there.
        self.embedded = frozenset(n for n in names if config.deployments[n].type == "llamacpp")
        priors = {n: spec.prior for n, spec in policy.deployments.items()}
        self.health = LiveHealth.from_config(config, priors, clock=self.clock)
        for name in priors:
            if name in scenario.profiles:
                self.health.set_state(name, DeploymentState.READY)
            else:
                self.health.set_state(name, DeploymentState.UNCONFIGURED, "not modelled by the workload")
        seed = scenario.seed
        self.rng = random.Random(f"{seed}:service")
        retry = config.resilience.retry
        self.max_attempts = retry.max_attempts
        self.retry = RetryPolicy(retry, random.Random(f"{seed}:retry"))
        self.budget = RetryBudget(retry, self.clock)
        self.backends = {n: BackendModel(n, scenario.profiles[n]) for n in names}
        self.priority = {name: cls.priority for name, cls in policy.classes.items()}
        self.faults = FaultIndex(scenario.faults, self.cloud)
        self._faulty = frozenset(n for n, faults in self.faults.by_deployment.items() if faults)
        self.prober = SimProber(
            config,
            self.health,
            self.backends,
            self.faults,
            random.Random(f"{seed}:probes"),
            lambda at, done: self._at(at, _PROBE_DONE, done),
        )
        env = RouterEnv(
            policy, names, self.health, self.backends, self.faults, random.Random(f"{seed}:router")
        )
        self.router = make_router(router, env, scenario.local_share)
        self.pools = [
            ShapePool(i, load, workload.model, policy, random.Random(f"{seed}:shapes:{i}"))
            for i, load in enumerate(workload.classes)
        ]
        self.arrivals = [
            Arrivals(load, random.Random(f"{seed}:arrivals:{i}")) for i, load in enumerate(workload.classes)
        ]
        self.pick_rng = random.Random(f"{seed}:requests")
        self.trace_shapes = TraceShapes(workload.model, policy)
        results = {}
        for cls in sorted(
            {*(c.workload_class for c in workload.classes), *(r.workload_class for r in scenario.trace)}
        ):
            budget = policy.budgets[cls]
            results[cls] = ClassResult(cls, budget.p95_ms / 1000.0, budget.p99_ms / 1000.0)
        self.result = RunResult(router, results)
        self.result.series_queue = {n: [] for n in names if self.backends[n].slots is not None}
        self.result.series_answers = {"local": [], "cloud": []}
        self.result.series_deployments = {n: [] for n in names}
        self._answers = Counter[str]()
        self._usage: dict[tuple[str, str], list[float]] = {}  # (deployment, origin) -> tokens, bytes, s
        self._heap: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._generated = 0
        self._open = 0  # requests not yet answered or failed
        self._last_done = 0.0  # when the last request was answered or failed
        self._progress = progress

    # ------------------------------------------------------------------ the loop

    def _at(self, t: float, code: int, obj: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, code, obj))

    def run(self) -> RunResult:
        started = time.perf_counter()
        for i, arrivals in enumerate(self.arrivals):
            self._at(arrivals.next(), _ARRIVE, i)
        if self.sc.trace:
            self._at(self.sc.trace[0].t, _REPLAY, 0)
        for fault in self.faults.node_downs:
            self._at(fault.start_s, _NODE_DOWN, fault)
        self._at(0.0, _SAMPLE, None)
        self._at(0.0, _PROBE_TICK, None)
        heap, clock = self._heap, self.clock
        handlers: list[Callable[[object], None]] = [
            self._arrive,
            self._end,
            self._queue_timeout,
            self._hedge,
            self._retry,
            self._sample,
            self._node_down,
            self._replay,
            self._probe_tick,
            self._probe_done,
        ]
        pop = heapq.heappop
        while heap:
            t, _, code, obj = pop(heap)
            clock.now = t
            handlers[code](obj)
        self._price()
        # Until the last request was done: timers of requests done long before (a hedge that was
        # never needed) may still be pending, and say nothing.
        self.result.simulated_s = self._last_done
        self.result.budget_denied = self.budget.denied
        self.result.wall_s = time.perf_counter() - started
        return self.result

    def _more(self, t: float) -> bool:
        sc = self.sc
        if sc.requests is not None:
            return self._generated < sc.requests
        limit = sc.duration_s or sc.workload.duration_s
        if limit is None:
            # A trace alone runs to its end; generated classes default to a minute.
            limit = sc.trace[-1].t + 1e-9 if sc.trace and not sc.workload.classes else 60.0
        return t < limit

    # ------------------------------------------------------------------ requests

    def _arrive(self, obj: object) -> None:
        i = obj if isinstance(obj, int) else 0
        now = self.clock.now
        if not self._more(now):
            return
        self._at(self.arrivals[i].next(), _ARRIVE, i)
        pool = self.pools[i]
        rng = self.pick_rng
        shape = pool.pick(rng)
        self._admit(SimRequest(shape, max(1, round(pool.output_tokens(rng))), now))

    def _replay(self, obj: object) -> None:
        i = obj if isinstance(obj, int) else 0
        trace = self.sc.trace
        if not self._more(self.clock.now):
            return
        if i + 1 < len(trace):
            self._at(trace[i + 1].t, _REPLAY, i + 1)
        record = trace[i]
        shape = self.trace_shapes.of(record)
        output = record.output_tokens
        if output is None:
            output = self.sc.policy.classes[record.workload_class].expected_output_tokens
        self._admit(SimRequest(shape, output, self.clock.now))

    def _admit(self, req: SimRequest) -> None:
        """A new request: planned (or routed by the baseline), then its first attempt(s)."""
        now, shape, output = self.clock.now, req.shape, req.output
        self._generated += 1
        self._open += 1
        self.result.classes[shape.ctx.workload_class].requests += 1
        if self._progress is not None and self._generated % 10_000 == 0:
            self._progress(self._generated)
        self.budget.record_request()
        try:
            route = self.router.route(shape, output, now)
        except HybridgateError:
            self._give_up(req, refused=True)
            return
        req.route = route
        candidates = route.candidates
        if route.hedge is not None and len(candidates) > 1:
            first = candidates[0].deployment
            if not self.health.admit(first):
                self.result.breaker_skips += 1
                req.i = 1
                self._enter_walk(req)
                return
            req.phase = _RACE
            req.tries[first] = 1
            req.racing.append(self._start(req, 0, backup=False))
            hedge = route.hedge
            self._at(now + (hedge.first_token_s if shape.stream else hedge.answer_s), _HEDGE, req)
            return
        self._enter_walk(req)

    def _enter_walk(self, req: SimRequest) -> None:
        assert req.route is not None
        req.phase = _WALK
        req.walk_at = self.clock.now
        self._walk(req)

    def _walk(self, req: SimRequest) -> None:
        """``Executor.walk``: the next admissible candidate, within ``max_attempts``."""
        assert req.route is not None
        candidates = req.route.candidates
        health = self.health
        while req.i < len(candidates) and req.attempts < self.max_attempts:
            name = candidates[req.i].deployment
            if not health.admit(name):
                self.result.breaker_skips += 1
                req.i += 1
                continue
            req.tries[name] = req.tries.get(name, 0) + 1
            self._start(req, req.i, backup=False)
            return
        self._give_up(req, refused=False)

    def _hedge(self, obj: object) -> None:
        """``Executor._hedged``: the primary is late; the budget, then the second's breaker."""
        req = obj if isinstance(obj, SimRequest) else None
        if req is None or req.done or req.phase != _RACE or req.racing[0].done or req.route is None:
            return
        second = req.route.candidates[1].deployment
        if self.budget.try_spend() and self.health.admit(second):
            self.result.hedges += 1
            req.racing[0].late = True
            req.tries[second] = req.tries.get(second, 0) + 1
            req.racing.append(self._start(req, 1, backup=True))

    def _retry(self, obj: object) -> None:
        if isinstance(obj, SimRequest):
            self._walk(obj)

    # ------------------------------------------------------------------ attempts

    def _start(self, req: SimRequest, index: int, *, backup: bool) -> Attempt:
        assert req.route is not None
        candidate = req.route.candidates[index]
        name = candidate.deployment
        now = self.clock.now
        timeouts = candidate.timeouts
        att = Attempt(req, name, index, now, now + timeouts.total, backup)
        if req.shape.stream or name in self.embedded:
            att.first_deadline = now + min(timeouts.first_token, timeouts.total)
        req.attempts += 1
        self.health.started(name)
        result = self.result
        result.attempts[name] += 1
        shape = req.shape
        if self.cloud[name]:
            spec = self.sc.policy.deployments[name]
            if shape.violates(spec.capabilities.region, candidate.redact):
                result.violations += 1
                result.violations_by_class[shape.ctx.workload_class] += 1
        effect = self.faults.effect(name, now) if name in self._faulty else NO_EFFECT
        if effect.fail is not None:
            att.fail_kind = effect.fail
            self._at(now + effect.fail_after_s, _END, att)
            return att
        if effect.rate_limit_probability and self.rng.random() < effect.rate_limit_probability:
            att.fail_kind, att.retry_after = ErrorKind.RATE_LIMITED, effect.retry_after_s
            self._at(now + 0.05, _END, att)
            return att
        backend = self.backends[name]
        committed = req.route.committed
        timing = committed.get(name) if committed is not None else None
        if timing is None:
            timing = backend.draw(self.rng, shape.prompt_tokens, req.output, effect.slow_factor)
        att.timing = timing
        if backend.has_slot():
            self._serve(att, backend)
        else:
            self._enqueue(att, backend, self.priority[shape.ctx.workload_class])
        return att

    def _enqueue(self, att: Attempt, backend: BackendModel, priority: int) -> None:
        """Wait for a slot. A full queue refuses it (overloaded), unless it outranks the attempt
        that would be served last, which is then displaced (and fails over) instead."""
        now = self.clock.now
        if backend.queue_full():
            last = backend.last_waiting()
            if last is None or last[0] >= priority:
                att.fail_kind = ErrorKind.OVERLOADED
                self._at(now, _END, att)
                return
            displaced = last[1]
            backend.drop(displaced)
            displaced.fail_kind = ErrorKind.OVERLOADED
            self._at(now, _END, displaced)
        backend.push(att, priority)
        self._at(att.first_deadline, _QUEUE_TIMEOUT, att)

    def _serve(self, att: Attempt, backend: BackendModel) -> None:
        now = self.clock.now
        timing = att.timing
        assert timing is not None
        cold = backend.cold_start(now)  # before taking the slot: only an idle model is unloaded
        if backend.slots is not None:
            backend.busy += 1
            backend.running[att] = None
        att.served_at = now
        end = now + cold + (timing.ttft_s if timing.error else timing.total_s)
        if now + cold + timing.ttft_s > att.first_deadline:
            att.fail_kind, end = ErrorKind.TIMEOUT, att.first_deadline
        elif end > att.deadline:
            att.fail_kind, end = ErrorKind.TIMEOUT, att.deadline
        elif timing.error:
            att.fail_kind = ErrorKind.SERVER_ERROR
        self._at(end, _END, att)

    def _release(self, att: Attempt) -> None:
        backend = self.backends[att.deployment]
        if backend.slots is None or att.served_at < 0:
            return
        backend.busy -= 1
        backend.running.pop(att, None)
        backend.last_active = self.clock.now
        while backend.busy < backend.slots:
            waiting = backend.pop()
            if waiting is None:
                break
            self._serve(waiting, backend)

    def _queue_timeout(self, obj: object) -> None:
        """Its deadline passed while it waited for a slot: overload, as the embedded runtime says;
        a server's queue is invisible to the gateway, which sees a timeout."""
        if isinstance(obj, Attempt) and not obj.done and obj.served_at < 0:
            obj.fail_kind = ErrorKind.OVERLOADED if obj.deployment in self.embedded else ErrorKind.TIMEOUT
            self._end(obj)

    def _node_down(self, obj: object) -> None:
        """A local runtime dies: what it was serving or queueing crashes (new attempts are refused
        by the fault's effect until the window ends)."""
        names = getattr(obj, "deployments", None) or list(self.backends)
        for name in names:
            backend = self.backends.get(name)
            if backend is None:
                continue
            for att in [*backend.running, *backend.waiting_in_order()]:
                if not att.done:
                    att.fail_kind, att.retry_after = ErrorKind.CRASHED, None
                    self._end(att)

    def _end(self, obj: object) -> None:
        att = obj if isinstance(obj, Attempt) else None
        if att is None or att.done:
            return
        att.done = True
        self._release(att)
        self.backends[att.deployment].drop(att)
        req = att.request
        assert isinstance(req, SimRequest)
        name, now = att.deployment, self.clock.now
        health = self.health
        kind = att.fail_kind
        if kind is None:
            timing = att.timing
            assert timing is not None
            health.succeeded(
                name,
                usage=Usage(req.shape.prompt_tokens, req.output),
                ttft_s=(att.served_at - att.started + timing.ttft_s) if req.shape.stream else None,
                duration_s=now - att.started,
                backup=att.backup,
                late=att.late,
            )
            health.finished(name)
            self.router.observe(name, now - att.started, req.output)
            self._account(att, req, answered=True)
            self._answer(req, att)
            return
        health.failed(name, kind.value, att.retry_after)
        health.finished(name)
        self.result.errors[kind.value] += 1
        self._account(att, req, answered=False)
        self._failed(req, att, kind)

    def _failed(self, req: SimRequest, att: Attempt, kind: ErrorKind) -> None:
        if req.done:
            return
        assert req.route is not None
        if req.phase == _RACE:
            if any(not a.done for a in req.racing):
                return  # the other attempt of the race may still answer
            req.i = len(req.racing)
            self._enter_walk(req)
            return
        candidates = req.route.candidates
        error = _ERRORS.get(kind, UpstreamError)(
            kind.value, deployment=att.deployment, retry_after=att.retry_after
        )
        decision = self.retry.decide(
            error,
            same_tries=req.tries[att.deployment],
            others_left=req.i + 1 < len(candidates),
            time_left_s=req.walk_at + candidates[0].timeouts.total - self.clock.now,
        )
        if decision.action is Action.STOP:
            self._give_up(req, refused=False)
        elif decision.action is Action.RETRY_SAME and self.budget.try_spend():
            self.result.retries += 1
            self._at(self.clock.now + decision.delay_s, _RETRY, req)
        else:
            self.result.failovers += 1
            req.i += 1
            self._walk(req)

    # ------------------------------------------------------------------ outcomes

    def _answer(self, req: SimRequest, att: Attempt) -> None:
        now = self.clock.now
        for other in req.racing:
            if other.done:
                continue
            assert req.route is not None
            candidate = req.route.candidates[other.index]
            predicted = candidate.predicted_ttft_p95_s if req.shape.stream else candidate.predicted_p95_s
            if predicted is not None:
                elapsed = now - other.started
                self.health.cut_short(
                    other.deployment,
                    elapsed - predicted,
                    backup=other.backup,
                    elapsed_s=elapsed,
                    predicted_wait_s=candidate.predicted_wait_s,
                )
            other.done = True
            self._release(other)
            self.backends[other.deployment].drop(other)
            self.health.finished(other.deployment)
            self._account(other, req, answered=False)
        if att.backup:
            self.result.hedges_won += 1
        self._finish(req)
        latency = now - req.arrival
        cls = self.result.classes[req.shape.ctx.workload_class]
        cls.latencies.append(latency)
        placement = "cloud" if self.cloud[att.deployment] else "local"
        cls.by_placement[placement] += 1
        self._answers[att.deployment] += 1
        if latency <= cls.p95_budget_s:
            cls.within_budget += 1

    def _finish(self, req: SimRequest) -> None:
        """The request is done. Its race's attempts point back at it: let go of them, so that the
        request and its attempts are freed by reference counting once no event holds them (a
        cycle would wait for the garbage collector, which then costs a fifth of the run)."""
        req.done = True
        req.racing.clear()
        self._open -= 1
        self._last_done = self.clock.now

    def _give_up(self, req: SimRequest, *, refused: bool) -> None:
        self._finish(req)
        cls = self.result.classes[req.shape.ctx.workload_class]
        if refused:
            cls.refused += 1
        else:
            cls.failed += 1

    def _account(self, att: Attempt, req: SimRequest, *, answered: bool) -> None:
        """Cost and egress of one attempt, by the real cost model. A cloud attempt that failed is
        not billed; one cut short pays for its prompt; a local one pays for the seconds it held."""
        name, shape = att.deployment, req.shape
        now = self.clock.now
        cloud = self.cloud[name]
        if not cloud and att.served_at < 0:
            return
        if cloud and att.fail_kind is not None:
            return
        prompt = shape.prompt_tokens
        output = req.output if answered else 0
        n_bytes = 4 * (prompt + output) if cloud else 0
        held = now - att.served_at if att.served_at >= 0 else 0.0
        # Costs are linear in tokens, bytes and seconds: summed per (deployment, origin) and priced
        # once at the end by the real cost model (one call per key instead of one per attempt).
        key = (name, shape.ctx.region)
        usage = self._usage.get(key)
        if usage is None:
            usage = self._usage[key] = [0, 0, 0, 0.0]
        usage[0] += prompt
        usage[1] += output
        usage[2] += n_bytes
        usage[3] += held

    def _price(self) -> None:
        result, deployments = self.result, self.sc.policy.deployments
        for (name, origin), (prompt, output, n_bytes, held) in sorted(self._usage.items()):
            cost = deployments[name].cost.actual(int(prompt), 0, int(output), int(n_bytes), origin, held)
            result.cost_usd["cloud" if self.cloud[name] else "local"] += cost.total
            result.egress_bytes += int(n_bytes)

    def _probe_tick(self, obj: object) -> None:
        now = self.clock.now
        self.prober.start_due(now)
        if self._open > 0 or self._more(now):
            self._at(now + TICK_S, _PROBE_TICK, None)

    def _probe_done(self, obj: object) -> None:
        if isinstance(obj, tuple):
            name, result = obj
            self.prober.done(name, result)

    def _sample(self, obj: object) -> None:
        result, now = self.result, self.clock.now
        result.series_t.append(now)
        for name, series in result.series_queue.items():
            series.append(self.backends[name].waiting())
        answers = self._answers
        for name, series in result.series_deployments.items():
            series.append(answers[name])
        result.series_answers["local"].append(sum(answers[n] for n, c in self.cloud.items() if not c))
        result.series_answers["cloud"].append(sum(answers[n] for n, c in self.cloud.items() if c))
        answers.clear()
        if self._open > 0 or self._more(now):
            self._at(now + self.sc.workload.queue_sample_s, _SAMPLE, None)


def run_scenario(
    scenario: Scenario, routers: list[str], progress: Callable[[str, int], None] | None = None
) -> dict[str, RunResult]:
    """Each router over the same workload and seed, one after the other."""
    results: dict[str, RunResult] = {}
    for name in routers:
        report = functools.partial(progress, name) if progress is not None else None
        results[name] = Engine(scenario, name, report).run()
    return results

"""Queue-aware spillover vs failover-only, on a bursty local-first workload (real llama.cpp).

The same seeded, open-loop arrival trace (calm Poisson traffic with Poisson bursts on top) is
replayed against separate ``hybridgate serve`` processes that differ only in how the
``local-first`` class may use the predicted queue wait. Every gateway has the same two
deployments: ``local``, the real llama.cpp runtime (llama-cpp-python in the gateway's supervised
worker, one slot, a bounded queue), and ``cloud``, the SANDBOX stand-in cloud
(``python -m hybridgate.sandbox --profile cloud-typical``, one process shared by all arms).

* **spill** (queue-aware spillover): class budget = the real budget; the planner ranks local
  first only while its predicted p95 (queue wait + TTFT + prefill + decode) meets it, otherwise
  it plans the cloud first.
* **failover** (failover-only, the classic gateway): the same model with a class budget so large
  that local always "meets" it, so a request leaves local only when its queue is full (429 ->
  failover) or its circuit breaker is open.
* **local-only**: no cloud at all (the queue's 429s are answered to the client).

The arrival rates are loads of the local runtime as measured at the start (``--calm-load`` 0.3
and ``--burst-load`` 2.5 times its capacity for the trace's request sizes, sent one at a time),
so the bursts overload it alike on a fast machine and a slow one; ``--calm-rate`` and
``--burst-rate`` fix them instead.

Every request is judged against the SAME real budget: it meets it when it was answered, its
whole stream took at most the p95 budget and its first token came within the TTFT budget. Per
arm: the share meeting the budget, latency p50/p95/p99, the share served locally (spilling
everything would meet the budget trivially; the local share is the cost side), why requests left
local (planned spill, 429 failover, timeout failover, breaker), and how the planner's predicted
local queue wait and p95 compare with what the local requests then took (from the gateways'
decision logs). Arms alternate within each round (the order flips every round) so machine noise
hits all of them; the ratios are spill / failover.

Usage::

    python bench/spillover.py            # full run, about 7 minutes
    python bench/spillover.py --quick    # about 1.5 minutes

Exit status: 0 when every request was answered validly (local-only: or refused with 429/503),
1 when not, 2 when a process did not start or failed the preflight, 3 when ``--max-seconds`` ran
out, 130 when interrupted. Speed never fails the run: the targets are printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from rich.console import Console
from rich.table import Table

import _harness as h

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_MODEL = ROOT / "models" / "tiny.gguf"
GATEWAY_READY = re.compile(r"hybridgate: listening on http://127\.0\.0\.1:(\d+)")
SANDBOX_READY = re.compile(r"SANDBOX listening on http://127\.0\.0\.1:(\d+)")
SCHEMA = "hybridgate-bench-spillover/1"
ARMS = ("spill", "failover", "local-only")
MODEL = "m"
_T = TypeVar("_T")

# Priors for the predictor (``deployments.<name>.expected``), used until live measurements replace
# them. Prefill speed is never learned live (see the README), so the local one must be right:
# tiny.gguf on 2 cores of this project's machine type prefills ~16,000-22,000 tokens/s and decodes
# 1,000-2,000 tokens/s (measured with llama-cpp-python 0.3.36); 8,000 leaves room for contention.
# The cloud's are cloud-typical's medians (0.50 s to first token, 85 tokens/s), which are
# calibrated on ../shared/data/latency-figures.md (GPT-4o 0.39 s / 81 tok/s, Azure GPT-4o 0.77 s /
# 115 tok/s, Claude 3.5 Sonnet 0.80 s / 64-95 tok/s).
LOCAL_PRIORS = {"ttft_ms": 20, "tokens_per_s": 1000, "prefill_tokens_per_s": 8000}
CLOUD_PRIORS = {"ttft_ms": 500, "tokens_per_s": 85}
# The cloud is priced like GPT-4o in hybridgate's built-in table (USD per million tokens).
CLOUD_PRICE = {"input_per_mtok": 2.50, "output_per_mtok": 10.00}
HUGE_BUDGET_MS = 3_600_000.0  # the failover arm's class budget: local always "meets" it

# Prompt text: words that are single tokens of tiny.gguf's vocabulary.
_WORD_TEXT = (
    "the of and to a in is it you that he was for on are with as his they be at one have this from "
    "or had by hot word but what some we can out other were all there when up use your how said an "
    "each she which do their time if will way about many then them write would like so these her "
    "long make thing see him two has look more day could go come did number sound no most people my "
    "over know water than call first who may down side been now find any new work part take get "
    "place made live where after back little only round man year came show every good me give our "
    "under name very through just form sentence great think say help low line differ turn cause "
    "much mean before move right boy old too same tell does set three want air well also play small "
    "end put home read hand port large spell add even land here must big high such follow act why "
    "ask men change went light kind off need house picture try us again animal point mother world"
)
_WORDS = _WORD_TEXT.split()
SYSTEM_PROMPT = (
    "You are the planning model of a home robot. Read the observations and the task, then answer "
    "with the next step in plain words."
)

# (rounds, bursts per round, calm seconds, burst seconds, warm-up requests)
PRESETS: dict[str, tuple[int, int, float, float, int]] = {
    "full": (4, 2, 6.0, 3.0, 8),
    "quick": (1, 2, 5.0, 3.0, 6),
}


@dataclass(frozen=True)
class Settings:
    """What to run; see :func:`parse_args` for the meaning of each field."""

    preset: str
    rounds: int
    bursts: int
    calm_s: float
    burst_s: float
    calm_rate: float | None  # None: calm_load x the measured local capacity
    burst_rate: float | None
    calm_load: float
    burst_load: float
    prompt_words: tuple[int, int]
    max_tokens: tuple[int, ...]
    p95_ms: float
    p99_ms: float
    ttft_ms: float
    arms: tuple[str, ...]
    warmup: int
    gap_s: float
    seed: int
    threads: int
    max_queue: int
    model: Path
    timeout: float
    max_seconds: float
    json_path: Path | None
    results_dir: Path


# --------------------------------------------------------------------------- set-up
def parse_args(argv: Sequence[str] | None) -> Settings:
    """Command-line flags; explicit sizes override the ``--quick``/full preset."""
    ap = argparse.ArgumentParser(
        prog="spillover.py",
        description="Share of requests meeting their budget with and without queue-aware spillover.",
    )
    ap.add_argument("--quick", action="store_true", help="one round (about 1.5 min) instead of four (~7 min)")
    ap.add_argument("--rounds", type=int, help="rounds; every arm replays each round's trace once")
    ap.add_argument("--bursts", type=int, help="bursts per round (each between two calm periods)")
    ap.add_argument("--calm-s", type=float, help="seconds of each calm period")
    ap.add_argument("--burst-s", type=float, help="seconds of each burst")
    ap.add_argument("--calm-rate", type=float, help="arrivals/s when calm (default: --calm-load)")
    ap.add_argument("--burst-rate", type=float, help="arrivals/s in a burst (default: --burst-load)")
    ap.add_argument(
        "--calm-load", type=float, default=0.3, help="calm arrivals per local capacity (default 0.3)"
    )
    ap.add_argument(
        "--burst-load", type=float, default=2.5, help="burst arrivals per local capacity (default 2.5)"
    )
    ap.add_argument(
        "--prompt-words", default="600,2400", help="prompt length range, words (default 600,2400)"
    )
    ap.add_argument("--max-tokens", default="64,96,128", help="max_tokens choices (default 64,96,128)")
    ap.add_argument("--budget-ms", type=float, default=3000.0, help="p95 latency budget (default 3000)")
    ap.add_argument("--p99-ms", type=float, help="p99 budget (default: 5/3 of the p95 budget)")
    ap.add_argument("--ttft-ms", type=float, default=1500.0, help="first-token budget (default 1500)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"arms to run (default {','.join(ARMS)})")
    ap.add_argument("--warmup", type=int, help="discarded local and cloud requests before each arm's round")
    ap.add_argument("--gap", type=float, default=2.0, help="idle seconds after each arm's round (default 2)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the traces and the sandbox (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default 1)")
    ap.add_argument("--max-queue", type=int, default=16, help="local queue bound (default 16, the config's)")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF model (default models/tiny.gguf)")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request client timeout, seconds")
    ap.add_argument("--max-seconds", type=float, default=1800.0, help="hard stop for all measurements")
    ap.add_argument("--json", type=Path, help="write the JSON results here (default bench/results/...)")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the default JSON goes")
    a = ap.parse_args(argv)
    preset = "quick" if a.quick else "full"
    rounds, bursts, calm_s, burst_s, warmup = PRESETS[preset]
    arms = tuple(x.strip() for x in a.arms.split(",") if x.strip())
    if not arms or any(x not in ARMS for x in arms) or len(set(arms)) != len(arms):
        ap.error(f"--arms takes distinct names among {', '.join(ARMS)}")
    try:
        low, high = (int(x) for x in a.prompt_words.split(","))
        max_tokens = tuple(int(x) for x in a.max_tokens.split(",") if x.strip())
    except ValueError:
        ap.error("--prompt-words takes MIN,MAX and --max-tokens a comma-separated list of integers")
    if not 1 <= low <= high or not max_tokens or min(max_tokens) < 1:
        ap.error("--prompt-words needs 1 <= MIN <= MAX and --max-tokens positive integers")
    p99 = a.p99_ms if a.p99_ms is not None else a.budget_ms * 5 / 3
    if p99 < a.budget_ms or a.ttft_ms > p99:
        ap.error("budgets must satisfy budget <= p99 and ttft <= p99 (the gateway's own rule)")
    if (
        any(x is not None and x <= 0 for x in (a.calm_rate, a.burst_rate))
        or min(a.calm_load, a.burst_load) <= 0
    ):
        ap.error("arrival rates and loads must be positive")
    return Settings(
        preset=preset,
        rounds=max(1, _pick(a.rounds, rounds)),
        bursts=max(0, _pick(a.bursts, bursts)),
        calm_s=_pick(a.calm_s, calm_s),
        burst_s=_pick(a.burst_s, burst_s),
        calm_rate=a.calm_rate,
        burst_rate=a.burst_rate,
        calm_load=a.calm_load,
        burst_load=a.burst_load,
        prompt_words=(low, high),
        max_tokens=max_tokens,
        p95_ms=a.budget_ms,
        p99_ms=p99,
        ttft_ms=a.ttft_ms,
        arms=arms,
        warmup=max(0, _pick(a.warmup, warmup)),
        gap_s=a.gap,
        seed=a.seed,
        threads=a.threads,
        max_queue=a.max_queue,
        model=a.model.resolve(),
        timeout=a.timeout,
        max_seconds=a.max_seconds,
        json_path=a.json,
        results_dir=a.results_dir,
    )


def _pick(explicit: _T | None, default: _T) -> _T:
    return default if explicit is None else explicit


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the trace
@dataclass(frozen=True, slots=True)
class Arrival:
    """One request of a trace: when (seconds from the trace's start), how big, what it says."""

    t: float
    phase: str  # "calm" or "burst"
    max_tokens: int
    words: int
    prompt: str


@dataclass(frozen=True, slots=True)
class Trace:
    seed: int
    duration_s: float
    arrivals: tuple[Arrival, ...]

    def summary(self) -> dict[str, Any]:
        phases = Counter(a.phase for a in self.arrivals)
        return {
            "seed": self.seed,
            "duration_s": round(self.duration_s, 3),
            "requests": len(self.arrivals),
            "calm": phases["calm"],
            "burst": phases["burst"],
        }


def _request(rng: random.Random, t: float, phase: str, s: Settings) -> Arrival:
    words = rng.randint(*s.prompt_words)
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return Arrival(round(t, 4), phase, rng.choice(s.max_tokens), words, f"Observations: {text}\nNext step?")


def make_trace(seed: int, s: Settings) -> Trace:
    """Calm Poisson arrivals for the whole trace, plus Poisson bursts: calm, (burst, calm) x bursts.

    Everything (times, sizes, prompts) comes from ``random.Random(seed)``: every arm replays
    exactly the same requests at exactly the same offsets.
    """
    if s.calm_rate is None or s.burst_rate is None:
        raise ValueError("the arrival rates are set by calibrate() first")
    calm_rate, burst_rate = s.calm_rate, s.burst_rate
    rng = random.Random(seed)
    duration = s.calm_s * (s.bursts + 1) + s.burst_s * s.bursts
    out: list[Arrival] = []
    t = rng.expovariate(calm_rate)
    while t < duration:
        out.append(_request(rng, t, "calm", s))
        t += rng.expovariate(calm_rate)
    for b in range(s.bursts):
        start = s.calm_s * (b + 1) + s.burst_s * b
        t = start + rng.expovariate(burst_rate)
        while t < start + s.burst_s:
            out.append(_request(rng, t, "burst", s))
            t += rng.expovariate(burst_rate)
    windows = [
        (s.calm_s * (b + 1) + s.burst_s * b, s.calm_s * (b + 1) + s.burst_s * (b + 1))
        for b in range(s.bursts)
    ]
    # A calm arrival inside a burst window is burst traffic too: the phase says when, not why.
    arrivals = [
        dataclasses.replace(a, phase="burst") if any(lo <= a.t < hi for lo, hi in windows) else a for a in out
    ]
    return Trace(seed, duration, tuple(sorted(arrivals, key=lambda a: a.t)))


# --------------------------------------------------------------------------- processes
def gateway_config(arm: str, s: Settings, cloud_port: int, decisions: Path) -> bytes:
    """One arm's gateway config (JSON, which is valid YAML). Arms differ only in class ``bench``."""
    real = {"p95_ms": s.p95_ms, "p99_ms": s.p99_ms, "ttft_ms": s.ttft_ms}
    huge = {"p95_ms": HUGE_BUDGET_MS, "p99_ms": HUGE_BUDGET_MS, "ttft_ms": HUGE_BUDGET_MS}
    expected_output = max(s.max_tokens)
    bench_class = {
        "spill": {"latency": real, "placement": "local-first"},
        "failover": {"latency": huge, "placement": "local-first"},
        "local-only": {"latency": real, "placement": "local-only"},
    }[arm]
    config = {
        "version": 1,
        "server": {"host": "127.0.0.1", "port": 0, "auth": {"disabled": True}},
        "decision_log": {"path": str(decisions)},
        "classes": {
            "default": {**bench_class, "expected_output_tokens": expected_output},
            "bench": {**bench_class, "expected_output_tokens": expected_output},
            "warm-local": {"latency": real, "placement": "local-only"},
            "warm-cloud": {"latency": real, "placement": "cloud-only"},
        },
        "deployments": {
            "local": {
                "type": "llamacpp",
                "model_path": str(s.model),
                "n_threads": s.threads,
                "context_window": 4096,
                "max_queue": s.max_queue,
                "expected": LOCAL_PRIORS,
            },
            "cloud": {
                "type": "openai",
                "base_url": f"http://127.0.0.1:{cloud_port}/v1",
                "model": "sandbox-model",
                "placement": "cloud",
                "region": "us",
                "context_window": 128000,
                "expected": CLOUD_PRIORS,
                "price": CLOUD_PRICE,
            },
        },
        "models": {MODEL: {"deployments": ["local", "cloud"]}},
    }
    return orjson.dumps(config, option=orjson.OPT_INDENT_2)


def gateway_command(config: Path) -> list[str]:
    """``hybridgate serve`` from this interpreter's environment, on a free port."""
    script = Path(sys.executable).with_name("hybridgate")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "hybridgate.cli"]
    return [*base, "serve", "-c", str(config), "--port", "0", "--quiet"]


def sandbox_command(seed: int) -> list[str]:
    return [sys.executable, "-m", "hybridgate.sandbox", "--port", "0", "--profile", "cloud-typical",
            "--seed", str(seed)]  # fmt: skip


def ensure_model(s: Settings, work: Path) -> Path:
    """The GGUF to serve: ``--model``, or tiny.gguf generated into ``work`` when the default is missing."""
    if s.model.exists():
        return s.model
    if s.model != DEFAULT_MODEL:
        raise h.ChildError(f"model {s.model} not found")
    _progress(f"{DEFAULT_MODEL} missing: generating tiny.gguf into {work}")
    subprocess.run(
        [sys.executable, "-m", "hybridgate.cli", "models", "prepare", "--dir", str(work)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return work / "tiny.gguf"


@dataclass
class ArmEnv:
    """One arm's running gateway."""

    arm: str
    pid: int
    port: int
    decisions: Path
    pool: ConnectionPool = field(init=False)

    def __post_init__(self) -> None:
        self.pool = ConnectionPool(self.port)


# --------------------------------------------------------------------------- HTTP
class HeadedConnection(h.HttpConnection):
    """The harness's keep-alive connection, keeping the response headers too."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: dict[str, str] = {}

    def send(self, payload: bytes, stream: bool, timeout: float) -> asyncio.Future[h.Reply]:
        self.headers = {}
        return super().send(payload, stream, timeout)

    def _on_head(self, head: bytes) -> None:
        super()._on_head(head)
        if not 100 <= self._reply.status < 200:
            lines = head.decode("latin-1").split("\r\n")[1:]
            self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}


class ConnectionPool:
    """Idle keep-alive connections to one port; a request takes one or opens a new one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[HeadedConnection, float]] = []  # (connection, idle since)
        self.opened = 0

    async def get(self, connect_s: float) -> HeadedConnection:
        now = h.perf()
        while self.idle:
            conn, since = self.idle.pop()
            if conn.alive and now - since < h.KEEPALIVE_EXPIRY_S:  # a closed one was met once in 3,900
                return conn
            if conn.alive and conn.transport is not None:
                conn.transport.close()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(connect_s):
            _, conn = await loop.create_connection(HeadedConnection, "127.0.0.1", self.port)
        self.opened += 1
        return conn

    def put(self, conn: HeadedConnection) -> None:
        if conn.alive:
            self.idle.append((conn, h.perf()))

    def close(self) -> None:
        for conn, _ in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


def request_bytes(port: int, a: Arrival, cls: str, tag: str) -> bytes:
    """A streamed chat completion for ``a``; the tenant header carries ``tag`` into the decision log."""
    body = orjson.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": a.prompt}],
            "max_tokens": a.max_tokens,
            "temperature": 0,
            "stream": True,
        }
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "User-Agent: hybridgate-bench/1\r\nAccept: text/event-stream\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Hybridgate-Class: {cls}\r\nX-Hybridgate-Tenant: {tag}\r\n\r\n"
    )
    return head.encode() + body


def check_stream(body: bytes) -> tuple[str | None, int]:
    """(None, content events) for a valid SSE chat stream (content, a finish reason, ``[DONE]``)."""
    events = 0
    finished = done = False
    for raw in body.split(b"\n"):
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if done:
            return "data_after_done", events
        if payload == b"[DONE]":
            done = True
            continue
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return "bad_sse_json", events
        if not isinstance(obj, dict) or obj.get("error"):
            return "sse_error_event", events
        if h.delta_content(payload):
            events += 1
        for choice in obj.get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                finished = True
    if not events:
        return "no_content", events
    if not finished:
        return "no_finish_reason", events
    return (None if done else "no_done"), events


@dataclass(slots=True)
class Result:
    """One request's outcome. Times in seconds; ``t`` is its scheduled offset in the trace."""

    arm: str
    round: int
    index: int
    phase: str
    t: float
    max_tokens: int
    words: int
    lateness: float = 0.0  # how late the driver sent it (open-loop fidelity)
    status: int = 0
    outcome: str = "error"  # served | refused | error
    deployment: str | None = None
    latency: float | None = None
    ttft: float | None = None
    events: int = 0
    error: str | None = None
    met: bool = False
    # from the decision log
    plan_first: str | None = None
    attempts: list[str] = field(default_factory=list)
    local_pred_wait_ms: float | None = None
    local_pred_p95_ms: float | None = None
    local_pred_ttft_p95_ms: float | None = None
    local_meets: bool | None = None
    local_rejected: str | None = None  # why the plan dropped local (e.g. its breaker is open)
    cloud_pred_p95_ms: float | None = None
    cloud_pred_ttft_p95_ms: float | None = None
    cloud_meets: bool | None = None

    @property
    def tag(self) -> str:
        return f"{self.arm}.{self.round}.{self.index}"


async def send_one(env: ArmEnv, payload: bytes, limit_s: float) -> tuple[h.Reply, dict[str, str]]:
    """One streamed request on a pooled connection: its reply (not yet validated) and headers."""
    try:
        conn = await env.pool.get(limit_s)
    except (OSError, TimeoutError) as exc:
        now = h.perf()
        return h.Reply(t_start=now, t_end=now, error=f"connect:{type(exc).__name__}"), {}
    reply = await conn.send(payload, True, limit_s)
    headers = conn.headers
    env.pool.put(conn)
    return reply, headers


def judge(result: Result, reply: h.Reply, headers: Mapping[str, str], s: Settings) -> None:
    """Fill ``result`` from the reply: served (valid stream), refused (local-only 429/503) or error."""
    result.status = reply.status
    if reply.error is not None:
        result.error = reply.error
        return
    if reply.status != 200:
        if result.arm == "local-only" and reply.status in (429, 503, 504):
            # The gateway gave up on the request: local queue full (429), local breaker open (503),
            # first-token deadline passed in the queue (504). Valid answers; the budget is missed.
            result.outcome = "refused"
            return
        result.error = f"http_{reply.status}"
        return
    error, result.events = check_stream(reply.body)
    deployment = headers.get("x-hybridgate-deployment")
    if error is None and deployment not in ("local", "cloud"):
        error = "no_deployment_header"
    if error is not None or reply.ttft is None:
        result.error = error or "no_content"
        return
    result.outcome, result.deployment = "served", deployment
    result.latency, result.ttft = reply.latency, reply.ttft
    result.met = reply.latency * 1000 <= s.p95_ms and reply.ttft * 1000 <= s.ttft_ms


async def replay(env: ArmEnv, trace: Trace, rnd: int, s: Settings) -> list[Result]:
    """Send every arrival at its offset (open loop: nothing waits for an answer)."""
    loop = asyncio.get_running_loop()
    results = [
        Result(env.arm, rnd, i, a.phase, a.t, a.max_tokens, a.words) for i, a in enumerate(trace.arrivals)
    ]
    payloads = [
        request_bytes(env.port, a, "bench", r.tag) for a, r in zip(trace.arrivals, results, strict=True)
    ]

    async def one(i: int, due: float) -> None:
        results[i].lateness = max(0.0, loop.time() - due)
        reply, headers = await send_one(env, payloads[i], s.timeout)
        judge(results[i], reply, headers, s)

    await h.open_loop([a.t for a in trace.arrivals], one)
    return results


async def warm_up(
    env: ArmEnv, trace: Trace, rnd: int, s: Settings, n: int | None = None, *, cloud: bool = True
) -> tuple[Counter[str], list[float]]:
    """Discarded requests: the local ones one after another, then the cloud ones all at once.

    They give each gateway live measurements of both deployments (at least the predictor's 5),
    so no arm starts a round on its priors alone. The local ones, alone on the runtime, also say
    how fast the machine is right now: their latencies (seconds) are returned with the errors.
    """
    errors: Counter[str] = Counter()
    arrivals = trace.arrivals[: s.warmup if n is None else n]
    local: list[float] = []

    async def one(cls: str, i: int, a: Arrival) -> None:
        payload = request_bytes(env.port, a, cls, f"warmup.{env.arm}.{rnd}.{cls}.{i}")
        reply, _ = await send_one(env, payload, s.timeout)
        error = reply.error or (None if reply.status == 200 else f"http_{reply.status}")
        error = error or check_stream(reply.body)[0]
        if error is not None:
            errors[f"{env.arm}:{cls}:{error}"] += 1
        elif cls == "warm-local":
            local.append(reply.latency)

    for i, a in enumerate(arrivals):
        await one("warm-local", i, a)
    if cloud:
        await asyncio.gather(*(one("warm-cloud", i, a) for i, a in enumerate(arrivals)))
    return errors, local


async def preflight(envs: Sequence[ArmEnv], cloud_port: int) -> None:
    """The sandbox and every gateway answer ``GET /v1/models``; each gateway lists the model."""
    try:
        async with asyncio.timeout(15):
            status, _ = await h.http_get(cloud_port, "/v1/models")
            if status != 200:
                raise RuntimeError(f"preflight failed: sandbox /v1/models answered {status}")
            for env in envs:
                status, body = await h.http_get(env.port, "/v1/models")
                if status != 200 or f'"{MODEL}"'.encode() not in body:
                    raise RuntimeError(
                        f"preflight failed: {env.arm} gateway /v1/models {status} {body[:300]!r}"
                    )
    except (OSError, TimeoutError) as exc:
        raise RuntimeError(f"preflight failed: {type(exc).__name__}: {exc}") from exc


async def executor_counters(port: int) -> dict[str, float]:
    """The gateway's executor counters (failovers, breaker skips...) from ``/metrics``."""
    async with asyncio.timeout(10):
        status, body = await h.http_get(port, "/metrics")
    out: dict[str, float] = {}
    if status != 200:
        return out
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("hybridgate_executor_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


class CpuMeter:
    """CPU of each gateway tree (gateway + llama.cpp worker), the sandbox, the driver, and the rest."""

    def __init__(self, roots: Mapping[str, int]) -> None:
        self.roots = roots
        self._t0 = 0.0
        self._proc0 = 0.0
        self._cpu0: dict[str, float] = {}
        self._trees: dict[str, list[int]] = {}
        self._cores0: dict[str, tuple[int, int, int]] = {}

    def start(self) -> None:
        self._trees = {name: h.process_tree([pid]) for name, pid in self.roots.items()}
        self._cpu0 = {name: h.cpu_seconds(tree) for name, tree in self._trees.items()}
        self._cores0 = h.core_times()
        self._proc0 = time.process_time()
        self._t0 = h.perf()

    def stop(self) -> dict[str, float]:
        wall = max(h.perf() - self._t0, 1e-9)
        out = {name: (h.cpu_seconds(tree) - self._cpu0[name]) / wall for name, tree in self._trees.items()}
        out["driver"] = (time.process_time() - self._proc0) / wall
        out["other"] = max(0.0, h.busy_cores(self._cores0) - sum(out.values()))
        return {k: round(v, 3) for k, v in out.items()}


# --------------------------------------------------------------------------- decision log
def read_decisions(path: Path) -> dict[str, dict[str, Any]]:
    """The gateway's decision-log records by tenant (= the request's tag)."""
    out: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(OSError), path.open("rb") as f:
        for line in f:
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict) and isinstance(record.get("tenant"), str):
                    out[record["tenant"]] = record
    return out


def attach_decision(result: Result, record: Mapping[str, Any] | None) -> None:
    """What the planner predicted for ``local`` when it planned this request, and the attempts."""
    if record is None:
        return
    plan = record.get("plan") or {}
    order = plan.get("order") or []
    result.plan_first = order[0] if order else None
    result.attempts = [
        f"{a.get('deployment')}:{a.get('error') or 'ok'}" for a in record.get("attempts") or []
    ]
    for verdict in plan.get("candidates") or []:
        if verdict.get("predicted_p95_ms") is None:  # dropped from the plan: nothing predicted
            if verdict.get("deployment") == "local":
                result.local_rejected = str(verdict.get("reason"))
            continue
        if verdict.get("deployment") == "local":
            result.local_pred_wait_ms = verdict.get("queue_wait_ms")
            result.local_pred_p95_ms = verdict.get("predicted_p95_ms")
            result.local_pred_ttft_p95_ms = verdict.get("predicted_ttft_p95_ms")
            result.local_meets = verdict.get("meets_budget")
        elif verdict.get("deployment") == "cloud":
            result.cloud_pred_p95_ms = verdict.get("predicted_p95_ms")
            result.cloud_pred_ttft_p95_ms = verdict.get("predicted_ttft_p95_ms")
            result.cloud_meets = verdict.get("meets_budget")


def left_local_because(r: Result) -> str | None:
    """Why a request served by the cloud did not stay local (None if it did, or was not served)."""
    if r.outcome != "served" or r.deployment != "cloud":
        return None
    local_attempts = [a for a in r.attempts if a.startswith("local:")]
    if local_attempts:
        kind = local_attempts[-1].split(":", 1)[1]
        return {"overloaded": "429", "timeout": "timeout"}.get(kind, "other_error")
    if r.local_rejected is not None:
        return "breaker" if r.local_rejected.startswith("circuit_open") else "other_error"
    if r.plan_first == "cloud":
        return "planned"
    # Planned local first but never attempted there: the executor skipped it (breaker half-open,
    # its one trial taken by another request).
    return "breaker" if r.plan_first == "local" else "unknown"


# --------------------------------------------------------------------------- analysis
def _share(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def _ms_summary(values: Iterable[float | None]) -> dict[str, float]:
    """n, p50, p95, p99, max and mean in milliseconds, of samples in seconds (None skipped)."""
    ms = sorted(v * 1000.0 for v in values if v is not None)
    if not ms:
        return {"n": 0}
    out: dict[str, float] = {"n": len(ms)}
    out |= {f"p{q}": round(h.percentile(ms, q), 1) for q in (50, 95, 99)}
    return out | {"max": round(ms[-1], 1), "mean": round(sum(ms) / len(ms), 1)}


def summarize(results: Sequence[Result], s: Settings) -> dict[str, Any]:
    """Budget, latency, placement and spill reasons over a set of requests of one arm."""
    n = len(results)
    served = [r for r in results if r.outcome == "served"]
    local = [r for r in served if r.deployment == "local"]
    reasons = Counter(x for r in results if (x := left_local_because(r)) is not None)
    return {
        "requests": n,
        "served": len(served),
        "refused": sum(r.outcome == "refused" for r in results),
        "errors": sum(r.outcome == "error" for r in results),
        "met_share": _share(sum(r.met for r in results), n),
        "met_p95_share": _share(
            sum(r.latency is not None and r.latency * 1000 <= s.p95_ms for r in served), n
        ),
        "met_ttft_share": _share(sum(r.ttft is not None and r.ttft * 1000 <= s.ttft_ms for r in served), n),
        "local_share": _share(len(local), n),
        "cloud_share": _share(len(served) - len(local), n),
        "latency_ms": _ms_summary(r.latency for r in served),
        "ttft_ms": _ms_summary(r.ttft for r in served),
        "local_latency_ms": _ms_summary(r.latency for r in local),
        "cloud_latency_ms": _ms_summary(r.latency for r in served if r.deployment == "cloud"),
        "left_local": dict(reasons),
        "driver_lateness_ms": _ms_summary(r.lateness for r in results),
    }


def prediction_check(results: Sequence[Result]) -> dict[str, Any]:
    """How the planner's predictions for ``local`` compare with what local requests then took.

    For requests served locally at the first attempt: the measured time to first token is the
    queue wait plus a few ms of prefill, so it is compared with the predicted queue wait; the
    measured latency with the predicted p95 (at most ~5% should exceed it). For requests the
    planner sent to the cloud: the predicted local p95 that made it spill.
    """
    ran_local = [
        r
        for r in results
        if r.outcome == "served"
        and r.deployment == "local"
        and r.attempts == ["local:ok"]
        and r.local_pred_p95_ms is not None
        and r.latency is not None
        and r.ttft is not None
    ]
    planned_cloud = [r for r in results if left_local_because(r) == "planned"]
    out: dict[str, Any] = {"local_requests": len(ran_local), "planned_spills": len(planned_cloud)}
    if ran_local:
        over = sum(r.latency is not None and r.latency * 1000 > (r.local_pred_p95_ms or 0) for r in ran_local)
        errors = sorted(
            (r.local_pred_wait_ms or 0.0) - (r.ttft or 0.0) * 1000 for r in ran_local if r.ttft is not None
        )
        ratio = sorted((r.latency or 0.0) * 1000 / max(r.local_pred_p95_ms or 0.0, 1e-3) for r in ran_local)
        out.update(
            share_over_predicted_p95=_share(over, len(ran_local)),
            latency_over_predicted_p95_p50=round(h.percentile(ratio, 50), 3),
            wait_overprediction_ms={
                "p10": round(h.percentile(errors, 10), 1),
                "p50": round(h.percentile(errors, 50), 1),
                "p90": round(h.percentile(errors, 90), 1),
            },
            predicted_wait_ms=_pct([r.local_pred_wait_ms for r in ran_local]),
            measured_ttft_ms=_pct([(r.ttft or 0.0) * 1000 for r in ran_local]),
            predicted_p95_ms=_pct([r.local_pred_p95_ms for r in ran_local]),
            measured_latency_ms=_pct([(r.latency or 0.0) * 1000 for r in ran_local]),
        )
    if planned_cloud:
        out["planned_spill_local_pred_p95_ms"] = _pct([r.local_pred_p95_ms for r in planned_cloud])
        out["planned_spill_local_pred_wait_ms"] = _pct([r.local_pred_wait_ms for r in planned_cloud])
    return out


def _pct(values: Iterable[float | None]) -> dict[str, float]:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return {}
    return {f"p{q}": round(h.percentile(ordered, q), 1) for q in (10, 50, 90)}


def by_phase(results: Sequence[Result]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for phase in ("calm", "burst"):
        rs = [r for r in results if r.phase == phase]
        out[phase] = {
            "requests": len(rs),
            "met_share": _share(sum(r.met for r in rs), len(rs)),
            "local_share": _share(sum(r.deployment == "local" for r in rs), len(rs)),
        }
    return out


def ratios(rounds: Sequence[dict[str, Any]], arms: Sequence[str]) -> dict[str, Any]:
    """spill / failover: pooled, and per round (median and [min..max])."""
    if "spill" not in arms or "failover" not in arms:
        return {}
    out: dict[str, Any] = {}
    for key, path in (
        ("met_share", ("met_share",)),
        ("local_share", ("local_share",)),
        ("latency_p95", ("latency_ms", "p95")),
        ("latency_p50", ("latency_ms", "p50")),
    ):
        per_round = []
        for rnd in rounds:
            a, b = _dig(rnd["arms"].get("spill"), path), _dig(rnd["arms"].get("failover"), path)
            if a is not None and b:
                per_round.append(a / b)
        if per_round:
            out[key] = {
                "round_median": round(h.median(per_round), 3),
                "round_min": round(min(per_round), 3),
                "round_max": round(max(per_round), 3),
                "rounds": [round(x, 3) for x in per_round],
            }
    return out


def _dig(obj: Any, path: Sequence[str]) -> float | None:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return float(obj) if isinstance(obj, int | float) else None


def pooled_ratio(arms: Mapping[str, dict[str, Any]], path: Sequence[str]) -> float | None:
    a, b = _dig(arms.get("spill"), path), _dig(arms.get("failover"), path)
    return round(a / b, 3) if a is not None and b else None


def checks(results: Sequence[Result], warmup_errors: Counter[str], log_missing: int) -> dict[str, Any]:
    errors = Counter(f"{r.arm}:{r.error}" for r in results if r.outcome == "error")
    total = sum(errors.values()) + sum(warmup_errors.values())
    return {
        "requests": len(results),
        "errors_total": total,
        "errors": dict(errors),
        "warmup_errors": dict(warmup_errors),
        "missing_decision_records": log_missing,
        "ok": total == 0,
    }


def targets_verdict(report: dict[str, Any], s: Settings) -> dict[str, Any]:
    """Printed, never asserted: spill meets the budget at least as often as failover, and for at
    least 95% of requests (the budget is a p95), while keeping most of the calm traffic local."""
    arms = report["arms"]
    out: dict[str, Any] = {}
    spill, failover = arms.get("spill"), arms.get("failover")
    if spill is not None:
        value = spill["met_share"]
        out["spill_met_share"] = {"value": value, "limit": 0.95, "met": value is not None and value >= 0.95}
        calm_local = report["by_phase"]["spill"]["calm"]["local_share"]
        out["spill_calm_local_share"] = {
            "value": calm_local,
            "limit": 0.9,
            "met": calm_local is not None and calm_local >= 0.9,
        }
    if spill is not None and failover is not None:
        ratio = report["ratios"].get("met_share_pooled")
        out["met_share_ratio"] = {"value": ratio, "limit": 1.0, "met": ratio is not None and ratio >= 1.0}
    return out


def warnings_for(report: dict[str, Any], s: Settings) -> list[str]:
    out: list[str] = []
    for arm, summary in report["arms"].items():
        late = summary["driver_lateness_ms"].get("p99")
        if late is not None and late > 50:
            out.append(f"{arm}: the driver sent 1% of requests more than {late:.0f} ms late (not open loop)")
    busy = [c["other"] for rnd in report["rounds"] for c in rnd["cpu"].values()]
    if busy and max(busy) >= 0.25:
        out.append(
            f"other processes used up to {max(busy):.2f} CPU during a round: the machine was shared; "
            "compare the arms side by side only"
        )
    c = report["checks"]
    if c["errors_total"]:
        out.append(f"{c['errors_total']} failed requests: {c['errors']} {c['warmup_errors']}")
    if c["missing_decision_records"]:
        out.append(f"{c['missing_decision_records']} requests have no decision-log record")
    if report["meta"].get("gateway_log_problems"):
        out.append(f"gateway logs have {len(report['meta']['gateway_log_problems'])} error lines (see JSON)")
    return out


# --------------------------------------------------------------------------- orchestration
CALIBRATION_REQUESTS = 12


async def calibrate(env: ArmEnv, s: Settings) -> tuple[Settings, dict[str, Any]]:
    """The arrival rates, as loads of the local runtime measured now: requests of the trace's
    sizes sent to it one at a time give its capacity (1 / their median latency); calm and burst
    arrive at ``calm_load`` and ``burst_load`` times that, unless a rate was given. So the
    bursts overload the runtime as much on a fast machine as on a slow one (with fixed rates, a
    machine twice as fast barely queues, and every arm meets the budget)."""
    info: dict[str, Any] = {"requests": 0, "local_alone_p50_ms": None, "capacity_per_s": None}
    if s.calm_rate is None or s.burst_rate is None:
        rng = random.Random(s.seed * 1000 + 999)
        sizes = tuple(_request(rng, 0.0, "calm", s) for _ in range(CALIBRATION_REQUESTS))
        trace = Trace(rng.randrange(1 << 30), 0.0, sizes)
        errors, alone = await warm_up(env, trace, -1, s, len(sizes), cloud=False)
        if errors or not alone:
            raise RuntimeError(f"the local runtime's capacity could not be measured: {dict(errors)}")
        service = h.median(alone)
        capacity = 1.0 / service
        info = {
            "requests": len(alone),
            "local_alone_p50_ms": round(1000 * service, 1),
            "capacity_per_s": round(capacity, 2),
        }
        s = dataclasses.replace(
            s,
            calm_rate=round(s.calm_rate or s.calm_load * capacity, 3),
            burst_rate=round(s.burst_rate or s.burst_load * capacity, 3),
        )
    info |= {"calm_rate": s.calm_rate, "burst_rate": s.burst_rate}
    return s, info


async def measure(
    envs: Sequence[ArmEnv], meter_roots: Mapping[str, int], cloud_port: int, s: Settings
) -> dict[str, Any]:
    """Every round: every arm (order flipping per round) warms up, then replays the round's trace."""
    await preflight(envs, cloud_port)
    local_only = [e for e in envs if e.arm == "local-only"]
    s, calibration = await calibrate((local_only or envs)[0], s)
    _progress(
        f"calibration: local alone p50 {calibration['local_alone_p50_ms']} ms, capacity "
        f"{calibration['capacity_per_s']}/s -> calm {s.calm_rate:g}/s, bursts {s.burst_rate:g}/s"
    )
    by_arm = {e.arm: e for e in envs}
    results: list[Result] = []
    rounds: list[dict[str, Any]] = []
    warm_errors: Counter[str] = Counter()
    counters: dict[str, dict[str, float]] = {e.arm: await executor_counters(e.port) for e in envs}
    try:
        async with asyncio.timeout(s.max_seconds):
            for rnd in range(s.rounds):
                trace = make_trace(s.seed * 1000 + rnd, s)
                warm = make_trace(s.seed * 1000 + 500 + rnd, s)
                order = list(s.arms) if rnd % 2 == 0 else list(reversed(s.arms))
                entry: dict[str, Any] = {"round": rnd, "order": order, "trace": trace.summary(), "arms": {}}
                entry["cpu"], entry["warmup_local_ms"] = {}, {}
                for arm in order:
                    env = by_arm[arm]
                    errors, alone = await warm_up(env, warm, rnd, s)
                    warm_errors.update(errors)
                    entry["warmup_local_ms"][arm] = _ms_summary(alone)
                    meter = CpuMeter(meter_roots)
                    meter.start()
                    got = await replay(env, trace, rnd, s)
                    entry["cpu"][arm] = meter.stop()
                    results.extend(got)
                    _progress(_round_line(rnd, arm, got, entry))
                    await asyncio.sleep(s.gap_s)
                rounds.append(entry)
    finally:
        for env in envs:
            env.pool.close()
    after = {e.arm: await executor_counters(e.port) for e in envs}
    executor = {
        arm: {k: round(v - counters[arm].get(k, 0.0), 3) for k, v in after[arm].items()} for arm in after
    }
    return {
        "results": results,
        "rounds": rounds,
        "warm_errors": warm_errors,
        "executor": executor,
        "settings": s,
        "calibration": calibration,
    }


def _round_line(rnd: int, arm: str, got: Sequence[Result], entry: Mapping[str, Any]) -> str:
    n = len(got)
    met = sum(r.met for r in got)
    local = sum(r.deployment == "local" for r in got)
    errors = sum(r.outcome == "error" for r in got)
    lat = sorted(r.latency for r in got if r.latency is not None)
    p95 = f"{h.percentile(lat, 95) * 1000:.0f}" if lat else "-"
    alone = entry["warmup_local_ms"][arm].get("p50")
    cpu = entry["cpu"][arm]
    return (
        f"round {rnd} {arm:10s} {n} requests: met budget {met / n:.0%}, local {local / n:.0%}, "
        f"p95 {p95} ms, errors {errors}; local alone p50 {_f(alone)} ms, other CPU {cpu['other']:.2f}"
        if n
        else f"round {rnd} {arm}: empty trace"
    )


def run_benchmark(s: Settings) -> dict[str, Any]:
    """Start the sandbox and one gateway per arm, measure, and stop them all (whatever happens)."""
    with tempfile.TemporaryDirectory(prefix="hybridgate-spill-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        model = ensure_model(s, work)
        s_model = dataclasses.replace(s, model=model)
        cloud = stack.enter_context(
            h.Child("sandbox", sandbox_command(s.seed), work / "sandbox.log", SANDBOX_READY)
        )
        cloud_port = int(cloud.start(timeout=60).group(1))
        children: dict[str, h.Child] = {}
        decisions: dict[str, Path] = {}
        for arm in s.arms:
            config = work / f"gateway-{arm}.yaml"
            decisions[arm] = work / f"decisions-{arm}.jsonl"
            config.write_bytes(gateway_config(arm, s_model, cloud_port, decisions[arm]))
            children[arm] = stack.enter_context(
                h.Child(
                    f"gateway[{arm}]", gateway_command(config), work / f"gateway-{arm}.log", GATEWAY_READY
                )
            )
        # One after another, from this thread: a child's PR_SET_PDEATHSIG fires when the *thread*
        # that started it ends, so they cannot be started from a thread pool.
        ports = {arm: int(child.start(timeout=120).group(1)) for arm, child in children.items()}
        envs = [ArmEnv(arm, children[arm].pid, ports[arm], decisions[arm]) for arm in s.arms]
        _progress(
            f"sandbox pid {cloud.pid} port {cloud_port}; "
            + "; ".join(f"{e.arm} gateway pid {e.pid} port {e.port}" for e in envs)
        )
        roots = {f"gateway[{e.arm}]": e.pid for e in envs} | {"sandbox": cloud.pid}
        began = time.time()
        with asyncio.Runner(loop_factory=h.loop_factory()) as runner:
            measured = runner.run(measure(envs, roots, cloud_port, s))
        s = measured["settings"]  # the arrival rates calibrated on the local runtime
        problems: list[str] = []
        for arm, child in children.items():
            child.stop()  # SIGTERM: graceful, so the decision log is flushed
            problems += [f"{arm}: {line}" for line in h.log_problems(child.log_tail(500_000))]
        return build_report(s, measured, envs, decisions, began, problems, model)


def build_report(
    s: Settings,
    measured: dict[str, Any],
    envs: Sequence[ArmEnv],
    decisions: Mapping[str, Path],
    began: float,
    problems: list[str],
    model: Path,
) -> dict[str, Any]:
    results: list[Result] = measured["results"]
    missing = 0
    for env in envs:
        records = read_decisions(decisions[env.arm])
        for r in results:
            if r.arm == env.arm:
                record = records.get(r.tag)
                if record is None and r.outcome == "served":
                    missing += 1
                attach_decision(r, record)
    for entry in measured["rounds"]:
        for arm in s.arms:
            rs = [r for r in results if r.arm == arm and r.round == entry["round"]]
            entry["arms"][arm] = summarize(rs, s)
    arms = {arm: summarize([r for r in results if r.arm == arm], s) for arm in s.arms}
    for arm, summary in arms.items():  # how fast the machine was while this arm ran
        alone = [p for e in measured["rounds"] if (p := e["warmup_local_ms"][arm].get("p50")) is not None]
        summary["local_alone_p50_ms"] = round(h.median(alone), 1) if alone else None
        other = [e["cpu"][arm]["other"] for e in measured["rounds"]]
        summary["other_cpu"] = round(sum(other) / len(other), 3) if other else None
    ratio = ratios(measured["rounds"], s.arms)
    if ratio:
        ratio["met_share_pooled"] = pooled_ratio(arms, ("met_share",))
        ratio["local_share_pooled"] = pooled_ratio(arms, ("local_share",))
        ratio["latency_p95_pooled"] = pooled_ratio(arms, ("latency_ms", "p95"))
    report: dict[str, Any] = {
        "meta": _meta(s, envs, began, problems, model),
        "arms": arms,
        "by_phase": {arm: by_phase([r for r in results if r.arm == arm]) for arm in s.arms},
        "ratios": ratio,
        "prediction": {arm: prediction_check([r for r in results if r.arm == arm]) for arm in s.arms},
        "executor": measured["executor"],
        "calibration": measured["calibration"],
        "rounds": measured["rounds"],
        "checks": checks(results, measured["warm_errors"], missing),
        "requests": [_result_json(r) for r in results],
    }
    report["targets"] = targets_verdict(report, s)
    report["warnings"] = warnings_for(report, s)
    return report


def _result_json(r: Result) -> dict[str, Any]:
    out = asdict(r)
    for key in ("t", "lateness", "latency", "ttft"):
        if out[key] is not None:
            out[key] = round(out[key], 4)
    return out


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _meta(
    s: Settings, envs: Sequence[ArmEnv], began: float, problems: list[str], model: Path
) -> dict[str, Any]:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}
    return {
        "schema": SCHEMA,
        "started_unix": round(began, 3),
        "finished_unix": round(time.time(), 3),
        "argv": sys.argv[1:],
        "settings": settings,
        "model": str(model),
        "budget_ms": {"p95": s.p95_ms, "p99": s.p99_ms, "ttft": s.ttft_ms},
        "priors": {"local": LOCAL_PRIORS, "cloud": CLOUD_PRIORS},
        "hybridgate_version": _version("hybridgate"),
        "llama_cpp_python": _version("llama_cpp_python"),
        "python": platform.python_version(),
        "event_loop": h.loop_name(),
        "kernel": platform.release(),
        "cpu_model": h.cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_end": h.load_average(),
        "processes": {e.arm: {"gateway_pid": e.pid, "port": e.port} for e in envs},
        "gateway_log_problems": problems[:20],
    }


# --------------------------------------------------------------------------- output
def _pc(value: Any) -> str:
    return "-" if value is None else f"{value:.1%}"


def _f(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def arms_table(report: dict[str, Any], s: Settings) -> Table:
    budget = f"p95 {s.p95_ms:.0f} ms and first token {s.ttft_ms:.0f} ms"
    table = Table(title=f"bursty local-first workload, every request judged against {budget}")
    for col in ("arm", "requests", "met budget", "met p95", "met ttft", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for col in ("ttft p95 ms", "local", "left local: planned/429/timeout/breaker", "refused", "errors"):
        table.add_column(col, justify="right")
    table.add_column("alone p50 ms", justify="right", style="dim")
    table.add_column("other CPU", justify="right", style="dim")
    for arm, a in report["arms"].items():
        lat, ttft, why = a["latency_ms"], a["ttft_ms"], a["left_local"]
        table.add_row(
            arm, str(a["requests"]), _pc(a["met_share"]), _pc(a["met_p95_share"]), _pc(a["met_ttft_share"]),
            _f(lat.get("p50")), _f(lat.get("p95")), _f(lat.get("p99")), _f(ttft.get("p95")),
            _pc(a["local_share"]),
            f"{why.get('planned', 0)}/{why.get('429', 0)}/{why.get('timeout', 0)}/{why.get('breaker', 0)}",
            str(a["refused"]), str(a["errors"]), _f(a["local_alone_p50_ms"]), _f(a["other_cpu"], 2),
        )  # fmt: skip
    return table


def phase_table(report: dict[str, Any]) -> Table:
    table = Table(title="by phase: share meeting the budget / share served locally")
    table.add_column("arm")
    for col in ("calm met", "calm local", "burst met", "burst local"):
        table.add_column(col, justify="right")
    for arm, p in report["by_phase"].items():
        table.add_row(
            arm, _pc(p["calm"]["met_share"]), _pc(p["calm"]["local_share"]),
            _pc(p["burst"]["met_share"]), _pc(p["burst"]["local_share"]),
        )  # fmt: skip
    return table


def ratio_table(report: dict[str, Any]) -> Table:
    table = Table(title="spill / failover (pooled; per-round median [min..max])")
    for col in ("measure", "pooled", "round median [min..max]"):
        table.add_column(col, justify="right")
    r = report["ratios"]
    for label, key in (
        ("met budget share", "met_share"),
        ("local share", "local_share"),
        ("latency p95", "latency_p95"),
    ):
        per = r.get(key, {})
        spread = (
            f"{_f(per.get('round_median'), 3)} [{_f(per.get('round_min'), 3)}..{_f(per.get('round_max'), 3)}]"
        )
        table.add_row(label, _f(r.get(f"{key}_pooled"), 3), spread)
    return table


def prediction_table(report: dict[str, Any]) -> Table:
    table = Table(
        title="planner's local predictions vs what local requests took (first attempt local, ms p10/p50/p90)"
    )
    for col in ("arm", "local reqs", "pred wait", "measured ttft", "pred p95", "measured", "over pred p95"):
        table.add_column(col, justify="right")
    table.add_column("local pred p95 when it spilled", justify="right")

    def trio(d: Mapping[str, float] | None) -> str:
        return "-" if not d else f"{d['p10']:.0f}/{d['p50']:.0f}/{d['p90']:.0f}"

    for arm, p in report["prediction"].items():
        table.add_row(
            arm, str(p["local_requests"]), trio(p.get("predicted_wait_ms")), trio(p.get("measured_ttft_ms")),
            trio(p.get("predicted_p95_ms")), trio(p.get("measured_latency_ms")),
            _pc(p.get("share_over_predicted_p95")), trio(p.get("planned_spill_local_pred_p95_ms")),
        )  # fmt: skip
    return table


def print_report(report: dict[str, Any], path: Path, console: Console, s: Settings) -> None:
    meta = report["meta"]
    console.print(
        f"[bold]hybridgate {meta['hybridgate_version']} spillover[/] ({s.preset} run: {s.rounds} round(s) "
        f"x {len(s.arms)} arms), {meta['cpu_model']}, {meta['cpu_count']} cores, llama-cpp-python "
        f"{meta['llama_cpp_python']}, {Path(meta['model']).name} on {s.threads} thread(s), local queue "
        f"{s.max_queue}; cloud: sandbox cloud-typical; not pinned"
    )
    trace = report["rounds"][0]["trace"] if report["rounds"] else {}
    console.print(
        f"trace per round: {trace.get('requests')} requests over {trace.get('duration_s')} s "
        f"(calm {s.calm_rate:g}/s, {s.bursts} burst(s) of {s.burst_s:g} s at {s.burst_rate:g}/s), prompts "
        f"{s.prompt_words[0]}-{s.prompt_words[1]} words, "
        f"max_tokens {','.join(map(str, s.max_tokens))}, streamed"
    )
    console.print(arms_table(report, s))
    console.print(phase_table(report))
    if report["ratios"]:
        console.print(ratio_table(report))
    console.print(prediction_table(report))
    c = report["checks"]
    console.print(
        f"checks: {c['requests']} requests, {c['errors_total']} errors -> {'OK' if c['ok'] else 'FAILED'}"
    )
    for key, t in report["targets"].items():
        verdict = "[green]met[/]" if t["met"] else "[red]missed[/]"
        console.print(f"target {key} >= {t['limit']}: {_f(t['value'], 3)} -> {verdict} (not asserted)")
    for w in report["warnings"]:
        console.print(f"[yellow]![/] {w}")
    console.print(f"results: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; see the module docstring for exit statuses."""
    s = parse_args(argv)
    h.sigterm_as_interrupt()
    err = Console(stderr=True)
    try:
        report = run_benchmark(s)
    except KeyboardInterrupt:
        err.print("interrupted: every process started was stopped")
        return 130
    except (RuntimeError, subprocess.SubprocessError) as exc:  # a process did not start, or the preflight
        err.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        return 2
    except TimeoutError:
        err.print(f"[red]error:[/] measurements exceeded --max-seconds {s.max_seconds}")
        return 3
    path = h.write_results(report, s.json_path, s.results_dir, "spillover")
    rates = report["calibration"]
    s = dataclasses.replace(s, calm_rate=rates["calm_rate"], burst_rate=rates["burst_rate"])
    print_report(report, path, Console(soft_wrap=False, width=max(Console().width, 200)), s)
    return 0 if report["checks"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

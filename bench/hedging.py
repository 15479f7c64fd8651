"""Hedged requests on a heavy-tailed cloud: p99 with and without hedging, and what it costs.

Two SANDBOX stand-in clouds (``python -m hybridgate.sandbox``, profile ``cloud-heavy-tail``,
different seeds, time scaled down) are the two cloud deployments of one logical model. Two
``hybridgate serve`` processes route to them with configs that differ in one line: the
workload class has ``hedge: true`` in one and not in the other. An open-loop driver (Poisson
arrivals at a fixed rate) sends every request as a *pair*, one to each gateway at the same
moment (which goes first alternates), so machine noise and the upstreams' state hit both arms
alike. A warm-up fills the gateways' latency predictors first, then the measured requests are
counted, per mode (streamed, then non-streamed).

Per request, from the client: time to the first content token (streams) and to the last byte,
and the gateway's ``x-hybridgate-hedged`` header. Per arm: p50/p95/p99, the ratio hedged /
unhedged and the p99 cut (1 - ratio, with a bootstrap 95% interval), and the extra upstream
requests hedging cost, counted from the sandboxes' own request logs (``/sandbox/stats``; each
arm's deployments send their own upstream model name) as well as from the gateway's metrics.
While it runs it samples each gateway's predicted time-to-first-token p95 per deployment
(``/metrics``): the hedge fires after that delay, so this is the hedge delay actually in use.

Why the heavy-tail profile: one request in ten is slow, its TTFT multiplied by a Pareto factor,
which puts p95 near 16 x and p99 near 50 x the median, like Replicate's row of the llmperf
leaderboard (ray-project/llmperf-leaderboard, Dec 2023, Llama-2-70B: TTFT p50 / p95 / p99 =
1.19 / 24.2 / 63.6 s; see ../shared/data/latency-figures.md). A slow request is slow because
of where it landed, not because of what it asked, so a second copy sent elsewhere is usually
fast: the case for hedged requests ("The Tail at Scale", Dean & Barroso, CACM 2013: send the
backup after the 95th-percentile expected latency, which limits the extra load to about 5%).
The aim from the issue: p99 cut by 40% or more for 5% or fewer extra requests.

Why two gateways rather than two classes on one: each arm must have its own latency predictor
and its own retry budget (which also caps hedges). On one gateway, the unhedged class's samples
would feed the hedged class's predictor, and its requests would enlarge the hedge budget.

Every answer is validated: the sandboxes run in echo mode (the answer repeats the prompt), so
each response must carry exactly the prompt as its content (streams: and end in ``[DONE]``).

Usage::

    python bench/hedging.py --quick    # about 35 s
    python bench/hedging.py            # full run, about 4 minutes

Exit status: 0 when every request was valid and the upstream logs account for every attempt,
1 when not, 2 when a process did not start or failed the preflight, 3 when ``--max-seconds``
ran out, 130 when interrupted. Speed never fails the run: the aim is reported, not asserted.
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

GATEWAY_READY = re.compile(r"hybridgate: listening on http://127\.0\.0\.1:(\d+)")
SANDBOX_READY = re.compile(r"SANDBOX listening on http://127\.0\.0\.1:(\d+)")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA = "hybridgate-bench-hedging/1"
ARMS = ("unhedged", "hedged")
MODES = ("stream", "json")
DEPLOYMENTS = ("a", "b")
MODEL = "bench"
TARGET_P99_CUT = 0.40  # p99 cut by 40% or more ...
TARGET_EXTRA_PCT = 5.0  # ... for 5% or fewer extra upstream requests
PROMPT = (
    "Summarise the state of the warehouse fleet in one short paragraph: which robots are idle, "
    "which are charging, and which need a person to look at them before the next shift starts."
)
_T = TypeVar("_T")

# (warm-up pairs per mode, measured pairs per mode)
PRESETS: dict[str, tuple[int, int]] = {
    "full": (600, 4000),
    "quick": (100, 400),
}


@dataclass(frozen=True)
class Settings:
    """What to run; see :func:`parse_args` for the meaning of each field."""

    preset: str
    modes: tuple[str, ...]
    warmup: int
    requests: int
    rate: float
    time_scale: float
    profile: str
    seed: int
    budget_ratio: float | None
    timeout: float
    metrics_period: float
    bootstrap: int
    max_seconds: float
    json_path: Path | None
    results_dir: Path


# --------------------------------------------------------------------------- set-up
def parse_args(argv: Sequence[str] | None) -> Settings:
    """Command-line flags; explicit sizes override the ``--quick``/full preset."""
    ap = argparse.ArgumentParser(
        prog="hedging.py",
        description="Hedged requests on a heavy-tailed cloud: p99 and extra upstream requests, "
        "side by side with the same gateway unhedged.",
    )
    ap.add_argument(
        "--quick", action="store_true", help="short run (about 35 s) instead of the full one (~4 min)"
    )
    ap.add_argument("--modes", default="stream,json", help="stream, json or both (default stream,json)")
    ap.add_argument("--warmup", type=int, help="discarded request pairs before each mode's measurement")
    ap.add_argument("--requests", type=int, help="measured request pairs per mode (one per arm each)")
    ap.add_argument("--rate", type=float, default=40.0, help="pairs per second, Poisson arrivals (40)")
    ap.add_argument(
        "--time-scale", type=float, default=0.05, help="sandbox latency multiplier (default 0.05)"
    )
    ap.add_argument(
        "--profile", default="cloud-heavy-tail", help="sandbox profile, built-in name or YAML path"
    )
    ap.add_argument("--seed", type=int, default=1, help="seed of the sandboxes (seed, seed+1) and arrivals")
    ap.add_argument(
        "--budget-ratio", type=float, help="resilience.retry.retry_budget_ratio (default: the gateway's)"
    )
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    ap.add_argument("--metrics-period", type=float, default=1.0, help="seconds between /metrics samples")
    ap.add_argument("--bootstrap", type=int, default=400, help="resamples for the p99-cut interval")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="hard stop for all measurements")
    ap.add_argument("--json", type=Path, help="write the JSON results here (default bench/results/...)")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the default JSON goes")
    a = ap.parse_args(argv)
    preset = "quick" if a.quick else "full"
    warmup, requests = PRESETS[preset]
    modes = tuple(m.strip() for m in a.modes.split(",") if m.strip())
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        ap.error("--modes takes stream, json or stream,json")
    if a.rate <= 0 or a.time_scale <= 0:
        ap.error("--rate and --time-scale must be positive")
    return Settings(
        preset=preset,
        modes=modes,
        warmup=max(0, _pick(a.warmup, warmup)),
        requests=max(1, _pick(a.requests, requests)),
        rate=a.rate,
        time_scale=a.time_scale,
        profile=a.profile,
        seed=a.seed,
        budget_ratio=a.budget_ratio,
        timeout=a.timeout,
        metrics_period=a.metrics_period,
        bootstrap=max(0, a.bootstrap),
        max_seconds=a.max_seconds,
        json_path=a.json,
        results_dir=a.results_dir,
    )


def _pick(explicit: _T | None, default: _T) -> _T:
    return default if explicit is None else explicit


def prompt_tokens() -> int:
    """Tokens of the echoed answer: the sandbox echoes one word (with its spacing) per token."""
    return len(re.findall(r"\s*\S+", PROMPT))


def upstream_model(arm: str) -> str:
    """The model name an arm's deployments send upstream: it tells the arms apart in the logs."""
    return f"sandbox-{arm}"


def gateway_config(arm: str, ports: Mapping[str, int], s: Settings) -> bytes:
    """The generated config (JSON, which is valid YAML). The arms differ only in ``hedge``.

    Budgets and deadlines are far above anything the scaled profile produces, so no attempt
    is ever cut by a timeout (which would fail over, a hedge in all but name).
    """
    deployment = {
        "type": "openai",
        "model": upstream_model(arm),
        "placement": "cloud",
        "region": "us",
        "context_window": 8192,
        "timeouts": {"connect": 5, "first_token": 600, "idle": 600, "total": 900},
        # The profile's median TTFT and decode speed, scaled: the predictor's priors.
        "expected": {"ttft_ms": round(500 * s.time_scale, 3), "tokens_per_s": round(85 / s.time_scale, 1)},
    }
    retry: dict[str, Any] = {}
    if s.budget_ratio is not None:
        retry["retry_budget_ratio"] = s.budget_ratio
    config = {
        "version": 1,
        "server": {"host": "127.0.0.1", "port": 0, "auth": {"disabled": True}},
        "classes": {
            "default": {
                "latency": {"p95_ms": 600_000, "p99_ms": 600_000, "ttft_ms": 300_000},
                "placement": "cloud-first",
                "hedge": arm == "hedged",
            }
        },
        "resilience": {"retry": retry},
        "deployments": {
            name: {**deployment, "base_url": f"http://127.0.0.1:{ports[name]}/v1"} for name in DEPLOYMENTS
        },
        "models": {MODEL: {"deployments": list(DEPLOYMENTS)}},
    }
    return orjson.dumps(config, option=orjson.OPT_INDENT_2)


def gateway_command(config: Path) -> list[str]:
    """``hybridgate serve`` from this interpreter's environment, on a free port."""
    script = Path(sys.executable).with_name("hybridgate")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "hybridgate.cli"]
    return [*base, "serve", "-c", str(config), "--port", "0", "--quiet"]


def sandbox_command(s: Settings, seed: int) -> list[str]:
    """One SANDBOX on a free port with the profile, scaled; its log holds every request of a run."""
    log_size = max(10_000, 6 * (s.requests + s.warmup) + 1000)
    return [sys.executable, "-m", "hybridgate.sandbox", "--port", "0", "--profile", s.profile,
            "--seed", str(seed), "--time-scale", repr(s.time_scale), "--log-size", str(log_size)]  # fmt: skip


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- HTTP
async def http_post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    """``POST path`` with a JSON body on a fresh connection: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        raw = await reader.read()
    finally:
        writer.close()
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head_bytes.lower():
        decoded = h.dechunk(payload, 0)
        payload = decoded[0] if decoded else b""
    return int(head_bytes.split(b" ", 2)[1]), payload


async def get_json(port: int, path: str) -> Any:
    async with asyncio.timeout(30.0):
        status, body = await h.http_get(port, path)
    if status != 200:
        raise RuntimeError(f"GET {path} on port {port} answered {status}: {body[:200]!r}")
    return orjson.loads(body)


async def post_json(port: int, path: str, payload: Any) -> Any:
    async with asyncio.timeout(10.0):
        status, body = await http_post(port, path, orjson.dumps(payload))
    if status != 200:
        raise RuntimeError(f"POST {path} on port {port} answered {status}: {body[:200]!r}")
    return orjson.loads(body)


_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """Prometheus text as {(name, labels): value}, labels as written (e.g. ``kind="hedge"``)."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _METRIC.match(line.strip())
        if m is not None:
            with contextlib.suppress(ValueError):
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


async def scrape(port: int) -> dict[tuple[str, str], float]:
    async with asyncio.timeout(10.0):
        status, body = await h.http_get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"gateway /metrics answered {status}")
    return parse_metrics(body.decode(errors="replace"))


EXTRA_KINDS = ("hedge", "hedge_won", "retry", "failover", "continuation", "retry_budget_denied")


def extra_attempts(metrics: Mapping[tuple[str, str], float]) -> dict[str, int]:
    """The executor's counters (``hybridgate_extra_attempts_total``) by kind."""
    return {
        kind: int(metrics.get(("hybridgate_extra_attempts_total", f'kind="{kind}"'), 0.0))
        for kind in EXTRA_KINDS
    }


def ttft_p95_gauges(metrics: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """The time-to-first-token p95 per deployment (seconds) that a stream's hedge waits for: the
    tracked one (``hedge_ttft_p95``), else the predictor's sketch (``ttft_p95``)."""
    out: dict[str, float] = {}
    for d in DEPLOYMENTS:
        label = f'deployment="{d}"'
        v = metrics.get(("hybridgate_deployment_hedge_ttft_p95_seconds", label))
        if v is None:
            v = metrics.get(("hybridgate_deployment_ttft_p95_seconds", label))
        if v is not None:
            out[d] = v
    return out


# --------------------------------------------------------------------------- load client
class HeadConnection(h.HttpConnection):
    """The harness's client connection, also keeping the ``x-hybridgate-*`` response headers."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: dict[str, str] = {}

    def send(self, payload: bytes, stream: bool, timeout: float) -> asyncio.Future[h.Reply]:
        self.headers = {}
        return super().send(payload, stream, timeout)

    def _on_head(self, head: bytes) -> None:
        super()._on_head(head)
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key.startswith(b"x-hybridgate-"):
                self.headers[key.decode()] = value.strip().decode(errors="replace")


class HeadClient(h.Client):
    """A harness client on a :class:`HeadConnection`."""

    async def connect(self) -> None:
        if self.conn is not None:
            self.reconnects += 1
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            _, self.conn = await loop.create_connection(HeadConnection, self.target.host, self.target.port)

    def last_headers(self) -> dict[str, str]:
        return dict(self.conn.headers) if isinstance(self.conn, HeadConnection) else {}


class Pool:
    """Keep-alive clients of one target: an open-loop driver needs as many as are in flight."""

    def __init__(self, target: h.Target, ledger: h.Ledger, timeout: float) -> None:
        self.target = target
        self.ledger = ledger
        self.timeout = timeout
        self.idle: list[tuple[HeadClient, float]] = []  # (client, when it was last used), LIFO
        self.opened = 0

    async def call(self, stream: bool) -> tuple[h.Reply, dict[str, str]]:
        client = None
        while self.idle and client is None:
            candidate, used_at = self.idle.pop()
            if h.perf() - used_at < h.KEEPALIVE_EXPIRY_S:
                client = candidate
            else:
                candidate.close()
        if client is None:
            client = self._new()
        try:
            reply = await client.call(stream)
            return reply, client.last_headers()
        finally:
            self.idle.append((client, h.perf()))

    def _new(self) -> HeadClient:
        self.opened += 1
        return HeadClient(self.target, self.ledger, self.timeout)

    def close(self) -> None:
        for client, _ in self.idle:
            client.close()


@dataclass(slots=True)
class Sample:
    """One request as the client saw it."""

    arm: str
    sent_at_s: float  # since the phase started
    total_s: float
    ttft_s: float | None
    error: str | None
    hedged: bool
    deployment: str | None
    route: str | None
    attempts: int | None


@dataclass
class Phase:
    """The requests of one phase, and how late the driver sent them."""

    samples: list[Sample] = field(default_factory=list)
    max_lag_s: float = 0.0
    wall_s: float = 0.0


async def drive(
    pools: Mapping[str, Pool], stream: bool, pairs: int, rate: float, rng: random.Random
) -> Phase:
    """Open loop: Poisson arrivals at ``rate``; each arrival sends one request to each arm at once."""
    phase = Phase()
    tasks: set[asyncio.Task[None]] = set()
    t0 = h.perf()

    async def one(arm: str) -> None:
        reply, headers = await pools[arm].call(stream)
        attempts = headers.get("x-hybridgate-attempts")
        phase.samples.append(
            Sample(
                arm=arm,
                sent_at_s=reply.t_start - t0,
                total_s=reply.latency,
                ttft_s=reply.ttft,
                error=reply.error,
                hedged=headers.get("x-hybridgate-hedged") == "1",
                deployment=headers.get("x-hybridgate-deployment"),
                route=headers.get("x-hybridgate-route"),
                attempts=int(attempts) if attempts and attempts.isdigit() else None,
            )
        )

    due = t0
    for pair in range(pairs):
        wait = due - h.perf()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            phase.max_lag_s = max(phase.max_lag_s, -wait)
        for arm in ARMS if pair % 2 == 0 else ARMS[::-1]:
            task = asyncio.create_task(one(arm))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        due += rng.expovariate(rate)
    while tasks:
        await asyncio.gather(*list(tasks))
    phase.wall_s = h.perf() - t0
    return phase


# --------------------------------------------------------------------------- statistics
def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    """n, p50, p90, p95, p99, p99.9, max and mean in milliseconds."""
    if not values_s:
        return {"n": 0}
    ms = sorted(v * 1000.0 for v in values_s)
    out: dict[str, float] = {"n": len(ms)}
    for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p99_9", 99.9)):
        out[name] = round(h.percentile(ms, q), 3)
    out["max"] = round(ms[-1], 3)
    out["mean"] = round(sum(ms) / len(ms), 3)
    return out


def p99_cut_interval(
    unhedged: Sequence[float], hedged: Sequence[float], resamples: int, rng: random.Random
) -> tuple[float, float] | None:
    """Bootstrap 95% interval of 1 - p99(hedged) / p99(unhedged) (each arm resampled)."""
    if resamples < 20 or len(unhedged) < 2 or len(hedged) < 2:
        return None
    cuts = []
    for _ in range(resamples):
        u = h.percentile(sorted(rng.choices(unhedged, k=len(unhedged))), 99)
        g = h.percentile(sorted(rng.choices(hedged, k=len(hedged))), 99)
        cuts.append(1.0 - g / u if u > 0 else 0.0)
    cuts.sort()
    return round(h.percentile(cuts, 2.5), 4), round(h.percentile(cuts, 97.5), 4)


def compare(by_arm: Mapping[str, Sequence[float]], resamples: int, rng: random.Random) -> dict[str, Any]:
    """Per arm summaries, hedged / unhedged ratios, and the p99 cut with its interval."""
    summaries = {arm: summary_ms(by_arm[arm]) for arm in ARMS}
    u, g = summaries["unhedged"], summaries["hedged"]
    out: dict[str, Any] = dict(summaries)
    if not u.get("n") or not g.get("n"):
        return out
    out["ratio"] = {q: round(g[q] / u[q], 4) if u[q] else None for q in ("p50", "p95", "p99", "p99_9")}
    out["p99_cut"] = round(1.0 - g["p99"] / u["p99"], 4) if u["p99"] else None
    interval = p99_cut_interval(by_arm["unhedged"], by_arm["hedged"], resamples, rng)
    out["p99_cut_95ci"] = list(interval) if interval else None
    return out


def replay_p95_hedge(latencies_s: Sequence[float], rng: random.Random) -> dict[str, Any]:
    """A model, not a measurement: the unhedged arm's own samples, hedged at their p95.

    Each sample slower than the p95 gets a backup after the p95, whose latency is drawn from the
    same samples; the request takes whichever is first. This is what hedging at a correctly
    predicted p95 would do on this upstream, with no gateway in the loop: it separates "the
    gateway predicted the hedge delay badly" from "a p95 hedge cannot meet the aim here".
    """
    if len(latencies_s) < 20:
        return {}
    ordered = sorted(latencies_s)
    delay = h.percentile(ordered, 95)
    hedged = [t if t <= delay else min(t, delay + rng.choice(latencies_s)) for t in latencies_s]
    p99, hedged_p99 = h.percentile(ordered, 99), h.percentile(sorted(hedged), 99)
    return {
        "hedge_after_ms": round(delay * 1000, 3),
        "extra_pct": round(100.0 * sum(t > delay for t in latencies_s) / len(latencies_s), 3),
        "p99_ms": round(p99 * 1000, 3),
        "hedged_p99_ms": round(hedged_p99 * 1000, 3),
        "p99_cut": round(1.0 - hedged_p99 / p99, 4) if p99 else None,
    }


def sandbox_view(stats: Sequence[Mapping[str, Any]], arm: str) -> dict[str, Any]:
    """What the upstreams saw of one arm: requests, outcomes, slow draws, planned TTFT."""
    model = upstream_model(arm)
    records = [r for snapshot in stats for r in snapshot["requests"] if r.get("model") == model]
    planned = [r["planned_ttft_s"] for r in records if r.get("planned_ttft_s") is not None]
    per_sandbox = [sum(1 for r in snapshot["requests"] if r.get("model") == model) for snapshot in stats]
    return {
        "requests": len(records),
        "per_deployment": dict(zip(DEPLOYMENTS, per_sandbox, strict=True)),
        "outcomes": dict(Counter(r.get("outcome") for r in records)),
        "slow_drawn": sum(1 for r in records if r.get("slow")),
        "planned_ttft_ms": summary_ms(planned),
    }


def gauge_summary(samples: Sequence[Mapping[str, Any]], arm: str) -> dict[str, dict[str, float]]:
    """min / median / max of an arm's predicted TTFT p95 per deployment over the phase, in ms."""
    out: dict[str, dict[str, float]] = {}
    for d in DEPLOYMENTS:
        values = sorted(
            x["ttft_p95_s"][d] * 1000 for x in samples if x["arm"] == arm and d in x["ttft_p95_s"]
        )
        if values:
            out[d] = {
                "min": round(values[0], 3),
                "median": round(h.percentile(values, 50), 3),
                "max": round(values[-1], 3),
                "samples": len(values),
            }
    return out


# --------------------------------------------------------------------------- orchestration
@dataclass
class Env:
    """The running processes a measurement talks to."""

    sandbox_ports: dict[str, int]
    gateway_ports: dict[str, int]
    pids: dict[str, int]
    ledger: h.Ledger = field(default_factory=h.Ledger)


def cpu_by_process(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process tree, and of this process."""
    out = {name: h.cpu_seconds(h.process_tree([pid])) for name, pid in pids.items()}
    out["driver"] = time.process_time()
    return out


async def preflight(env: Env) -> None:
    """Sandboxes in echo mode; both gateways list the model and answer one request validly."""
    for port in env.sandbox_ports.values():
        await post_json(port, "/sandbox/capture", {"enabled": False, "echo": True})
        info = await get_json(port, "/sandbox/info")
        if not info.get("sandbox"):
            raise RuntimeError(f"port {port} is not a sandbox: {info}")
    for arm, port in env.gateway_ports.items():
        async with asyncio.timeout(10):
            status, body = await h.http_get(port, "/v1/models")
        if status != 200 or f'"{MODEL}"'.encode() not in body:
            raise RuntimeError(f"preflight failed: {arm} gateway /v1/models {status} {body[:300]!r}")


async def measure_mode(env: Env, pools: Mapping[str, Pool], s: Settings, mode: str) -> dict[str, Any]:
    """Warm-up, then the measured pairs of one mode, with what the upstreams and gateways saw."""
    stream = mode == "stream"
    rng = random.Random(f"{s.seed}-{mode}")
    if s.warmup:
        warm = await drive(pools, stream, s.warmup, s.rate, rng)
        bad = [x for x in warm.samples if x.error is not None]
        _progress(f"{mode}: warm-up {len(warm.samples)} requests, {len(bad)} errors")
        if len(bad) == len(warm.samples):
            raise RuntimeError(f"no valid response in the {mode} warm-up; errors: {dict(env.ledger.errors)}")
    for port in env.sandbox_ports.values():
        await post_json(port, "/sandbox/reset", {})
    before = {arm: await scrape(port) for arm, port in env.gateway_ports.items()}
    gauges: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def sample_gauges() -> None:
        t0 = h.perf()
        while not stop.is_set():
            for arm, port in env.gateway_ports.items():
                with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                    metrics = await scrape(port)
                    gauges.append(
                        {"t_s": round(h.perf() - t0, 3), "arm": arm, "ttft_p95_s": ttft_p95_gauges(metrics)}
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), s.metrics_period)

    sampler = asyncio.create_task(sample_gauges())
    cpu0, wall0 = cpu_by_process(env.pids), h.perf()
    try:
        phase = await drive(pools, stream, s.requests, s.rate, rng)
    finally:
        stop.set()
        await sampler
    cpu1, wall = cpu_by_process(env.pids), h.perf() - wall0
    after = {arm: await scrape(port) for arm, port in env.gateway_ports.items()}
    stats = [await settled_stats(port) for port in env.sandbox_ports.values()]
    return analyse(
        mode, phase, before, after, stats, gauges, s, {k: (cpu1[k] - cpu0[k]) / wall for k in cpu1}
    )


async def settled_stats(port: int, limit_s: float = 5.0) -> dict[str, Any]:
    """The sandbox's stats once its cancelled attempts have ended (bounded wait)."""
    deadline = h.perf() + limit_s
    while True:
        stats: dict[str, Any] = await get_json(port, "/sandbox/stats")
        if stats["counters"]["in_flight"] == 0 or h.perf() > deadline:
            return stats
        await asyncio.sleep(0.05)


def analyse(
    mode: str,
    phase: Phase,
    before: Mapping[str, Mapping[tuple[str, str], float]],
    after: Mapping[str, Mapping[tuple[str, str], float]],
    stats: Sequence[Mapping[str, Any]],
    gauges: Sequence[Mapping[str, Any]],
    s: Settings,
    cpu: Mapping[str, float],
) -> dict[str, Any]:
    """One mode's result document."""
    rng = random.Random(s.seed)
    ok = {arm: [x for x in phase.samples if x.arm == arm and x.error is None] for arm in ARMS}
    latency = {"total": compare({a: [x.total_s for x in ok[a]] for a in ARMS}, s.bootstrap, rng)}
    if mode == "stream":
        ttft = {a: [x.ttft_s for x in ok[a] if x.ttft_s is not None] for a in ARMS}
        latency = {"ttft": compare(ttft, s.bootstrap, rng), **latency}
    arms: dict[str, Any] = {}
    for arm in ARMS:
        mine = [x for x in phase.samples if x.arm == arm]
        gateway = {k: extra_attempts(after[arm])[k] - extra_attempts(before[arm])[k] for k in EXTRA_KINDS}
        upstream = sandbox_view(stats, arm)
        extra = upstream["requests"] - len(mine)
        made = len(mine) + sum(gateway[k] for k in ("hedge", "retry", "failover", "continuation"))
        arms[arm] = {
            "requests": len(mine),
            "errors": dict(Counter(x.error for x in mine if x.error is not None)),
            "hedged_responses": sum(x.hedged for x in mine),
            "served_by": dict(Counter(x.deployment for x in mine)),
            "first_choice": dict(Counter((x.route or "").split(">")[0] for x in mine)),
            "attempts": dict(Counter(str(x.attempts) for x in mine)),
            "gateway_extra_attempts": gateway,
            "upstream": upstream,
            "extra_requests": extra,
            "extra_pct": round(100.0 * extra / len(mine), 3) if mine else None,
            "attempts_not_sent": made - upstream["requests"],
            "predicted_ttft_p95_ms": gauge_summary(gauges, arm),
        }
    headline = "ttft" if mode == "stream" else "total"
    unhedged = [x.ttft_s if headline == "ttft" else x.total_s for x in ok["unhedged"]]
    return {
        "mode": mode,
        "pairs": s.requests,
        "wall_s": round(phase.wall_s, 3),
        "driver_max_lag_ms": round(phase.max_lag_s * 1000, 3),
        "latency_ms": latency,
        "headline": headline,
        "replay_p95_hedge": replay_p95_hedge([v for v in unhedged if v is not None], random.Random(s.seed)),
        "arms": arms,
        "cpu": {k: round(v, 3) for k, v in cpu.items()},
        "gauge_samples": list(gauges),
        "samples": {
            arm: {
                "total_ms": [round(x.total_s * 1000, 3) for x in ok[arm]],
                "ttft_ms": [None if x.ttft_s is None else round(x.ttft_s * 1000, 3) for x in ok[arm]],
                "hedged": [int(x.hedged) for x in ok[arm]],
                "deployment": [x.deployment for x in ok[arm]],
            }
            for arm in ARMS
        },
        "stats_log_complete": all(len(x["requests"]) == x["counters"]["requests"] for x in stats),
        "unknown_upstream_requests": sum(
            1 for x in stats for r in x["requests"] if r.get("model") not in {upstream_model(a) for a in ARMS}
        ),
    }


async def measure(env: Env, s: Settings) -> dict[str, Any]:
    """Every mode against the running processes; returns the result document (no meta)."""
    await preflight(env)
    targets = {
        arm: dataclasses.replace(
            h.make_target(arm, env.gateway_ports[arm], model=MODEL, n_tokens=prompt_tokens(), prompt=PROMPT),
            expected_content=PROMPT,
        )
        for arm in ARMS
    }
    pools = {arm: Pool(targets[arm], env.ledger, s.timeout) for arm in ARMS}
    modes: dict[str, Any] = {}
    try:
        async with asyncio.timeout(s.max_seconds):
            for mode in s.modes:
                result = await measure_mode(env, pools, s, mode)
                modes[mode] = result
                lat = result["latency_ms"][result["headline"]]
                _progress(
                    f"{mode}: {result['headline']} p99 unhedged {lat['unhedged'].get('p99')} ms, "
                    f"hedged {lat['hedged'].get('p99')} ms; extra upstream requests "
                    f"{result['arms']['hedged']['extra_pct']}%"
                )
    finally:
        for pool in pools.values():
            pool.close()
    return {
        "modes": modes,
        "connections": {arm: pools[arm].opened for arm in ARMS},
        "checks": checks(env.ledger, modes),
    }


def checks(ledger: h.Ledger, modes: Mapping[str, Any]) -> dict[str, Any]:
    """Every request valid; the upstream logs account for every attempt the gateways made."""
    problems: list[str] = []
    for mode, result in modes.items():
        for arm in ARMS:
            a = result["arms"][arm]
            attempts = a["gateway_extra_attempts"]
            made = a["requests"] + sum(attempts[k] for k in ("hedge", "retry", "failover", "continuation"))
            # An attempt cancelled before its request was sent (a hedge that lost at once) never
            # reaches the upstream: the upstream may see fewer than were made, never more.
            if not a["requests"] <= a["upstream"]["requests"] <= made:
                problems.append(
                    f"{mode}/{arm}: upstream saw {a['upstream']['requests']} requests for "
                    f"{a['requests']} client requests and {made} attempts made"
                )
            if a["hedged_responses"] != attempts["hedge"]:
                problems.append(
                    f"{mode}/{arm}: {a['hedged_responses']} responses marked hedged, "
                    f"{attempts['hedge']} hedges counted"
                )
        if result["arms"]["unhedged"]["hedged_responses"]:
            problems.append(f"{mode}: the unhedged gateway hedged")
        if not result["stats_log_complete"]:
            problems.append(f"{mode}: a sandbox's request log overflowed (raise --log-size)")
        if result["unknown_upstream_requests"]:
            problems.append(f"{mode}: {result['unknown_upstream_requests']} upstream requests of no arm")
    errors_total = sum(ledger.errors.values())
    return {
        "errors_total": errors_total,
        "errors": dict(ledger.errors),
        "sent": dict(ledger.sent),
        "problems": problems,
        "ok": errors_total == 0 and not problems,
    }


def run_benchmark(s: Settings) -> dict[str, Any]:
    """Start two sandboxes and two gateways, measure, and stop them all (whatever happens)."""
    with (
        tempfile.TemporaryDirectory(prefix="hybridgate-bench-hedging-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        sandboxes = {
            d: stack.enter_context(
                h.Child(
                    f"sandbox-{d}", sandbox_command(s, s.seed + i), work / f"sandbox-{d}.log", SANDBOX_READY
                )
            )
            for i, d in enumerate(DEPLOYMENTS)
        }
        sandbox_ports = dict(zip(DEPLOYMENTS, _start_all(sandboxes.values(), 30), strict=True))
        gateways: dict[str, h.Child] = {}
        for arm in ARMS:
            config = work / f"gateway-{arm}.yaml"
            config.write_bytes(gateway_config(arm, sandbox_ports, s))
            gateways[arm] = stack.enter_context(
                h.Child(f"gateway-{arm}", gateway_command(config), work / f"gateway-{arm}.log", GATEWAY_READY)
            )
        gateway_ports = dict(zip(ARMS, _start_all(gateways.values(), 90), strict=True))
        pids = {f"gateway_{arm}": c.pid for arm, c in gateways.items()}
        pids |= {f"sandbox_{d}": c.pid for d, c in sandboxes.items()}
        _progress(
            f"sandboxes {sandbox_ports} ({s.profile}, time scale {s.time_scale}); gateways {gateway_ports}; "
            f"{s.rate:g} pairs/s"
        )
        env = Env(sandbox_ports, gateway_ports, pids)
        started = time.time()
        try:
            with asyncio.Runner(loop_factory=h.loop_factory()) as runner:
                report = runner.run(measure(env, s))
        except RuntimeError as exc:  # no valid answer at all: the gateways' logs say why
            tails = "\n".join(
                f"--- {arm} gateway log tail:\n{c.log_tail(1500)}" for arm, c in gateways.items()
            )
            raise RuntimeError(f"{exc}\n{tails}") from exc
        report["meta"] = _meta(s, env, started, {arm: c.argv for arm, c in gateways.items()})
        problems: dict[str, list[str]] = {}
        for name, child in {**gateways, **sandboxes}.items():
            child.stop()
            problems[name] = h.log_problems(child.log_tail(200_000))
        report["meta"]["log_problems"] = {k: v for k, v in problems.items() if v}
    return report


def _start_all(children: Iterable[h.Child], timeout: float) -> list[int]:
    """Start processes one after another (from this thread: a child started from a worker thread
    would get its parent-death signal when that thread ends); their ports, in order."""
    return [int(child.start(timeout).group(1)) for child in children]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _meta(s: Settings, env: Env, started: float, argv: Mapping[str, list[str]]) -> dict[str, Any]:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}
    return {
        "schema": SCHEMA,
        "started_unix": round(started, 3),
        "finished_unix": round(time.time(), 3),
        "argv": sys.argv[1:],
        "settings": settings,
        "prompt_tokens": prompt_tokens(),
        "hybridgate_version": _version("hybridgate"),
        "python": platform.python_version(),
        "event_loop": h.loop_name(),
        "kernel": platform.release(),
        "cpu_model": h.cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_end": h.load_average(),
        "processes": {**env.pids, "gateway_argv": dict(argv)},
        "ports": {"sandboxes": env.sandbox_ports, "gateways": env.gateway_ports},
        "targets": {"p99_cut_at_least": TARGET_P99_CUT, "extra_requests_pct_at_most": TARGET_EXTRA_PCT},
    }


# --------------------------------------------------------------------------- verdicts and output
def targets_verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Per mode: headline p99 cut >= 40% and extra upstream requests <= 5% (reported, not asserted)."""
    out: dict[str, Any] = {}
    for mode, result in report["modes"].items():
        cut = result["latency_ms"][result["headline"]].get("p99_cut")
        extra = result["arms"]["hedged"]["extra_pct"]
        cut_met = cut is not None and cut >= TARGET_P99_CUT
        extra_met = extra is not None and extra <= TARGET_EXTRA_PCT
        out[mode] = {
            "measure": f"{result['headline']} p99",
            "p99_cut": cut,
            "extra_pct": extra,
            "p99_cut_met": cut_met,
            "extra_met": extra_met,
            "met": cut_met and extra_met,
        }
    return out


def warnings_for(report: dict[str, Any]) -> list[str]:
    """Caveats about how trustworthy the numbers are."""
    out: list[str] = []
    cores = len(os.sched_getaffinity(0))
    for mode, result in report["modes"].items():
        busy = sum(result["cpu"].values())
        if busy >= 0.85 * cores:
            out.append(
                f"{mode}: the benchmark's processes used {busy:.2f} of {cores} cores: queueing for CPU "
                "adds to both arms' latencies; lower --rate"
            )
        if result["driver_max_lag_ms"] > 50:
            out.append(f"{mode}: the driver sent a request up to {result['driver_max_lag_ms']:.0f} ms late")
        denied = result["arms"]["hedged"]["gateway_extra_attempts"]["retry_budget_denied"]
        if denied:
            out.append(f"{mode}: the retry budget refused {denied} hedges (or retries) in the measured phase")
        out.extend(_hedge_delay_diagnosis(mode, result))
        n = result["latency_ms"]["total"]["unhedged"].get("n", 0)
        if n < 1000:
            out.append(f"{mode}: {n} requests per arm: p99 rests on {n // 100} samples above it; noisy")
    checks_ = report["checks"]
    if checks_["errors_total"]:
        out.append(f"{checks_['errors_total']} failed requests: {checks_['errors']}")
    out.extend(checks_["problems"])
    for name, lines in report["meta"].get("log_problems", {}).items():
        out.append(f"{name} log has {len(lines)} error lines (see JSON)")
    return out


def _hedge_delay_diagnosis(mode: str, result: Mapping[str, Any]) -> list[str]:
    """Flag a hedge delay far below what the same tracker learns without hedging.

    The deployments cost the same, so the planner puts the one with the lower predicted p95
    first, and the hedge delay is that deployment's: the lower of the two.
    """
    predicted = {arm: result["arms"][arm]["predicted_ttft_p95_ms"] for arm in ARMS}
    hedged = [v["median"] for v in predicted["hedged"].values()]
    unhedged = [v["median"] for v in predicted["unhedged"].values()]
    if not hedged or not unhedged or min(hedged) >= 0.5 * min(unhedged):
        return []
    return [
        f"{mode}: the hedged gateway hedges after a TTFT p95 of {min(hedged):.0f} ms where the same "
        f"tracker without hedging finds {min(unhedged):.0f} ms: the hedge delay has not settled yet "
        "(too short a warm-up?), so hedges fire on more than 5% of requests"
    ]


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def latency_table(report: dict[str, Any]) -> Table:
    """p50/p95/p99 of both arms, the ratios and the p99 cut, per mode and measure."""
    table = Table(title="latency, ms (same requests, same moments: one to each gateway per arrival)")
    for col in ("measure", "unhedged p50", "p95", "p99", "hedged p50", "p95", "p99"):
        table.add_column(col, justify="right")
    for col in ("p50 ratio", "p99 ratio", "p99 cut [95% CI]"):
        table.add_column(col, justify="right", style="bold")
    for mode, result in report["modes"].items():
        for kind, c in result["latency_ms"].items():
            u, g, ratio = c["unhedged"], c["hedged"], c.get("ratio", {})
            ci = c.get("p99_cut_95ci")
            cut = f"{_pct(c.get('p99_cut'))}" + (f" [{_pct(ci[0])}..{_pct(ci[1])}]" if ci else "")
            table.add_row(
                f"{mode} {kind}", _f(u.get("p50")), _f(u.get("p95")), _f(u.get("p99")),
                _f(g.get("p50")), _f(g.get("p95")), _f(g.get("p99")),
                _f(ratio.get("p50"), 3), _f(ratio.get("p99"), 3), cut,
            )  # fmt: skip
    return table


def cost_table(report: dict[str, Any]) -> Table:
    """What hedging cost: upstream requests per client request, and the gateway's own account."""
    table = Table(title="cost: upstream requests (counted in the sandboxes' logs) per client request")
    for col in ("mode", "arm", "client requests", "upstream requests", "extra"):
        table.add_column(col, justify="right")
    for col in ("hedged (header)", "hedges won", "budget denied", "slow draws", "pred. TTFT p95 ms a / b"):
        table.add_column(col, justify="right")
    for mode, result in report["modes"].items():
        for arm in ARMS:
            a = result["arms"][arm]
            gw, up = a["gateway_extra_attempts"], a["upstream"]
            pred = a["predicted_ttft_p95_ms"]
            delay = " / ".join(_f(pred.get(d, {}).get("median")) for d in DEPLOYMENTS)
            table.add_row(
                mode, arm, str(a["requests"]), str(up["requests"]),
                f"{a['extra_requests']} ({_f(a['extra_pct'], 2)}%)", str(a["hedged_responses"]),
                str(gw["hedge_won"]), str(gw["retry_budget_denied"]), str(up["slow_drawn"]), delay,
            )  # fmt: skip
    return table


def print_report(report: dict[str, Any], path: Path, console: Console) -> None:
    """Human summary on stdout."""
    meta, checks_ = report["meta"], report["checks"]
    st = meta["settings"]
    console.print(
        f"[bold]hybridgate {meta['hybridgate_version']} hedging[/] ({st['preset']} run), "
        f"{meta['cpu_model']}, {meta['cpu_count']} cores, {meta['event_loop']}; "
        f"profile {st['profile']} at time scale {st['time_scale']}, {st['rate']:g} pairs/s, "
        f"{st['warmup']} warm-up + {st['requests']} measured pairs per mode"
    )
    console.print(latency_table(report))
    console.print(cost_table(report))
    console.print(
        "pred. TTFT p95: median over the measured phase of each gateway's tracked time-to-first-token "
        "p95 (/metrics, hybridgate_deployment_hedge_ttft_p95_seconds); the hedged gateway hedges a "
        "stream after it (plus the prompt's predicted prefill), a whole answer after it plus the "
        "predicted decode time"
    )
    for mode, result in report["modes"].items():
        r = result["replay_p95_hedge"]
        if r:
            console.print(
                f"model ({mode}): the unhedged arm's own {result['headline']} samples hedged at their p95 "
                f"({_f(r['hedge_after_ms'])} ms) with a backup drawn from them: {_f(r['extra_pct'], 2)}% "
                f"extra requests, p99 {_f(r['p99_ms'])} -> {_f(r['hedged_p99_ms'])} ms "
                f"(cut {_pct(r['p99_cut'])}); a replay, not a measurement"
            )
    console.print(
        f"checks: {checks_['errors_total']} errors, {len(checks_['problems'])} accounting problems "
        f"-> {'OK' if checks_['ok'] else 'FAILED'}"
    )
    for mode, t in report["targets"].items():
        verdict = "[green]met[/]" if t["met"] else "[red]missed[/]"
        console.print(
            f"aim ({mode}): {t['measure']} cut {_pct(t['p99_cut'])} (>= {TARGET_P99_CUT:.0%}) for "
            f"{_f(t['extra_pct'], 2)}% extra upstream requests (<= {TARGET_EXTRA_PCT:g}%) -> {verdict} "
            "(not asserted)"
        )
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
    except RuntimeError as exc:  # a process did not start (ChildError) or failed the preflight
        err.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        return 2
    except TimeoutError:
        err.print(f"[red]error:[/] measurements exceeded --max-seconds {s.max_seconds}")
        return 3
    report["targets"] = targets_verdict(report)
    report["warnings"] = warnings_for(report)
    path = h.write_results(report, s.json_path, s.results_dir, "hedging")
    print_report(report, path, Console(soft_wrap=False, width=max(Console().width, 170)))
    return 0 if report["checks"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

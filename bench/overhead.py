"""What hybridgate adds per request, measured side by side against a direct path.

The benchmark starts a fast OpenAI-compatible mock upstream (its own process) and the real
gateway (``hybridgate serve``, a subprocess with a generated config that routes model ``mock``
to the mock), then drives both with a raw asyncio HTTP/1.1 client:

1. c=1 non-streaming: warm-up, then rounds of alternating pairs (direct, via gateway; the order
   flips every round). Added p50 = median over rounds of the per-round median difference;
   added p90/p99 = percentile of gateway samples minus the same percentile of direct samples.
2. c=1 streaming: the same pairing for time to first content token (TTFT) and total time.
3. A closed-loop concurrency sweep, direct and via the gateway at each level: RPS, p50/p99,
   CPU of the gateway, the driver, the mock and of everything else on the machine (/proc).
4. Peak RSS of the gateway's process tree (sampled from /proc) and its kernel high-water mark.

Every response is validated (200 and exactly the mock's content; streams must end in
``[DONE]``) and the mock's counters must show every written request exactly once. With 2+
cores, driver and mock share the first core and the gateway gets the second.

Usage::

    python bench/overhead.py            # full run, about 2 minutes
    python bench/overhead.py --quick    # about 20 seconds

Exit status: 0 when every request was valid and reached upstream exactly once, 1 when not,
2 when a process did not start, failed the preflight or answered no request validly,
3 when ``--max-seconds`` ran out, 130 when interrupted.
Speed never fails the run: the targets are reported, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from rich.console import Console
from rich.table import Table

import _harness as h

GATEWAY_READY = re.compile(r"hybridgate: listening on http://127\.0\.0\.1:(\d+)")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 3.0
SCHEMA = "hybridgate-bench-overhead/1"
_T = TypeVar("_T")

# (warmup pairs, rounds, pairs per round, sweep seconds per level, sweep warm-up seconds)
PRESETS: dict[str, tuple[int, int, int, float, float]] = {
    "full": (200, 20, 100, 10.0, 2.0),
    "quick": (30, 6, 30, 1.5, 0.5),
}


@dataclass(frozen=True)
class Settings:
    """What to run; see :func:`parse_args` for the meaning of each field."""

    preset: str
    warmup: int
    rounds: int
    per_round: int
    concurrency: tuple[int, ...]
    duration: float
    sweep_warmup: float
    tokens: int
    timeout: float
    max_seconds: float
    pin: bool
    auth: bool
    json_path: Path | None
    results_dir: Path


@dataclass(frozen=True)
class Layout:
    """Which cores the driver (and mock) and the gateway run on."""

    pinned: bool
    driver_cpus: set[int] | None
    gateway_cpus: set[int] | None
    note: str


@dataclass
class Env:
    """The running processes a measurement talks to."""

    mock_pid: int
    mock_port: int
    gateway_pid: int
    gateway_port: int
    api_key: str | None
    layout: Layout
    ledger: h.Ledger = field(default_factory=h.Ledger)


# --------------------------------------------------------------------------- set-up
def parse_args(argv: Sequence[str] | None) -> Settings:
    """Command-line flags; explicit sizes override the ``--quick``/full preset."""
    ap = argparse.ArgumentParser(
        prog="overhead.py",
        description="Measure what hybridgate adds per request (side by side with a direct path).",
    )
    ap.add_argument(
        "--quick", action="store_true", help="short run (about 20 s) instead of the full one (~2 min)"
    )
    ap.add_argument("--warmup", type=int, help="discarded c=1 pairs before each c=1 phase")
    ap.add_argument("--rounds", type=int, help="c=1 rounds (the pair order flips every round)")
    ap.add_argument("--per-round", type=int, help="c=1 pairs per round")
    ap.add_argument("--concurrency", default="1,8,32", help="sweep levels, comma separated (default 1,8,32)")
    ap.add_argument("--duration", type=float, help="measured seconds per sweep level and target")
    ap.add_argument("--sweep-warmup", type=float, help="discarded seconds before each sweep level")
    ap.add_argument("--tokens", type=int, default=60, help="completion tokens per mock answer (default 60)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="hard stop for all measurements")
    ap.add_argument("--no-pin", action="store_true", help="do not pin driver/mock and gateway to cores")
    ap.add_argument("--no-auth", action="store_true", help="run the gateway without client API keys")
    ap.add_argument("--json", type=Path, help="write the JSON results here (default bench/results/...)")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the default JSON goes")
    a = ap.parse_args(argv)
    preset = "quick" if a.quick else "full"
    warmup, rounds, per_round, duration, sweep_warmup = PRESETS[preset]
    levels = tuple(int(c) for c in a.concurrency.split(",") if c.strip())
    if not levels or min(levels) < 1:
        ap.error("--concurrency needs positive integers")
    if a.tokens < 1:
        ap.error("--tokens must be at least 1")
    return Settings(
        preset=preset,
        warmup=_pick(a.warmup, warmup),
        rounds=max(1, _pick(a.rounds, rounds)),
        per_round=max(1, _pick(a.per_round, per_round)),
        concurrency=levels,
        duration=_pick(a.duration, duration),
        sweep_warmup=_pick(a.sweep_warmup, sweep_warmup),
        tokens=a.tokens,
        timeout=a.timeout,
        max_seconds=a.max_seconds,
        pin=not a.no_pin,
        auth=not a.no_auth,
        json_path=a.json,
        results_dir=a.results_dir,
    )


def _pick(explicit: _T | None, default: _T) -> _T:
    return default if explicit is None else explicit


def plan_layout(pin: bool) -> Layout:
    """Driver+mock on the first allowed core, gateway on the second (when pinning is possible)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin:
        return Layout(False, None, None, "not pinned (--no-pin)")
    if len(cpus) < 2:
        return Layout(False, None, None, f"not pinned: only {len(cpus)} core available")
    driver, gateway = cpus[0], cpus[1]
    return Layout(
        True, {driver}, {gateway}, f"driver+mock pinned to core {driver}, gateway to core {gateway}"
    )


def gateway_config(mock_port: int, api_key: str | None) -> bytes:
    """The generated gateway config (JSON, which is valid YAML): one deployment, one model."""
    config = {
        "version": 1,
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "auth": {"api_keys": [api_key]} if api_key else {"disabled": True},
        },
        "deployments": {
            "mock-upstream": {
                "type": "openai",
                "base_url": f"http://127.0.0.1:{mock_port}/v1",
                "model": "mock",
                "placement": "cloud",
                "region": "us",
            }
        },
        "models": {"mock": {"deployments": ["mock-upstream"]}},
    }
    return orjson.dumps(config, option=orjson.OPT_INDENT_2)


def gateway_command(config: Path) -> list[str]:
    """``hybridgate serve`` from this interpreter's environment, on a free port."""
    script = Path(sys.executable).with_name("hybridgate")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "hybridgate.cli"]
    return [*base, "serve", "-c", str(config), "--port", "0", "--quiet"]


# --------------------------------------------------------------------------- c=1 pairs
@dataclass
class PairSamples:
    """Samples (seconds) of one c=1 phase, pooled and per round."""

    pooled: dict[str, dict[str, list[float]]]
    rounds: list[dict[str, dict[str, float]]] = field(default_factory=list)

    def add_round(self, per: dict[str, dict[str, list[float]]]) -> None:
        """Pool one round's samples and keep its per-target medians."""
        for name, by_kind in per.items():
            for kind, values in by_kind.items():
                self.pooled[name][kind].extend(values)
        self.rounds.append({n: {k: h.median(v) for k, v in bk.items() if v} for n, bk in per.items()})


async def run_pairs(env: Env, targets: Sequence[h.Target], s: Settings, stream: bool) -> dict[str, Any]:
    """Alternate direct and gateway requests at c=1; return samples, added latency and CPU."""
    clients = [h.Client(t, env.ledger, s.timeout) for t in targets]
    kinds = ("total", "ttft") if stream else ("total",)
    samples = PairSamples({t.name: {k: [] for k in kinds} for t in targets})
    window = h.CpuWindow(env.gateway_pid, env.mock_pid)
    try:
        for _ in range(s.warmup):
            for c in clients:
                await c.call(stream)
        window.start()
        for rnd in range(s.rounds):
            order = clients if rnd % 2 == 0 else clients[::-1]
            samples.add_round(await _one_round(order, s.per_round, stream, kinds))
        cpu = window.stop()
    finally:
        for c in clients:
            c.close()
    return _pairs_report(samples, kinds, s, cpu, [c.reconnects for c in clients])


async def _one_round(
    order: Sequence[h.Client], pairs: int, stream: bool, kinds: Sequence[str]
) -> dict[str, dict[str, list[float]]]:
    """``pairs`` back-to-back pairs in ``order``: samples (seconds) of valid replies by target and kind."""
    per: dict[str, dict[str, list[float]]] = {c.target.name: {k: [] for k in kinds} for c in order}
    for _ in range(pairs):
        for c in order:
            reply = await c.call(stream)
            if reply.error is None:
                per[c.target.name]["total"].append(reply.latency)
                if stream and reply.ttft is not None:
                    per[c.target.name]["ttft"].append(reply.ttft)
    return per


def added_latency(samples: PairSamples, kind: str) -> dict[str, Any]:
    """Added p50 (median of per-round median differences) and added p90/p99 (pooled), in ms."""
    diffs = [
        r["gateway"][kind] - r["direct"][kind]
        for r in samples.rounds
        if kind in r.get("gateway", {}) and kind in r.get("direct", {})
    ]
    direct = sorted(samples.pooled["direct"][kind])
    gateway = sorted(samples.pooled["gateway"][kind])
    if not diffs or not direct or not gateway:
        return {}
    return {
        "p50_ms": _ms(h.median(diffs)),
        "round_min_ms": _ms(min(diffs)),
        "round_max_ms": _ms(max(diffs)),
        "p90_ms": _ms(h.percentile(gateway, 90) - h.percentile(direct, 90)),
        "p99_ms": _ms(h.percentile(gateway, 99) - h.percentile(direct, 99)),
        "round_diffs_ms": [_ms(d) for d in diffs],
    }


def _cpu_ms_per_request(cpu: dict[str, Any], requests: int) -> float | None:
    """Gateway CPU milliseconds per gateway request over a window (None without requests)."""
    return round(cpu["gateway"] * cpu["wall_s"] * 1000.0 / requests, 3) if requests else None


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 4)


def _pairs_report(
    samples: PairSamples, kinds: Sequence[str], s: Settings, cpu: dict[str, Any], reconnects: list[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "warmup_pairs": s.warmup,
        "rounds": s.rounds,
        "per_round": s.per_round,
        "cpu": cpu,
        "reconnects": sum(reconnects),
    }
    for name, by_kind in samples.pooled.items():
        out[name] = {k: h.summarize_ms(v) for k, v in by_kind.items()}
    out["gateway_cpu_ms_per_request"] = _cpu_ms_per_request(cpu, len(samples.pooled["gateway"]["total"]))
    out["added"] = {k: added_latency(samples, k) for k in kinds}
    return out


# --------------------------------------------------------------------------- sweep
@dataclass
class LevelState:
    """Shared state of one closed-loop level's virtual users."""

    window_start: float = float("inf")
    stop: bool = False
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    last_end: float = 0.0


async def _virtual_user(client: h.Client, state: LevelState) -> None:
    """Send back-to-back requests until told to stop; record those started in the window."""
    while not state.stop:
        reply = await client.call(False)
        if reply.t_start < state.window_start:
            if reply.error is not None and reply.error.startswith("connect"):
                await asyncio.sleep(0.05)  # a dead port must not become a busy loop
            continue
        state.last_end = max(state.last_end, reply.t_end)
        if reply.error is None:
            state.latencies.append(reply.latency)
        else:
            state.errors += 1
            if reply.error.startswith("connect"):
                await asyncio.sleep(0.05)


async def sweep_level(env: Env, target: h.Target, conc: int, s: Settings) -> dict[str, Any]:
    """``conc`` keep-alive users against ``target``: warm-up, then a measured window."""
    clients = [h.Client(target, env.ledger, s.timeout) for _ in range(conc)]
    state = LevelState()
    tasks: list[asyncio.Task[None]] = []
    window = h.CpuWindow(env.gateway_pid, env.mock_pid)
    try:
        for c in clients:  # connections arrive 2 ms apart, not as one burst
            with contextlib.suppress(OSError, TimeoutError):
                await c.connect()
            tasks.append(asyncio.create_task(_virtual_user(c, state)))
            await asyncio.sleep(0.002)
        await asyncio.sleep(s.sweep_warmup)
        window.start()
        state.window_start = h.perf()
        await asyncio.sleep(s.duration)
        state.stop = True
        cpu = window.stop()
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        for c in clients:
            c.close()
    measured = max(state.last_end - state.window_start, 1e-9)
    return {
        "target": target.name,
        "concurrency": conc,
        "ok": len(state.latencies),
        "errors": state.errors,
        "rps": round(len(state.latencies) / measured, 1),
        "measured_s": round(measured, 3),
        "latency_ms": h.summarize_ms(state.latencies),
        "cpu": cpu,
        "gateway_cpu_ms_per_request": _cpu_ms_per_request(cpu, len(state.latencies))
        if target.name == "gateway"
        else None,
        "reconnects": sum(c.reconnects for c in clients),
    }


async def run_sweep(env: Env, targets: Sequence[h.Target], s: Settings) -> list[dict[str, Any]]:
    """Every concurrency level, direct then via the gateway."""
    rows = []
    for conc in s.concurrency:
        for target in targets:
            row = await sweep_level(env, target, conc, s)
            _progress(
                f"sweep {target.name:7s} c={conc:<3d} rps={row['rps']:9.1f} "
                f"p50={row['latency_ms'].get('p50')} ms p99={row['latency_ms'].get('p99')} ms "
                f"errors={row['errors']}"
            )
            rows.append(row)
            await asyncio.sleep(0.3)
    return rows


# --------------------------------------------------------------------------- orchestration
def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


async def preflight(env: Env) -> None:
    """Both ends answer ``GET /v1/models``, and the gateway lists model ``mock``."""
    auth = f"Authorization: Bearer {env.api_key}\r\n" if env.api_key else ""
    async with asyncio.timeout(10):
        mock_status, _ = await h.http_get(env.mock_port, "/v1/models")
        gw_status, gw_body = await h.http_get(env.gateway_port, "/v1/models", headers=auth)
    if mock_status != 200 or gw_status != 200 or b'"mock"' not in gw_body:
        raise RuntimeError(
            f"preflight failed: mock /v1/models {mock_status}, "
            f"gateway /v1/models {gw_status} {gw_body[:300]!r}"
        )


async def measure(env: Env, s: Settings) -> dict[str, Any]:
    """All measurements against running processes; returns the result document (no meta)."""
    targets = [
        h.make_target(name, port, model="mock", n_tokens=s.tokens, api_key=env.api_key)
        for name, port in (("direct", env.mock_port), ("gateway", env.gateway_port))
    ]
    await preflight(env)
    before = await h.mock_stats(env.mock_port)
    rss = h.RssSampler(env.gateway_pid)
    rss.start()
    try:
        async with asyncio.timeout(s.max_seconds):
            non_stream = await run_pairs(env, targets, s, stream=False)
            _require_valid_replies(non_stream, env.ledger)
            _progress(f"c=1 non-stream: added p50 {non_stream['added']['total'].get('p50_ms')} ms")
            stream = await run_pairs(env, targets, s, stream=True)
            _progress(f"c=1 stream: added TTFT p50 {stream['added']['ttft'].get('p50_ms')} ms")
            sweep = await run_sweep(env, targets, s)
    finally:
        await rss.stop()
    after = await h.mock_stats(env.mock_port)
    return {
        "c1": {"non_stream": non_stream, "stream": stream},
        "sweep": sweep,
        "memory": rss.report(),
        "checks": checks(env.ledger, before, after),
    }


def _require_valid_replies(phase: dict[str, Any], ledger: h.Ledger) -> None:
    """Stop early (instead of sweeping errors) when a target answered nothing validly."""
    for name in ("direct", "gateway"):
        if not phase[name]["total"]["n"]:
            raise RuntimeError(f"no valid response from {name} at c=1; errors: {dict(ledger.errors)}")


def checks(ledger: h.Ledger, before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """Errors, and whether the mock saw exactly the chat requests that were written."""

    def delta(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    seen = delta("chat") + delta("chat_stream")
    sent = dict(ledger.sent)
    upstream = {
        "sent": sent,
        "sent_total": sum(sent.values()),
        "seen": seen,
        "seen_stream": delta("chat_stream"),
        "bad_requests": delta("bad"),
        "models_requests": delta("models"),
        "match": seen == sum(sent.values()) and delta("bad") == 0,
    }
    errors_total = sum(ledger.errors.values())
    return {
        "errors_total": errors_total,
        "errors": dict(ledger.errors),
        "upstream": upstream,
        "ok": errors_total == 0 and bool(upstream["match"]),
    }


def run_benchmark(s: Settings, layout: Layout) -> dict[str, Any]:
    """Start the mock and the gateway, measure, and stop both (whatever happens)."""
    api_key = f"sk-bench-{secrets.token_hex(12)}" if s.auth else None
    with tempfile.TemporaryDirectory(prefix="hybridgate-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        mock = stack.enter_context(
            h.Child(
                "mock-upstream",
                h.mock_command(n_tokens=s.tokens),
                work / "mock.log",
                h.MOCK_READY,
                cpus=layout.driver_cpus,
            )
        )
        mock_port = int(mock.start(timeout=30).group(1))
        config = work / "gateway.yaml"
        config.write_bytes(gateway_config(mock_port, api_key))
        gw = stack.enter_context(
            h.Child(
                "gateway",
                gateway_command(config),
                work / "gateway.log",
                GATEWAY_READY,
                cpus=layout.gateway_cpus,
            )
        )
        gw_port = int(gw.start(timeout=90).group(1))
        _progress(f"mock pid {mock.pid} port {mock_port}; gateway pid {gw.pid} port {gw_port}; {layout.note}")
        env = Env(mock.pid, mock_port, gw.pid, gw_port, api_key, layout)
        pinning = {
            "gateway_threads_cpus": h.thread_affinities(gw.pid),
            "mock_threads_cpus": h.thread_affinities(mock.pid),
            "driver_cpus": sorted(os.sched_getaffinity(0)),
        }
        started = time.time()
        with asyncio.Runner(loop_factory=h.loop_factory()) as runner:
            report = runner.run(measure(env, s))
        report["meta"] = _meta(s, layout, env, pinning, started, gw.argv)
        gw.stop()
        report["meta"]["gateway_log_problems"] = h.log_problems(gw.log_tail(200_000))
    return report


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _meta(
    s: Settings, layout: Layout, env: Env, pinning: dict[str, Any], started: float, gw_argv: list[str]
) -> dict[str, Any]:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}
    return {
        "schema": SCHEMA,
        "started_unix": round(started, 3),
        "finished_unix": round(time.time(), 3),
        "argv": sys.argv[1:],
        "settings": settings,
        "hybridgate_version": _version("hybridgate"),
        "python": platform.python_version(),
        "event_loop": h.loop_name(),
        "kernel": platform.release(),
        "cpu_model": h.cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_end": h.load_average(),
        "layout": {
            "pinned": layout.pinned,
            "note": layout.note,
            "driver_and_mock_cpus": sorted(layout.driver_cpus or []),
            "gateway_cpus": sorted(layout.gateway_cpus or []),
            **pinning,
        },
        "processes": {"mock_pid": env.mock_pid, "gateway_pid": env.gateway_pid, "gateway_argv": gw_argv},
        "auth": env.api_key is not None,
        "targets": {"added_p50_ms_below": TARGET_ADDED_P50_MS, "added_p99_ms_below": TARGET_ADDED_P99_MS},
    }


# --------------------------------------------------------------------------- verdicts and output
def targets_verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Whether the c=1 non-streaming added p50/p99 are under the targets (reported, not asserted)."""
    added = report["c1"]["non_stream"]["added"]["total"]
    out: dict[str, Any] = {}
    for key, limit in (("p50_ms", TARGET_ADDED_P50_MS), ("p99_ms", TARGET_ADDED_P99_MS)):
        value = added.get(key)
        out[f"added_{key}"] = {"value": value, "limit": limit, "met": value is not None and value < limit}
    return out


def warnings_for(report: dict[str, Any]) -> list[str]:
    """Caveats about how trustworthy the numbers are (saturation, foreign load, errors)."""
    out: list[str] = []
    layout = report["meta"]["layout"]
    if not layout["pinned"]:
        out.append(f"processes were {layout['note']}: driver, mock and gateway compete for cores")
    phases = [(f"c=1 {k}", v["cpu"]) for k, v in report["c1"].items()]
    phases += [(f"sweep {r['target']} c={r['concurrency']}", r["cpu"]) for r in report["sweep"]]
    shared = 0
    for name, cpu in phases:
        issues = _phase_issues(cpu, layout, via_gateway="direct" not in name)
        shared += cpu["other"] >= 0.25
        if issues:
            out.append(f"{name}: " + "; ".join(issues))
    if shared:
        out.append(
            f"other processes loaded the machine in {shared} of {len(phases)} phases: the gateway's numbers "
            "are pessimistic and noisy; compare only the side-by-side values, or rerun on an idle machine"
        )
    checks_ = report["checks"]
    if checks_["errors_total"]:
        out.append(f"{checks_['errors_total']} failed requests: {checks_['errors']}")
    if not checks_["upstream"]["match"]:
        up = checks_["upstream"]
        out.append(
            f"upstream saw {up['seen']} chat requests, {up['sent_total']} were written "
            f"(bad requests: {up['bad_requests']})"
        )
    if report["meta"].get("gateway_log_problems"):
        out.append(f"gateway log has {len(report['meta']['gateway_log_problems'])} error lines (see JSON)")
    return out


def _phase_issues(cpu: dict[str, Any], layout: dict[str, Any], via_gateway: bool) -> list[str]:
    """Saturation and foreign load in one measured phase."""
    issues: list[str] = []
    busy = cpu["cores_busy"]
    driver_busy = [busy.get(f"cpu{c}", 0.0) for c in layout["driver_and_mock_cpus"]]
    gateway_busy = [busy.get(f"cpu{c}", 0.0) for c in layout["gateway_cpus"]]
    if cpu["driver"] >= 0.85:
        issues.append(f"driver saturated ({cpu['driver']:.2f} CPU): the rate is a lower bound")
    elif driver_busy and min(driver_busy) >= 0.95:
        issues.append(
            f"driver's core {min(driver_busy):.0%} busy (driver {cpu['driver']:.2f}, mock {cpu['mock']:.2f})"
        )
    if via_gateway and gateway_busy and min(gateway_busy) >= 0.95 and cpu["gateway"] < 0.85:
        issues.append(
            f"gateway's core {min(gateway_busy):.0%} busy but the gateway got {cpu['gateway']:.2f} CPU"
        )
    if cpu["other"] >= 0.25:
        issues.append(f"other processes used {cpu['other']:.2f} CPU")
    return issues


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def c1_table(report: dict[str, Any]) -> Table:
    """c=1 latency: direct, via gateway, and what the gateway added."""
    table = Table(title="c=1 latency, ms  (added = via gateway - direct, measured in alternating pairs)")
    for col in ("measure", "direct p50", "p90", "p99", "gateway p50", "p90", "p99"):
        table.add_column(col, justify="right")
    for col in ("added p50 [round min..max]", "added p90", "added p99", "gw CPU", "gw CPU ms/req"):
        table.add_column(col, justify="right", style="bold")
    rows = [
        ("non-stream total", "non_stream", "total"),
        ("stream TTFT", "stream", "ttft"),
        ("stream total", "stream", "total"),
    ]
    for label, phase, kind in rows:
        p = report["c1"][phase]
        d, g, a = p["direct"][kind], p["gateway"][kind], p["added"][kind]
        spread = f"{_f(a.get('p50_ms'))} [{_f(a.get('round_min_ms'))}..{_f(a.get('round_max_ms'))}]"
        table.add_row(
            label, _f(d.get("p50")), _f(d.get("p90")), _f(d.get("p99")),
            _f(g.get("p50")), _f(g.get("p90")), _f(g.get("p99")),
            spread, _f(a.get("p90_ms")), _f(a.get("p99_ms")), f"{p['cpu']['gateway']:.0%}",
            _f(p["gateway_cpu_ms_per_request"]),
        )  # fmt: skip
    return table


def sweep_table(report: dict[str, Any]) -> Table:
    """Closed-loop sweep: direct and via gateway at each concurrency."""
    table = Table(title="closed-loop sweep (non-streaming, keep-alive)")
    for col in ("conc", "direct rps", "p50 ms", "p99 ms", "gateway rps", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for col in ("gw CPU", "gw CPU ms/req", "driver CPU", "mock CPU", "other CPU", "errors"):
        table.add_column(col, justify="right")
    by_level: dict[int, dict[str, dict[str, Any]]] = {}
    for row in report["sweep"]:
        by_level.setdefault(row["concurrency"], {})[row["target"]] = row
    for conc, rows in by_level.items():
        d, g = rows.get("direct", {}), rows.get("gateway", {})
        dl, gl, cpu = d.get("latency_ms", {}), g.get("latency_ms", {}), g.get("cpu", {})
        table.add_row(
            str(conc), _f(d.get("rps"), 0), _f(dl.get("p50")), _f(dl.get("p99")),
            _f(g.get("rps"), 0), _f(gl.get("p50")), _f(gl.get("p99")),
            f"{cpu.get('gateway', 0):.0%}", _f(g.get("gateway_cpu_ms_per_request")),
            f"{cpu.get('driver', 0):.0%}", f"{cpu.get('mock', 0):.0%}",
            f"{cpu.get('other', 0):.0%}", str(d.get("errors", 0) + g.get("errors", 0)),
        )  # fmt: skip
    return table


def print_report(report: dict[str, Any], path: Path, console: Console) -> None:
    """Human summary on stdout."""
    meta, checks_, mem = report["meta"], report["checks"], report["memory"]
    console.print(
        f"[bold]hybridgate {meta['hybridgate_version']} overhead[/] ({meta['settings']['preset']} run), "
        f"{meta['cpu_model']}, {meta['cpu_count']} cores, {meta['event_loop']}; {meta['layout']['note']}; "
        f"client auth {'on' if meta['auth'] else 'off'}"
    )
    console.print(c1_table(report))
    console.print(sweep_table(report))
    console.print(
        f"gateway memory: peak RSS {mem['peak_rss_mb']} MB (sampled every {mem['sample_period_s']} s), "
        f"kernel VmHWM {mem['vmhwm_sum_mb']} MB over {mem['processes']} process(es)"
    )
    up = checks_["upstream"]
    console.print(
        f"checks: {checks_['errors_total']} errors; upstream saw {up['seen']} of {up['sent_total']} "
        f"chat requests written -> {'OK' if checks_['ok'] else 'FAILED'}"
    )
    for key, t in report["targets"].items():
        verdict = "[green]met[/]" if t["met"] else "[red]missed[/]"
        console.print(
            f"target {key} < {t['limit']} ms at c=1: {_f(t['value'])} ms -> {verdict} (not asserted)"
        )
    for w in report["warnings"]:
        console.print(f"[yellow]![/] {w}")
    console.print(f"results: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; see the module docstring for exit statuses."""
    s = parse_args(argv)
    h.sigterm_as_interrupt()
    layout = plan_layout(s.pin)
    if layout.driver_cpus:
        os.sched_setaffinity(0, layout.driver_cpus)
    err = Console(stderr=True)
    try:
        report = run_benchmark(s, layout)
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
    path = h.write_results(report, s.json_path, s.results_dir, "overhead")
    print_report(report, path, Console(soft_wrap=False, width=max(Console().width, 170)))
    return 0 if report["checks"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

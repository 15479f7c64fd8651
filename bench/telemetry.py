"""What telemetry costs per request: the same gateway with traces and the decision log on, and
off, side by side in one run.

The benchmark starts the mock upstream of ``_harness.py`` and two ``hybridgate serve`` processes
with the same deployment: *off* (no tracing, no decision log) and *on* (tracing with every trace
sampled, exported by the JSON-lines file exporter, plus the decision log). At c=1 it sends
rounds of alternating pairs (off, on; the order flips every round), non-streaming and streaming,
every request carrying a sampled W3C ``traceparent`` (so *on* also continues the caller's trace
and propagates it upstream). Reported:

- **added p50** = median over rounds of (on round median - off round median), for the total
  time (and TTFT for streams); the headline number, target < 0.2 ms;
- each gateway's CPU milliseconds per request over the phase (less noisy than latency);
- checks: every reply valid; afterwards (both gateways stopped, so everything is flushed) the
  *on* gateway's decision log has one record per request it served and its span file two spans
  (request + attempt) per request. Telemetry that silently did nothing would fail the run.

Usage::

    python bench/telemetry.py --quick   # about 15 seconds
    python bench/telemetry.py           # about a minute

Exit status: 0 when every reply was valid and the telemetry counts match; 1 when not; 2 when a
process did not start; 130 when interrupted. Speed never fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

import _harness as h

SCHEMA = "hybridgate-bench-telemetry/1"
GATEWAY_READY = re.compile(r"hybridgate: listening on http://127\.0\.0\.1:(\d+)")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_P50_MS = 0.2
TRACEPARENT = b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
PRESETS: dict[str, tuple[int, int, int]] = {"full": (200, 20, 100), "quick": (30, 8, 30)}


@dataclass(frozen=True)
class Settings:
    warmup: int
    rounds: int
    per_round: int
    tokens: int
    timeout: float
    pin: bool
    json_path: Path | None


def parse_args(argv: Sequence[str] | None) -> Settings:
    ap = argparse.ArgumentParser(prog="telemetry.py", description="Telemetry on vs off, side by side.")
    ap.add_argument("--quick", action="store_true", help="a short run (about 15 s)")
    ap.add_argument("--warmup", type=int, help="discarded pairs before each phase")
    ap.add_argument("--rounds", type=int, help="rounds per phase (the pair order flips every round)")
    ap.add_argument("--per-round", type=int, help="pairs per round")
    ap.add_argument("--tokens", type=int, default=60, help="completion tokens per mock answer (default 60)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--json", type=Path, help="write the JSON results here (default bench/results/...)")
    a = ap.parse_args(argv)
    warmup, rounds, per_round = PRESETS["quick" if a.quick else "full"]
    return Settings(
        warmup=a.warmup if a.warmup is not None else warmup,
        rounds=a.rounds if a.rounds is not None else rounds,
        per_round=a.per_round if a.per_round is not None else per_round,
        tokens=a.tokens,
        timeout=a.timeout,
        pin=not a.no_pin,
        json_path=a.json,
    )


def gateway_config(mock_port: int, telemetry: bool) -> bytes:
    config: dict[str, Any] = {
        "version": 1,
        "server": {"host": "127.0.0.1", "port": 0, "auth": {"disabled": True}},
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
    if telemetry:
        config["tracing"] = {"enabled": True, "exporter": "file", "path": "spans.jsonl"}
        config["decision_log"] = {"path": "decisions.jsonl"}
    return orjson.dumps(config, option=orjson.OPT_INDENT_2)


def gateway_command(config: Path) -> list[str]:
    script = Path(sys.executable).with_name("hybridgate")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "hybridgate.cli"]
    return [*base, "serve", "-c", str(config), "--port", "0", "--quiet"]


def traced_target(name: str, port: int, tokens: int) -> h.Target:
    """The harness's request, with a sampled ``traceparent`` header."""
    base = h.make_target(name, port, model="mock", n_tokens=tokens)
    requests = {
        k: v.replace(b"\r\n\r\n", b"\r\n" + TRACEPARENT + b"\r\n", 1) for k, v in base.requests.items()
    }
    return h.Target(name, base.host, base.port, requests, base.expected_content)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 4)


async def run_phase(
    clients: Sequence[h.Client], pids: dict[str, int], s: Settings, stream: bool
) -> dict[str, Any]:
    """Warm-up, then rounds of alternating pairs; per-round medians, added latency and CPU."""
    kinds = ("total", "ttft") if stream else ("total",)
    for _ in range(s.warmup):
        for c in clients:
            await c.call(stream)
    trees = {name: h.process_tree([pid]) for name, pid in pids.items()}
    cpu0 = {name: h.cpu_seconds(tree) for name, tree in trees.items()}
    pooled: dict[str, dict[str, list[float]]] = {c.target.name: {k: [] for k in kinds} for c in clients}
    rounds: list[dict[str, dict[str, float]]] = []
    served = 0
    for rnd in range(s.rounds):
        order = clients if rnd % 2 == 0 else clients[::-1]
        per: dict[str, dict[str, list[float]]] = {c.target.name: {k: [] for k in kinds} for c in order}
        for _ in range(s.per_round):
            for c in order:
                reply = await c.call(stream)
                served += 1
                if reply.error is None:
                    per[c.target.name]["total"].append(reply.latency)
                    if stream and reply.ttft is not None:
                        per[c.target.name]["ttft"].append(reply.ttft)
        for name, by_kind in per.items():
            for kind, values in by_kind.items():
                pooled[name][kind].extend(values)
        rounds.append({n: {k: h.median(v) for k, v in bk.items() if v} for n, bk in per.items()})
    cpu_ms = {
        name: round((h.cpu_seconds(trees[name]) - cpu0[name]) * 1000.0 / max(1, served // 2), 4)
        for name in pids
    }
    out: dict[str, Any] = {"cpu_ms_per_request": cpu_ms, "added": {}, "latency_ms": {}}
    for kind in kinds:
        diffs = [r["on"][kind] - r["off"][kind] for r in rounds if kind in r["on"] and kind in r["off"]]
        if diffs:
            out["added"][kind] = {
                "p50_ms": _ms(h.median(diffs)),
                "round_min_ms": _ms(min(diffs)),
                "round_max_ms": _ms(max(diffs)),
                "round_diffs_ms": [_ms(d) for d in diffs],
            }
        out["latency_ms"][kind] = {name: h.summarize_ms(pooled[name][kind]) for name in pooled}
    return out


async def measure(
    off: h.Target, on: h.Target, pids: dict[str, int], s: Settings, ledger: h.Ledger
) -> dict[str, Any]:
    clients = [h.Client(off, ledger, s.timeout), h.Client(on, ledger, s.timeout)]
    try:
        return {
            "non_stream": await run_phase(clients, pids, s, stream=False),
            "stream": await run_phase(clients, pids, s, stream=True),
        }
    finally:
        for c in clients:
            c.close()


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip()) if path.exists() else 0


def run(s: Settings) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    pinned = s.pin and len(cpus) >= 2
    driver_cpus, gateway_cpus = ({cpus[0]}, {cpus[1]}) if pinned else (None, None)
    if driver_cpus:
        os.sched_setaffinity(0, driver_cpus)
    ledger = h.Ledger()
    with (
        tempfile.TemporaryDirectory(prefix="hybridgate-bench-telemetry-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        mock = stack.enter_context(
            h.Child(
                "mock-upstream",
                h.mock_command(n_tokens=s.tokens),
                work / "mock.log",
                h.MOCK_READY,
                cpus=driver_cpus,
            )
        )
        mock_port = int(mock.start(timeout=30).group(1))
        gateways: dict[str, h.Child] = {}
        ports: dict[str, int] = {}
        for name, telemetry in (("off", False), ("on", True)):
            folder = work / name
            folder.mkdir()
            (folder / "gateway.yaml").write_bytes(gateway_config(mock_port, telemetry))
            child = stack.enter_context(
                h.Child(
                    f"gateway-{name}",
                    gateway_command(folder / "gateway.yaml"),
                    folder / "gateway.log",
                    GATEWAY_READY,
                    cpus=gateway_cpus,
                )
            )
            ports[name] = int(child.start(timeout=90).group(1))
            gateways[name] = child
        print(
            f"mock port {mock_port}; gateways off :{ports['off']} on :{ports['on']}; "
            + (f"driver+mock on core {cpus[0]}, gateways on core {cpus[1]}" if pinned else "not pinned"),
            file=sys.stderr,
        )
        off, on = traced_target("off", ports["off"], s.tokens), traced_target("on", ports["on"], s.tokens)
        pids = {name: child.pid for name, child in gateways.items()}
        started = time.time()
        with asyncio.Runner(loop_factory=h.loop_factory()) as runner:
            report = runner.run(measure(off, on, pids, s, ledger))
        for child in gateways.values():
            child.stop()  # SIGTERM: both flush what they hold
        sent_on = ledger.sent["on"]
        records = _count_lines(work / "on" / "decisions.jsonl")
        spans = _count_lines(work / "on" / "spans.jsonl")
        errors = dict(ledger.errors)
    checks = {
        "requests": dict(ledger.sent),
        "errors": errors,
        "decision_records": records,
        "spans": spans,
        "ok": not errors and records == sent_on and spans == 2 * sent_on,
    }
    report["checks"] = checks
    report["meta"] = {
        "schema": SCHEMA,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in s.__dict__.items()},
        "pinned": pinned,
        "started": started,
        "loop": h.loop_name(),
    }
    added = report["non_stream"]["added"].get("total", {}).get("p50_ms")
    report["target"] = {"added_p50_ms": TARGET_P50_MS, "met": added is not None and added < TARGET_P50_MS}
    return report


def print_report(report: dict[str, Any], path: Path, console: Console) -> None:
    table = Table(title="telemetry on vs off (c=1, alternating pairs)", title_justify="left")
    for column in (
        "phase",
        "off p50 ms",
        "on p50 ms",
        "added p50 ms",
        "round min..max",
        "CPU ms/req off",
        "on",
    ):
        table.add_column(column, justify="left" if column == "phase" else "right")
    nan = float("nan")
    for phase, kinds in (("non_stream", ("total",)), ("stream", ("ttft", "total"))):
        data = report[phase]
        for kind in kinds:
            added = data["added"].get(kind, {})
            lat = data["latency_ms"].get(kind, {})
            cpu = data["cpu_ms_per_request"]
            table.add_row(
                f"{phase.replace('_', '-')} {kind}",
                f"{lat.get('off', {}).get('p50', float('nan')):.3f}",
                f"{lat.get('on', {}).get('p50', float('nan')):.3f}",
                f"{added.get('p50_ms', float('nan')):.4f}",
                f"{added.get('round_min_ms', nan):.3f}..{added.get('round_max_ms', nan):.3f}",
                f"{cpu['off']:.3f}" if kind == "total" else "",
                f"{cpu['on']:.3f}" if kind == "total" else "",
            )
    console.print(table)
    checks = report["checks"]
    verdict = "OK" if checks["ok"] else "FAILED"
    console.print(
        f"checks: {verdict} (requests {checks['requests']}, errors {checks['errors']}, "
        f"decision records {checks['decision_records']}, spans {checks['spans']})",
        markup=False,
    )
    target = report["target"]
    console.print(f"target added p50 < {target['added_p50_ms']} ms: {'met' if target['met'] else 'missed'}")
    console.print(f"JSON: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_args(argv)
    h.sigterm_as_interrupt()
    err = Console(stderr=True)
    try:
        report = run(s)
    except KeyboardInterrupt:
        err.print("interrupted: every process started was stopped")
        return 130
    except RuntimeError as exc:  # a process did not start
        err.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        return 2
    path = h.write_results(report, s.json_path, RESULTS_DIR, "telemetry")
    print_report(report, path, Console(width=max(Console().width, 130)))
    return 0 if report["checks"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

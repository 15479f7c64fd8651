"""The demo, in order: each arm's gateway started, the trace replayed, the numbers gathered, the
gateway stopped (the hybrid one last, kept up for its dashboard unless told otherwise).

Arms run one after another, never at once: on a small machine the local runtime is CPU-bound,
and two gateways side by side would slow each other down. Every child process is stopped
whatever happens — an error, Ctrl-C, SIGTERM — by the ``AsyncExitStack`` that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import openai

from hybridgate import __version__
from hybridgate.config.loader import load_config
from hybridgate.config.schema import GatewayConfig, LlamaCppDeployment
from hybridgate.demo import cloud
from hybridgate.demo.arms import ARMS, DemoConfig
from hybridgate.demo.cpus import CpuPlan, pin_process, pin_self
from hybridgate.demo.driver import (
    CLIENT_TIMEOUT_S,
    Progress,
    ReadyWatcher,
    at,
    replay,
    trace_id,
    traceparent,
)
from hybridgate.demo.gateway import GatewayProcess
from hybridgate.demo.measure import ArmInput, measure, placement_of, write_requests
from hybridgate.demo.report import build_report, write_report
from hybridgate.demo.workload import DemoRequest, Schedule
from hybridgate.telemetry.log_reader import Record, read_log

LOG_WAIT_S = 10.0  # the decision log is written by a thread every 0.2 s
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class DemoPlan:
    """What to run (already validated)."""

    demo: DemoConfig
    schedule: Schedule
    trace: tuple[DemoRequest, ...]
    arms: tuple[str, ...]  # in running order; hybrid last
    configs: Mapping[str, Path]  # each arm's gateway.yaml, written and validated
    cpus: CpuPlan | None  # None: no pinning
    output: Path
    port: int
    seed: int
    wait: bool


Say = Callable[[str], None]


def _machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


def _headers_of(config: GatewayConfig, arm_number: int) -> Callable[[DemoRequest], Mapping[str, str]]:
    idempotent = {name for name, c in config.classes.items() if c.idempotent}

    def headers(request: DemoRequest) -> Mapping[str, str]:
        out = {
            "X-Hybridgate-Class": request.workload_class,
            "traceparent": traceparent(arm_number, request.index),
        }
        if request.workload_class in idempotent:
            out["Idempotency-Key"] = f"demo-{arm_number}-{request.index}"
        return out

    return headers


async def _records(path: Path, arm_number: int, expected: int) -> tuple[dict[int, Record], int]:
    """The arm's decision-log records by request index, once all ``expected`` are written."""
    ids = {trace_id(arm_number, i): i for i in range(expected)}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOG_WAIT_S
    while True:
        try:
            records = read_log(path).records
        except FileNotFoundError:
            records = []
        joined = {ids[r["trace_id"]]: r for r in records if r.get("trace_id") in ids}
        if len(joined) >= expected or loop.time() > deadline:
            return joined, len(records)
        await asyncio.sleep(0.2)


async def _report_progress(progress: Progress, started: float, total: int, say: Say) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        say(
            f"    t={loop.time() - started:4.0f} s  sent {progress.sent}/{total}  "
            f"answered {progress.answered} (local {progress.local}, "
            f"cloud {progress.answered - progress.local})  errors {progress.errors}"
        )


async def run_arm(
    plan: DemoPlan, arm: str, gateway: GatewayProcess, config: GatewayConfig, say: Say
) -> dict[str, Any]:
    """Replay the trace against a started gateway; the arm's section of the report."""
    arm_number = ARMS.index(arm)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        clouds = await cloud.find_clouds(http, gateway.base_url)
        await cloud.start_capture(http, clouds)
        client = openai.AsyncOpenAI(
            base_url=f"{gateway.base_url}/v1", api_key="demo", max_retries=0, timeout=CLIENT_TIMEOUT_S
        )
        loop = asyncio.get_running_loop()
        started = loop.time() + 0.2
        local = {n for n, d in config.deployments.items() if isinstance(d, LlamaCppDeployment)}
        cpus = plan.cpus

        def pin(name: str, pid: int) -> None:
            if cpus is not None and name in local:
                pin_process(pid, cpus.local)

        watcher = ReadyWatcher(http, gateway.base_url, started, on_new_pid=pin)
        await watcher.poll()  # the local runtime pinned before the first request
        progress = Progress()
        background = [asyncio.create_task(watcher.run())]
        background.append(asyncio.create_task(_report_progress(progress, started, len(plan.trace), say)))
        outage = plan.schedule.outage
        if outage is not None:

            async def begin() -> None:
                await cloud.start_outage(http, clouds, outage[1] - outage[0])
                watcher.note("outage injected", f"every cloud down for {outage[1] - outage[0]:g} s")

            async def end() -> None:
                watcher.note("outage over", "the clouds answer again")

            background += [
                asyncio.create_task(at(started, outage[0], begin)),
                asyncio.create_task(at(started, outage[1], end)),
            ]
        wall, load_before = time.monotonic(), os.getloadavg()[0]
        try:
            outcomes = await replay(
                client,
                plan.trace,
                _headers_of(config, arm_number),
                lambda d: placement_of(config, d),
                progress,
                started,
            )
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await client.close()
        wall = time.monotonic() - wall
        async with http.get(f"{gateway.base_url}/metrics") as response:
            metrics = await response.text()
        received = await cloud.received_text(http, clouds)
        await cloud.clear_faults(http, clouds)
    decisions = Path(str(config.decision_log.path))
    records, log_records = await _records(decisions, arm_number, len(plan.trace))
    processes = {"gateway": [gateway.pid or 0], **watcher.pids}
    data = ArmInput(
        arm, plan.trace, outcomes, records, log_records, metrics, received, watcher.events, processes, wall
    )
    write_requests(plan.output / arm / "requests.jsonl", data, config)
    result = measure(data, config, plan.schedule)
    # Other work on the machine slows the local runtime down: say how busy it was.
    result["driver"]["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def _say_arm(say: Say, n: int, total: int, arm: str, result: Mapping[str, Any]) -> None:
    split = result["split"]
    say(
        f"  [{n}/{total}] {arm}: {result['within_budget']}/{result['requests']} within budget "
        f"({100 * (result['slo_attainment'] or 0):.1f}%), local {split.get('local', 0)} / cloud "
        f"{split.get('cloud', 0)}, {result['requests'] - result['answered']} errors, "
        f"${result['cost_usd']['total']:.4f}, {result['sensitive']['violations']} sensitive sent to a cloud"
    )


def meta_of(plan: DemoPlan, wall_s: float) -> dict[str, Any]:
    local = [d for d in plan.demo.loaded.config.deployments.values() if isinstance(d, LlamaCppDeployment)]
    return {
        "hybridgate": __version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": str(plan.demo.path),
        "seed": plan.seed,
        "duration_s": plan.schedule.duration_s,
        "requests": len(plan.trace),
        "schedule": {"bursts": [list(b) for b in plan.schedule.bursts], "outage": plan.schedule.outage},
        "arms_run_in_order": list(plan.arms),
        "local_model": ", ".join(Path(d.model_path).name for d in local),
        "machine": _machine(),
        "cpu_pinning": plan.cpus.to_dict() if plan.cpus is not None else None,
        "wall_s": round(wall_s, 1),
    }


async def run(
    plan: DemoPlan, say: Say, on_report: Callable[[Mapping[str, Any], Sequence[Path]], None]
) -> None:
    """Every arm in order, the report, then (``plan.wait``) the hybrid gateway until cancelled."""
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    if plan.cpus is not None:
        pin_self(plan.cpus)  # the gateways and their sandboxes inherit it
    async with contextlib.AsyncExitStack() as stack:
        hybrid: GatewayProcess | None = None
        for n, arm in enumerate(plan.arms, 1):
            config_path = plan.configs[arm]
            config = load_config(config_path).config
            gateway = GatewayProcess(config_path, config_path.parent / "gateway.log", port=config.server.port)
            say(f"  [{n}/{len(plan.arms)}] {arm}: starting `hybridgate serve -c {config_path}`")
            async with contextlib.AsyncExitStack() as arm_stack:
                await gateway.start()
                if arm == "hybrid" and plan.wait:
                    stack.push_async_callback(gateway.stop)  # kept up after the report
                    hybrid = gateway
                else:
                    arm_stack.push_async_callback(gateway.stop)
                say(f"      listening on {gateway.base_url}; replaying {len(plan.trace)} requests")
                results[arm] = await run_arm(plan, arm, gateway, config, say)
            _say_arm(say, n, len(plan.arms), arm, results[arm])
        report = build_report(meta_of(plan, time.monotonic() - started), results)
        on_report(report, write_report(report, plan.output))
        if hybrid is None:
            say("--no-wait: every gateway has stopped (the dashboard needs a running one)")
            return
        say(f"dashboard: {hybrid.base_url}/dashboard   (OpenAI base URL {hybrid.base_url}/v1)")
        say("the hybrid gateway stays up for it: Ctrl-C to stop")
        await asyncio.Event().wait()

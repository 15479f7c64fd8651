"""``hybridgate demo``: check the input, plan the run, run it, print the report.

Exit status: 0 done (also when the kept-up gateway is stopped with Ctrl-C afterwards), 1 a
gateway did not start or the run failed, 2 invalid input (nothing is started), 130 interrupted
by Ctrl-C and 143 by SIGTERM before the report (every child process stopped either way).
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

from hybridgate.childproc import ChildStartError
from hybridgate.demo.arms import BASELINES, read_demo_config, write_arm_config
from hybridgate.demo.cpus import plan_cpus
from hybridgate.demo.workload import make_schedule, make_trace
from hybridgate.errors import ConfigError

if TYPE_CHECKING:  # the runner imports the openai SDK, which may be missing: checked first
    from hybridgate.demo.runner import DemoPlan

NO_SDK = (
    "the demo drives the gateway with the official openai SDK, which is not installed: "
    "pip install 'hybridgate[demo]' (`make demo` installs it)"
)


@dataclass(frozen=True, slots=True)
class DemoArgs:
    """The command line, as given."""

    config: Path
    model: Path | None
    duration_s: float
    seed: int
    baselines: str
    outage_start_s: float | None
    outage_length_s: float | None
    rate_scale: float
    output: Path
    port: int
    wait: bool
    pin: bool = True


def parse_baselines(text: str) -> tuple[str, ...]:
    """``all``, ``none`` or a comma-separated list of ``local-only`` and ``cloud-only``."""
    text = text.strip()
    if text == "all":
        return BASELINES
    if text in ("", "none"):
        return ()
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(
            [("--baselines", f"unknown baseline(s) {', '.join(unknown)} (known: {', '.join(BASELINES)})")]
        )
    return tuple(n for n in BASELINES if n in names)


def _check_outage(args: DemoArgs) -> None:
    start, length = args.outage_start_s, args.outage_length_s
    if start is not None and not 0 <= start < args.duration_s:
        raise ConfigError(
            [("--outage-start", f"{start:g} s is not within the run (0 to {args.duration_s:g} s)")]
        )
    if length is not None and length < 0:
        raise ConfigError([("--outage-length", "must not be negative (0: no outage)")])


def _plan(args: DemoArgs) -> DemoPlan:
    from hybridgate.demo.runner import DemoPlan

    baselines = parse_baselines(args.baselines)
    _check_outage(args)
    demo = read_demo_config(args.config, args.model)
    schedule = make_schedule(args.duration_s, args.outage_start_s, args.outage_length_s)
    output = args.output.resolve()
    arms = (*baselines, "hybrid")
    try:
        configs = {
            arm: write_arm_config(demo, arm, output / arm, args.port if arm == "hybrid" else 0)
            for arm in arms
        }
    except OSError as exc:
        raise ConfigError([("--output", f"cannot write to {output}: {exc.strerror or exc}")]) from exc
    return DemoPlan(
        demo=demo,
        schedule=schedule,
        trace=make_trace(args.seed, schedule, args.rate_scale),
        arms=arms,
        configs=configs,
        cpus=plan_cpus() if args.pin else None,
        output=output,
        port=args.port,
        seed=args.seed,
        wait=args.wait,
    )


def _intro(plan: DemoPlan, out: Console) -> None:
    schedule = plan.schedule
    outage = schedule.outage
    arms = len(plan.arms)
    minutes = arms * (schedule.duration_s + 10) / 60
    out.print(
        f"hybridgate demo: {len(plan.trace)} agent requests over {schedule.duration_s:g} s "
        f"(seed {plan.seed}; bursts at "
        + ", ".join(f"{lo:g}-{hi:g} s" for lo, hi in schedule.bursts)
        + (f"; cloud outage {outage[0]:g}-{outage[1]:g} s" if outage else "; no outage")
        + f"), against {arms} gateway(s) in turn: {', '.join(plan.arms)}. About {minutes:.1f} min.",
        highlight=False,
    )


async def _main(plan: DemoPlan, out: Console, err: Console, state: dict[str, bool]) -> None:
    from hybridgate.demo.runner import run

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def terminate() -> None:
        state["sigterm"] = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)

    def say(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    def on_report(report: Mapping[str, Any], paths: Sequence[Path]) -> None:
        from hybridgate.demo.report import SUMMARY, markdown

        state["reported"] = True
        out.print(Markdown(markdown(report, SUMMARY)), soft_wrap=False)
        out.print(f"full report: {', '.join(str(p) for p in paths)}", highlight=False)

    try:
        await run(plan, say, on_report)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_demo(args: DemoArgs, out: Console, err: Console) -> int:
    """Returns the exit status (see the module's docstring)."""
    if importlib.util.find_spec("openai") is None:
        err.print(f"[bold red]error:[/] {NO_SDK}")
        return 2
    try:
        plan = _plan(args)
    except ConfigError as exc:
        err.print("[bold red]error:[/] invalid demo input")
        for where, message in exc.problems:
            err.print(f"  [red]✗[/] {where}: {message}" if where else f"  [red]✗[/] {message}")
        return 2
    _intro(plan, out)
    state = {"reported": False, "sigterm": False}
    try:
        asyncio.run(_main(plan, out, err, state))
    except (KeyboardInterrupt, asyncio.CancelledError):
        if state["reported"]:
            err.print("stopped: every child process is gone")
            return 0
        err.print("[yellow]interrupted:[/] every child process stopped; no report written")
        return 143 if state["sigterm"] else 130
    except ChildStartError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 1
    except (OSError, aiohttp.ClientError) as exc:
        # A gateway that stopped answering mid-run (its log is in the arm's folder).
        err.print(f"[bold red]error:[/] {escape(str(exc) or type(exc).__name__)}")
        return 1
    return 0

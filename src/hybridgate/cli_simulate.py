"""``hybridgate simulate``: load the files, run the policy and the baselines, write the report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hybridgate.errors import ConfigError
from hybridgate.sim.baselines import BASELINES
from hybridgate.sim.engine import Scenario, run_scenario
from hybridgate.sim.report import have_matplotlib, write_report
from hybridgate.sim.scenario import load_scenario


def parse_baselines(text: str) -> list[str]:
    """``all``, ``none`` or a comma-separated list of baseline names."""
    text = text.strip()
    if text == "all":
        return list(BASELINES)
    if text in ("", "none"):
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(
            [("--baselines", f"unknown baseline(s) {', '.join(unknown)} (known: {', '.join(BASELINES)})")]
        )
    return names


def _expected_requests(scenario: Scenario) -> int:
    if scenario.requests is not None:
        return scenario.requests
    duration = scenario.duration_s or scenario.workload.duration_s
    if duration is None and scenario.trace and not scenario.workload.classes:
        return len(scenario.trace)
    duration = duration or 60.0
    replayed = sum(1 for r in scenario.trace if r.t < duration)
    return max(1, replayed + round(sum(c.rate_per_s for c in scenario.workload.classes) * duration))


def run_simulate(
    config: Path,
    workload: Path,
    faults: Path | None,
    *,
    seed: int,
    requests: int | None,
    duration_s: float | None,
    baselines: str,
    local_share: float,
    outdir: Path,
    progress: bool,
    out: Console,
    err: Console,
) -> int:
    """Returns the exit status: 0 done, 2 invalid input (each problem printed with its YAML path)."""
    try:
        routers = ["policy", *parse_baselines(baselines)]
        scenario = load_scenario(
            config,
            workload,
            faults,
            seed=seed,
            requests=requests,
            duration_s=duration_s,
            local_share=local_share,
        )
    except ConfigError as exc:
        err.print("[bold red]error:[/] invalid simulation input")
        for where, message in exc.problems:
            err.print(f"  [red]✗[/] {where}: {message}" if where else f"  [red]✗[/] {message}")
        return 2
    expected = _expected_requests(scenario)
    with Progress(
        TextColumn("{task.description:<15}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not progress,
        transient=False,
    ) as bar:
        tasks = {name: bar.add_task(name, total=expected) for name in routers}

        def advance(router: str, done: int) -> None:
            bar.update(tasks[router], completed=done)

        results = run_scenario(scenario, routers, advance)
        for name, result in results.items():
            bar.update(tasks[name], completed=result.requests, total=result.requests)
    meta = {
        "config": str(config),
        "workload": str(workload),
        "faults": str(faults) if faults else None,
        "seed": seed,
        "requests": results["policy"].requests,
        "routers": routers,
    }
    report = write_report(results, meta, outdir)
    policy = report["runs"]["policy"]
    wall = sum(r.wall_s for r in results.values())
    total = sum(r.requests for r in results.values())
    out.print(
        f"simulated {total} requests ({len(routers)} routers) in {wall:.1f} s "
        f"({total / wall if wall else 0:.0f} requests/s); policy: "
        f"{policy['governance_violations']} governance violations, ${policy['cost_usd_total']:.4f}"
    )
    if not have_matplotlib():
        out.print("[yellow]matplotlib is not installed (pip install 'hybridgate[sim]'): no charts[/]")
    out.print(f"report: {outdir / 'report.md'}, {outdir / 'report.html'}, {outdir / 'report.json'}")
    return 0

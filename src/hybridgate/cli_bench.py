"""``hybridgate bench local``: measure the embedded llama.cpp runtime, write a simulator profile.

The runtime is the gateway's own (:mod:`hybridgate.sim.measure`: the supervised worker of a
``llamacpp`` deployment); the fit is :mod:`hybridgate.sim.calibrate`. The profile YAML says in
its ``description`` and ``sources`` what was measured (model file, machine, date,
llama-cpp-python version, samples); ``--json`` also writes every sample.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
import yaml
from rich.console import Console
from rich.table import Table

from hybridgate import __version__

bench_app = typer.Typer(help="Measure this machine for the simulator.", no_args_is_help=True)
SCHEMA = "hybridgate-bench-local/1"
DEFAULT_MODEL = Path("models/tiny.gguf")
_HEADROOM_TOKENS = 64  # chat template and slack beyond the longest prompt plus its answer


class BenchInputError(ValueError):
    """Bad options or files: printed as one error line, exit status 2."""


@dataclass(frozen=True, slots=True)
class Target:
    """The deployment measured, and where its settings came from."""

    deployment: Any  # LlamaCppDeployment (imported lazily: the CLI starts fast)
    origin: str


def _parse_cpus(text: str | None) -> frozenset[int] | None:
    if text is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise BenchInputError("--worker-cpus needs Linux (sched_setaffinity)")
    try:
        cpus = frozenset(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise BenchInputError(f"--worker-cpus takes comma-separated CPU numbers, not {text!r}") from None
    count = os.cpu_count() or 1
    if not cpus or min(cpus) < 0 or max(cpus) >= count:
        raise BenchInputError(f"--worker-cpus {text}: this machine has CPUs 0-{count - 1}")
    return cpus


def _parse_lengths(text: str) -> tuple[int, ...]:
    try:
        lengths = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise BenchInputError(f"--prompt-lengths takes comma-separated integers, not {text!r}") from None
    if len(lengths) < 2 or lengths[0] < 1:
        raise BenchInputError("--prompt-lengths needs two or more distinct positive lengths (words)")
    return lengths


def _target(model: Path | None, config: Path | None, deployment: str | None, threads: int | None) -> Target:
    from hybridgate.config.loader import load_config
    from hybridgate.config.schema import LlamaCppDeployment
    from hybridgate.errors import ConfigError

    if model is not None and (config is not None or deployment is not None):
        raise BenchInputError("give --model, or -c/--config with --deployment, not both")
    if config is None:
        if deployment is not None:
            raise BenchInputError("--deployment names a deployment of -c/--config: give the configuration")
        path = model or DEFAULT_MODEL
        if not path.is_file():
            raise BenchInputError(f"model file {path} not found (make models writes models/tiny.gguf)")
        settings = {"type": "llamacpp", "model_path": str(path.resolve()), "n_threads": threads}
        return Target(LlamaCppDeployment.model_validate(settings), f"--model {path}")
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        problems = "; ".join(f"{w}: {m}" if w else m for w, m in exc.problems)
        raise BenchInputError(f"{config}: invalid configuration: {problems}") from None
    local = {
        n: d
        for n, d in loaded.config.deployments.items()
        if isinstance(d, LlamaCppDeployment) and not d.embeddings
    }
    if deployment is None:
        if len(local) != 1:
            names = ", ".join(sorted(local)) or "none"
            raise BenchInputError(f"{config}: name the llamacpp chat deployment with --deployment ({names})")
        deployment = next(iter(local))
    if deployment not in local:
        names = ", ".join(sorted(local)) or "none"
        raise BenchInputError(f"{config}: {deployment!r} is not a llamacpp chat deployment ({names})")
    chosen = local[deployment]
    if threads is not None:
        chosen = chosen.model_copy(update={"n_threads": threads})
    if not Path(chosen.model_path).is_file():
        raise BenchInputError(f"{config}: deployments.{deployment}: model file {chosen.model_path} not found")
    return Target(chosen, f"{config} deployment {deployment}")


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _rounded(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: _sig(v) if isinstance(v, float) else v for k, v in spec.items() if v is not None}


def profile_yaml(profile: Any, header: list[str]) -> str:
    """The profile as YAML: a comment header, the sources as a list, distributions in flow style."""
    data = profile.model_dump()
    sources = data.pop("sources")
    for key in ("ttft", "decode_tps", "heavy_tail"):
        data[key] = _rounded(data[key])
    for key in ("prefill_tokens_per_s", "error_rate", "cold_start_s"):
        data[key] = _sig(data[key])
    head = {k: data.pop(k) for k in ("name", "description")}
    text = "".join(f"# {line}\n" for line in header)
    text += yaml.safe_dump(head, sort_keys=False, width=110, allow_unicode=True)
    text += yaml.safe_dump({"sources": sources}, sort_keys=False, width=110, allow_unicode=True)
    return text + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)


def _model_facts(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {"file": path.name, "path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _ms(values: list[float]) -> str:
    from hybridgate.sim.calibrate import percentile

    p50, p95 = percentile(values, 0.5) * 1000, percentile(values, 0.95) * 1000
    return f"{p50:.2f} ms (p95 {p95:.2f}, n={len(values)})"


def _table(report: dict[str, Any], m: Any, fitted: Any) -> Table:
    from hybridgate.sim.calibrate import percentile, prefill_points

    p = fitted.profile
    model, machine = report["model"], report["machine"]
    table = Table(
        title=f"hybridgate bench local: {model['file']} on {machine['cpu']} ({machine['cores']} cores)"
    )
    table.add_column("measurement")
    table.add_column("result", justify="right")
    table.add_column("profile field")
    table.add_row(
        "cold start (worker start to model ready)",
        f"{percentile(m.start_s, 0.5):.3f} s (min {min(m.start_s):.3f}, max {max(m.start_s):.3f}, "
        f"n={len(m.start_s)})",
        f"cold_start_s: {_sig(p.cold_start_s)}",
    )
    table.add_row("model load (in the worker)", f"{percentile(m.load_s, 0.5) * 1000:.1f} ms", "")
    short = [s.ttft_s for s in m.short]
    table.add_row(
        f"TTFT, short prompt (~{fitted.short_prompt_tokens} tokens)",
        _ms(short),
        f"ttft: median {_sig(p.ttft.median)} s, p95 {_sig(p.ttft.p95 or p.ttft.median)} s",
    )
    points = ", ".join(f"{n:.0f}: {t * 1000:.2f} ms" for n, t in prefill_points([*m.short, *m.prefill]))
    table.add_row(
        "TTFT by prompt tokens (lower quartiles)",
        points,
        f"prefill_tokens_per_s: {_sig(p.prefill_tokens_per_s)}",
    )
    fit = fitted.prefill
    note = (
        "ttft: short prompt less its prefill"
        if fitted.short_overcount_s == 0
        else f"ttft: short prompt as measured (intercept <= 0: +{fitted.short_overcount_s * 1000:.2f} ms)"
    )
    table.add_row(
        "prefill fit (least squares)",
        f"{fit.slope * 1e6:.3f} µs/token {fit.intercept * 1000:+.3f} ms, r² {fit.r2:.3f}",
        note,
    )
    rates = [r for r in (s.decode_tps for s in m.decode) if r is not None]
    table.add_row(
        f"decode ({report['plan']['decode_tokens']} tokens)",
        f"{percentile(rates, 0.5):.0f} tok/s (p5 {percentile(rates, 0.05):.0f}, "
        f"p95 {percentile(rates, 0.95):.0f}, n={len(rates)})",
        f"decode_tps: median {_sig(p.decode_tps.median)}",
    )
    context = fitted.decode_context
    if context is not None:
        table.add_row(
            "decode time per token by context (fit)",
            f"{context.intercept * 1e6:.1f} µs {context.slope * 1e9:+.2f} µs per 1000 context tokens, "
            f"r² {context.r2:.2f}",
            "not modelled (one decode rate)",
        )
    table.add_row("failed requests", f"{m.errors} of {m.runs}", f"error_rate: {_sig(p.error_rate)}")
    return table


def run_bench_local(
    *,
    model: Path | None,
    config: Path | None,
    deployment: str | None,
    threads: int | None,
    plan_args: dict[str, Any],
    name: str | None,
    out: Path,
    json_path: Path | None,
    progress: bool,
    console: Console,
    err: Console,
) -> int:
    """Returns the exit status: 0 written, 1 the measurements do not fit, 2 bad input."""
    from hybridgate.errors import HybridgateError
    from hybridgate.sim.calibrate import CalibrationError, fit_profile
    from hybridgate.sim.measure import PinError, Plan, describe_machine, measure_local
    from hybridgate.sim.models import load_profile

    try:
        lengths = _parse_lengths(plan_args.pop("prompt_lengths"))
        cpus = _parse_cpus(plan_args.pop("worker_cpus"))
        plan = Plan(prompt_lengths=lengths, worker_cpus=cpus, **plan_args)
        target = _target(model, config, deployment, threads)
        dep = target.deployment
        n_ctx = dep.n_ctx or dep.context_window
        if lengths[-1] + plan.decode_tokens + _HEADROOM_TOKENS > n_ctx:
            raise BenchInputError(
                f"the longest prompt ({lengths[-1]} words) plus --decode-tokens {plan.decode_tokens} "
                f"does not fit the context of {n_ctx} tokens"
            )
    except BenchInputError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        return 2
    model_path = Path(dep.model_path)
    facts, machine = _model_facts(model_path), describe_machine()

    def say(message: str) -> None:
        if progress:
            err.print(f"  {message}")

    started = time.time()
    try:
        m = asyncio.run(measure_local(dep, plan, say))
    except HybridgateError as exc:
        err.print(f"[bold red]error:[/] the runtime did not start: {exc.message}")
        return 2
    except PinError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        return 2
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    samples = (
        f"{len(m.start_s)} cold starts, {len(m.short)} short-prompt, {len(m.prefill)} prefill "
        f"({len(lengths)} lengths) and {len(m.decode)} decode requests"
    )
    where = f"{machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable)"
    threads_text = "llama.cpp's default" if dep.n_threads is None else str(dep.n_threads)
    if plan.worker_cpus is not None:
        threads_text += f" (worker pinned to CPUs {','.join(map(str, sorted(plan.worker_cpus)))})"
    sources = [
        f"measured by `hybridgate bench local` (hybridgate {__version__}) on {date}: the embedded llama.cpp "
        "runtime (the gateway's supervised worker)",
        f"model: {facts['file']} ({facts['bytes']} bytes, sha256 {facts['sha256'][:16]}), "
        f"n_threads {threads_text}, n_ctx {n_ctx}, from {target.origin}",
        f"machine: {where}, {machine['os']}, Python {machine['python']}, "
        f"llama-cpp-python {machine['llama_cpp_python']}",
        f"samples: {samples}",
    ]
    description = (
        f"{facts['file']} in llama.cpp (llama-cpp-python {machine['llama_cpp_python']}) on {where}, one slot"
    )
    try:
        fitted = fit_profile(
            m,
            name=name or f"local-{model_path.stem}",
            max_queue=dep.max_queue,
            description=description,
            sources=sources,
        )
    except CalibrationError as exc:
        err.print(f"[bold red]error:[/] the measurements do not fit a profile: {exc}")
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    header = [
        f"Simulator backend profile measured by `hybridgate bench local` on {date}.",
        f"Samples: {samples}.",
    ]
    out.write_text(profile_yaml(fitted.profile, header), encoding="utf-8")
    written = load_profile(out)  # what a workload will read: it must validate
    report = {
        "schema": SCHEMA,
        "date": date,
        "hybridgate": __version__,
        "model": facts,
        "machine": machine,
        "deployment": {
            "origin": target.origin,
            "n_threads": dep.n_threads,
            "n_ctx": n_ctx,
            "max_queue": dep.max_queue,
        },
        "plan": {
            **asdict(plan),
            "prompt_lengths": list(lengths),
            "worker_cpus": None if plan.worker_cpus is None else sorted(plan.worker_cpus),
        },
        "profile": written.model_dump(mode="json"),
        "profile_path": str(out),
        "fit": {
            "prefill_slope_s_per_token": fitted.prefill.slope,
            "prefill_intercept_s": fitted.prefill.intercept,
            "prefill_r2": fitted.prefill.r2,
            "short_prompt_tokens": fitted.short_prompt_tokens,
            "short_overcount_s": fitted.short_overcount_s,
            "decode_s_per_token_vs_context": None
            if fitted.decode_context is None
            else {
                "intercept_s": fitted.decode_context.intercept,
                "slope_s_per_context_token": fitted.decode_context.slope,
                "r2": fitted.decode_context.r2,
            },
        },
        "samples": {
            "start_s": m.start_s,
            "load_s": m.load_s,
            "short": [asdict(s) for s in m.short],
            "prefill": [asdict(s) for s in m.prefill],
            "decode": [asdict(s) for s in m.decode],
            "errors": m.errors,
        },
    }
    console.print(_table(report, m, fitted))
    console.print(f"profile: {out}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        console.print(f"json: {json_path}")
    return 0


@bench_app.command("local")
def bench_local(
    model: Annotated[
        Path | None, typer.Option("--model", help="GGUF file (default models/tiny.gguf).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Configuration holding the deployment to measure.")
    ] = None,
    deployment: Annotated[
        str | None, typer.Option("--deployment", help="The llamacpp deployment of --config to measure.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="llama.cpp threads (default: the deployment's).")
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=2, help="Requests per measurement.")] = 10,
    cold_starts: Annotated[int, typer.Option("--cold-starts", min=1, help="Worker starts timed.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Discarded requests after the load.")] = 3,
    prompt_lengths: Annotated[
        str,
        typer.Option("--prompt-lengths", help="Prompt sizes for the prefill fit, words (comma-separated)."),
    ] = "16,256,1024,2048",
    short_tokens: Annotated[
        int, typer.Option("--short-prompt", min=1, help="Words of the short prompt (TTFT).")
    ] = 16,
    decode_tokens: Annotated[
        int, typer.Option("--decode-tokens", min=2, help="Output tokens of each decode run.")
    ] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the prompts' words.")] = 1,
    worker_cpus: Annotated[
        str | None, typer.Option("--worker-cpus", help="Pin the worker to these CPUs, e.g. 1 (Linux).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Profile name (default local-<model>).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the profile YAML goes.")] = Path(
        "local-profile.yaml"
    ),
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write every sample as JSON here.")
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Say what runs, on stderr.")
    ] = True,
) -> None:
    """Measure the local llama.cpp runtime (cold start, TTFT, prefill rate, decode speed) and write a
    simulator backend profile from it (and, with --json, every sample)."""
    code = run_bench_local(
        model=model,
        config=config,
        deployment=deployment,
        threads=threads,
        plan_args={
            "repeats": repeats,
            "cold_starts": cold_starts,
            "warmup": warmup,
            "prompt_lengths": prompt_lengths,
            "short_tokens": short_tokens,
            "decode_tokens": decode_tokens,
            "seed": seed,
            "worker_cpus": worker_cpus,
        },
        name=name,
        out=out,
        json_path=json_path,
        progress=progress,
        console=Console(soft_wrap=True),
        err=Console(stderr=True, soft_wrap=True),
    )
    raise typer.Exit(code=code)

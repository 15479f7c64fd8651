"""The ``hybridgate`` command line: serve, check, config schema, models prepare, sandbox, demo, bench."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from hybridgate import __version__
from hybridgate.cli_bench import bench_app
from hybridgate.config.loader import LoadedConfig, load_config
from hybridgate.config.schema import GatewayConfig
from hybridgate.errors import ConfigError, HybridgateError


def _add_tenancy_commands(root: typer.Typer) -> None:
    from hybridgate.cli_tenancy import audit_app, budgets_app, cost_app, keys_app, tenants_app

    root.add_typer(keys_app, name="keys")
    root.add_typer(tenants_app, name="tenants")
    root.add_typer(budgets_app, name="budgets")
    root.add_typer(audit_app, name="audit")
    root.add_typer(cost_app, name="cost")


app = typer.Typer(
    name="hybridgate",
    help="A hybrid local/cloud inference gateway for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Configuration tools.", no_args_is_help=True)
models_app = typer.Typer(help="Local model files.", no_args_is_help=True)
log_app = typer.Typer(help="The decision log: one record per request.", no_args_is_help=True)
slo_app = typer.Typer(
    help="Service level objectives: Prometheus rules, Grafana dashboard.", no_args_is_help=True
)
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(log_app, name="log")
app.add_typer(slo_app, name="slo")
_add_tenancy_commands(app)
app.add_typer(bench_app, name="bench")

err_console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)

ConfigPath = Annotated[Path, typer.Option("--config", "-c", help="Path to the YAML configuration.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hybridgate {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """hybridgate: route every agent request to local or cloud inference by budget, data and cost."""


def _load_or_exit(path: Path) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {path}: invalid configuration")
        for where, message in exc.problems:
            err_console.print(f"  [red]✗[/] {where}: {message}" if where else f"  [red]✗[/] {message}")
        raise typer.Exit(code=2) from None


@app.command()
def check(config: Annotated[Path, typer.Argument(help="Configuration file to validate.")]) -> None:
    """Validate and lint a configuration; exit 0 when valid (warnings allowed), 2 when not."""
    loaded = _load_or_exit(config)
    for where, message in loaded.warnings:
        out_console.print(f"  [yellow]![/] {where}: {message}")
    cfg = loaded.config
    out_console.print(
        f"[green]✓[/] {config}: valid ({len(cfg.deployments)} deployments, {len(cfg.models)} models, "
        f"{len(loaded.warnings)} warnings)"
    )


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the configuration file (for editor completion)."""
    schema = GatewayConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hybridgate configuration"
    typer.echo(json.dumps(schema, indent=2))


@config_app.command("reference")
def config_reference() -> None:
    """Print the Markdown reference of every option (embedded in docs/configuration.md)."""
    from hybridgate.config.reference import render_reference

    typer.echo(render_reference())


@models_app.command("prepare")
def models_prepare(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the models.")] = Path("models"),
) -> None:
    """Generate the embedded default models (tiny random-weight chat model, MiniLM embeddings)."""
    from hybridgate.localmodel import prepare_default_models

    for name, path in prepare_default_models(directory).items():
        out_console.print(f"[green]✓[/] {name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")


@models_app.command("large")
def models_large(
    path: Annotated[Path, typer.Option("--out", help="Output GGUF path.")] = Path("models/large-q4km.gguf"),
) -> None:
    """Generate the 1.1B-parameter-shape Q4_K_M stand-in (random weights, realistic latency)."""
    from hybridgate.localmodel.large import write_large_model

    if path.exists():
        out_console.print(f"[green]✓[/] {path} exists")
        return
    written = write_large_model(path)
    out_console.print(f"[green]✓[/] {written} ({written.stat().st_size / 1e6:.0f} MB)")


OutPath = Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")]


def _write_or_print(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.write_text(text)
    except OSError as exc:
        err_console.print(f"[bold red]error:[/] cannot write {output}: {exc.strerror}")
        raise typer.Exit(code=1) from None
    err_console.print(f"[green]✓[/] wrote {output}")


@slo_app.command("rules")
def slo_rules(
    config: ConfigPath,
    output: OutPath = None,
    breaker_open_for: Annotated[
        str,
        typer.Option(help="Alert when a breaker has not been closed for this long (Prometheus duration)."),
    ] = "15m",
    regression_factor: Annotated[
        float,
        typer.Option(
            min=1.0, help="Alert when a deployment's TTFT p95 exceeds its 1-day average this many times."
        ),
    ] = 2.0,
) -> None:
    """Prometheus recording rules and multi-window multi-burn-rate alerts for every class's SLOs."""
    from hybridgate.telemetry.slo_rules import AlertSettings, render

    if not _is_duration(breaker_open_for):
        err_console.print(
            f"[bold red]error:[/] --breaker-open-for: {breaker_open_for!r} is not a duration like 15m"
        )
        raise typer.Exit(code=2)
    loaded = _load_or_exit(config)
    settings = AlertSettings(breaker_open_for=breaker_open_for, regression_factor=regression_factor)
    _write_or_print(render(loaded.config.classes, settings), output)


@slo_app.command("dashboard")
def slo_dashboard(config: ConfigPath, output: OutPath = None) -> None:
    """A Grafana dashboard (JSON) of every class's SLOs, from the same definitions as the rules."""
    from hybridgate.telemetry.slo_dashboard import dashboard

    loaded = _load_or_exit(config)
    _write_or_print(json.dumps(dashboard(loaded.config.classes), indent=2, ensure_ascii=False) + "\n", output)


def _is_duration(text: str) -> bool:
    import re

    return re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", text) is not None


def _banner(host: str, port: int, loaded: LoadedConfig) -> str:
    base = f"http://{host}:{port}"
    chat_models = [
        n for n, m in loaded.config.models.items() if any(loaded.is_configured(d) for d in m.deployments)
    ]
    model = chat_models[0] if chat_models else next(iter(loaded.config.models))
    auth = loaded.config.server.auth
    keyless = auth.disabled or not (auth.api_keys or loaded.config.tenancy.store)
    key = "sk-anything" if keyless else "$HYBRIDGATE_API_KEY"
    return f"""
hybridgate {__version__} listening on {base}  (config: {loaded.source})
models: {", ".join(loaded.config.models)}

Try it:

  curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\
    -H 'authorization: Bearer {key}' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}], "max_tokens": 32}}'

  python - <<'EOF'      # pip install openai
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{key}")
  reply = client.chat.completions.create(model="{model}", max_tokens=32,
                                         messages=[{{"role": "user", "content": "Hello!"}}])
  print(reply.choices[0].message.content, reply.usage)
  EOF
"""


@app.command()
def serve(
    config: ConfigPath,
    host: Annotated[str | None, typer.Option(help="Listen address (overrides server.host).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port (overrides server.port; 0 = any free).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="Server processes sharing the port (overrides server.workers)."),
    ] = None,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write {'port': N, 'pid': P} here once serving (for supervisors).")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Do not print the usage banner.")] = False,
) -> None:
    """Run the gateway."""
    from hybridgate.config.loader import NO_AUTH, auth_configured, workers_problem
    from hybridgate.serving.worker import build_gateway, serve_one

    loaded = _load_or_exit(config)
    server_cfg = loaded.config.server
    count = server_cfg.workers if workers is None else workers
    problem = workers_problem(loaded.config, count)
    if problem is not None:
        where = "--workers" if workers is not None else "server.workers"
        err_console.print(f"[bold red]error:[/] {where}: {problem}")
        raise typer.Exit(code=2)
    logging.basicConfig(
        level=server_cfg.log_level.upper(),
        format="%(asctime)s %(levelname)s "
        + ("%(processName)s " if count > 1 else "")
        + "%(name)s: %(message)s",
        stream=sys.stderr,
    )
    listen_host = host or server_cfg.host
    listen_port = server_cfg.port if port is None else port
    if not auth_configured(loaded.config):
        err_console.print(f"[bold red]error:[/] server.auth: {NO_AUTH}")
        raise typer.Exit(code=2)
    sock = socket.socket(socket.AF_INET6 if ":" in listen_host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen_host, listen_port))
    except OSError as exc:
        err_console.print(f"[bold red]error:[/] cannot listen on {listen_host}:{listen_port}: {exc.strerror}")
        raise typer.Exit(code=1) from None
    bound_port = sock.getsockname()[1]
    # The pid in the ready file is the one to signal: the supervisor's with several workers.
    supervisor_pid = os.getpid()

    def on_ready() -> None:
        typer.echo(f"hybridgate: listening on http://{listen_host}:{bound_port}", err=True)
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps({"port": bound_port, "pid": supervisor_pid}))
            tmp.replace(ready_file)
        if not quiet:
            typer.echo(_banner(listen_host, bound_port, loaded))

    if count > 1:
        raise typer.Exit(code=_serve_workers(loaded, sock, count, on_ready))
    try:
        gateway = build_gateway(loaded)
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(code=2) from None
    try:
        serve_one(gateway, sock, on_ready)
    except HybridgateError as exc:  # e.g. the key store is locked or unreadable
        err_console.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(code=2) from None


def _serve_workers(
    loaded: LoadedConfig, sock: socket.socket, count: int, on_ready: Callable[[], None]
) -> int:
    """``count`` worker processes on ``sock`` under a supervisor; returns the exit status."""
    from hybridgate.serving.supervisor import Supervisor
    from hybridgate.serving.worker import WorkerSpec, run_worker

    def target(spec: WorkerSpec) -> None:
        run_worker(loaded, sock, spec)

    sock.listen(2048)  # before forking: every worker accepts from the one queue
    return Supervisor(count, target).run(on_ready)


@app.command()
def explain(
    config: ConfigPath,
    request_file: Annotated[Path, typer.Argument(help="A chat request body (JSON), or - for stdin.")],
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="A request header, 'Name: value' (repeatable).")
    ] = None,
    wire_format: Annotated[
        str, typer.Option("--format", help="Request format: openai or anthropic.")
    ] = "openai",
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
) -> None:
    """Dry-run the routing of a request offline: every candidate, why, predicted latency and cost.

    Nothing is started: every configured deployment counts as ready with its latency priors (live
    load is not known offline; POST /v1/route/explain uses the running gateway's).
    """
    from hybridgate.cli_explain import run_explain

    loaded = _load_or_exit(config)
    code = run_explain(loaded, request_file, header or [], wire_format, as_json, out_console, err_console)
    raise typer.Exit(code=code)


LogFile = Annotated[
    Path | None, typer.Argument(help="The decision log file (default: decision_log.path of --config).")
]
LogConfig = Annotated[Path | None, typer.Option("--config", "-c", help="Configuration naming the log.")]
ClassFilter = Annotated[str | None, typer.Option("--class", help="Only requests of this workload class.")]
AsJSON = Annotated[bool, typer.Option("--json", help="JSON output (tail: one record per line).")]


def _log_path(path: Path | None, config: Path | None) -> Path:
    if path is not None:
        return path
    if config is None:
        err_console.print(
            "[bold red]error:[/] give the decision log file, or --config with decision_log.path"
        )
        raise typer.Exit(code=2)
    loaded = _load_or_exit(config)
    if loaded.config.decision_log.path is None:
        err_console.print(f"[bold red]error:[/] {config}: decision_log.path is not set (the log is off)")
        raise typer.Exit(code=2)
    base = loaded.source.parent if loaded.source is not None else Path.cwd()
    return (base / loaded.config.decision_log.path).resolve()


@log_app.command("tail")
def log_tail(
    path: LogFile = None,
    config: LogConfig = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many records to show.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new records.")] = False,
    workload_class: ClassFilter = None,
    as_json: AsJSON = False,
) -> None:
    """The last requests: class, deployment, outcome, attempts, latency, tokens, cost."""
    from hybridgate.cli_log import run_tail

    code = run_tail(
        _log_path(path, config),
        lines=lines,
        workload_class=workload_class,
        as_json=as_json,
        follow=follow,
        out=out_console,
        err=err_console,
    )
    raise typer.Exit(code=code)


@log_app.command("stats")
def log_stats(
    path: LogFile = None,
    config: LogConfig = None,
    workload_class: ClassFilter = None,
    as_json: AsJSON = False,
) -> None:
    """Counts by class, deployment, outcome and sensitive-data action; p50/p95 latency; cost; egress."""
    from hybridgate.cli_log import run_stats

    code = run_stats(
        _log_path(path, config),
        workload_class=workload_class,
        as_json=as_json,
        out=out_console,
        err=err_console,
    )
    raise typer.Exit(code=code)


@app.command()
def simulate(
    config: ConfigPath,
    workload: Annotated[Path, typer.Option("--workload", "-w", help="Workload YAML (classes, backends).")],
    faults: Annotated[Path | None, typer.Option("--faults", help="Fault schedule YAML.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same report.")] = 1,
    requests: Annotated[
        int | None, typer.Option("--requests", min=1, help="Stop after this many requests.")
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", min=0.001, help="Simulated seconds (default: the workload's)."),
    ] = None,
    baselines: Annotated[
        str, typer.Option("--baselines", help="all, none, or a list: local-only,cloud-only,...")
    ] = "all",
    split: Annotated[
        float, typer.Option("--split", min=0.0, max=1.0, help="static-split: share sent to local.")
    ] = 0.5,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the report.")] = Path(
        "sim-report"
    ),
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Simulate the gateway on virtual time: the real planner, health, breakers, retries and costs
    against modelled backends, side by side with baselines. Writes report.md/.html/.json and charts."""
    from hybridgate.cli_simulate import run_simulate

    code = run_simulate(
        config,
        workload,
        faults,
        seed=seed,
        requests=requests,
        duration_s=duration,
        baselines=baselines,
        local_share=split,
        outdir=output,
        progress=progress,
        out=out_console,
        err=err_console,
    )
    raise typer.Exit(code=code)


@app.command()
def demo(
    config: Annotated[Path, typer.Option("--config", "-c", help="The demo's gateway configuration.")] = Path(
        "examples/demo.yaml"
    ),
    model: Annotated[
        Path | None,
        typer.Option("--model", help="GGUF file for the local deployment (default: the config's)."),
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", min=5.0, max=3600.0, help="Seconds of workload per arm.")
    ] = 60.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the workload: same seed, same requests.")] = 1,
    baselines: Annotated[
        str, typer.Option("--baselines", help="Arms besides hybrid: all, none, or local-only,cloud-only.")
    ] = "all",
    outage_start: Annotated[
        float | None, typer.Option("--outage-start", help="Seconds into the run (default: 40% of it).")
    ] = None,
    outage_length: Annotated[
        float | None, typer.Option("--outage-length", help="Seconds (default: 25% of the run; 0: none).")
    ] = None,
    rate_scale: Annotated[
        float, typer.Option("--rate-scale", min=0.05, max=10.0, help="Multiply every arrival rate.")
    ] = 1.0,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the report.")] = Path(
        "demo-report"
    ),
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="The hybrid gateway's port (0: any free one).")
    ] = 0,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Keep the hybrid gateway up for its dashboard (Ctrl-C).")
    ] = True,
    pin: Annotated[
        bool,
        typer.Option("--pin/--no-pin", help="Give the local runtime a CPU of its own (2+ CPUs)."),
    ] = True,
) -> None:
    """Run the gateway with the local runtime and the sandbox cloud, drive a mixed agent workload
    through it with the openai SDK (bursts, sensitive prompts, a cloud outage), and the same workload
    local-only and cloud-only; print the report and the dashboard URL. Writes report.json/.md."""
    from hybridgate.cli_demo import DemoArgs, run_demo

    args = DemoArgs(
        config=config,
        model=model,
        duration_s=duration,
        seed=seed,
        baselines=baselines,
        outage_start_s=outage_start,
        outage_length_s=outage_length,
        rate_scale=rate_scale,
        output=output,
        port=port,
        wait=wait,
        pin=pin,
    )
    raise typer.Exit(code=run_demo(args, out_console, err_console))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

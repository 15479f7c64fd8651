"""``hybridgate explain``: the planner's decision for a request, offline, as a table or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hybridgate.config.loader import LoadedConfig
from hybridgate.errors import HybridgateError
from hybridgate.gateway import Gateway
from hybridgate.policy.context import ANONYMOUS
from hybridgate.policy.explain import Explanation
from hybridgate.privacy.guard import build_guard
from hybridgate.types import InferenceRequest
from hybridgate.wire import anthropic as anthropic_wire
from hybridgate.wire import openai as openai_wire


def _read_request(path: Path, wire_format: str) -> InferenceRequest:
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    body = json.loads(text)
    if wire_format == "anthropic":
        return anthropic_wire.parse_messages_request(body)
    return openai_wire.parse_chat_request(body)


def _headers(raw: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep:
            raise ValueError(f"header {item!r} is not 'Name: value'")
        out[name.strip().lower()] = value.strip()
    return out


def render(explanation: Explanation, console: Console) -> None:
    data = explanation.data
    console.print(
        f"[bold]model[/] {explanation.model}   [bold]class[/] {explanation.workload_class} "
        f"({explanation.placement})   [bold]budget[/] p95 {explanation.budget.p95_ms:.0f} ms, "
        f"p99 {explanation.budget.p99_ms:.0f} ms, first token {explanation.budget.ttft_ms:.0f} ms"
    )
    console.print(f"[bold]data[/] {data.rule}")
    table = Table(show_lines=False)
    for column in (
        "#",
        "deployment",
        "placement",
        "region",
        "p95 ms",
        "ttft p95 ms",
        "queue ms",
        "cost USD",
        "verdict",
    ):
        table.add_column(column, justify="right" if column.endswith(("ms", "USD", "#")) else "left")
    rank = {name: i + 1 for i, name in enumerate(explanation.order)}
    for v in explanation.verdicts:
        table.add_row(
            str(rank.get(v.deployment, "-")),
            v.deployment,
            v.placement,
            v.region,
            f"{v.predicted_p95_ms:.0f}" if v.predicted_p95_ms is not None else "",
            f"{v.predicted_ttft_p95_ms:.0f}" if v.predicted_ttft_p95_ms is not None else "",
            f"{v.queue_wait_ms:.0f}" if v.queue_wait_ms is not None else "",
            f"{v.estimated_cost_usd:.6f}" if v.estimated_cost_usd is not None else "",
            ("[green]" if v.accepted else "[red]") + v.reason + "[/]",
        )
    console.print(table)
    console.print(f"[bold]order[/] {' > '.join(explanation.order)}")
    console.print(f"[bold]why[/] {explanation.summary}")


def run_explain(
    loaded: LoadedConfig,
    request_file: Path,
    raw_headers: list[str],
    wire_format: str,
    as_json: bool,
    out: Console,
    err: Console,
) -> int:
    """Exit code: 0 with a plan, 3 when the request would be refused or has no route, 2 on bad input."""
    try:
        request = _read_request(request_file, wire_format)
        headers = _headers(raw_headers)
    except (OSError, ValueError, HybridgateError) as exc:
        message = exc.message if isinstance(exc, HybridgateError) else str(exc)
        err.print(f"[bold red]error:[/] {message}")
        return 2
    gateway = Gateway(loaded, guard=build_guard(loaded.config.governance.detection))
    gateway.mark_all_ready()
    try:
        ctx = gateway.context(ANONYMOUS, headers, request.metadata)
        explanation = gateway.explain(request, ctx)
    except HybridgateError as exc:
        if as_json:
            out.print_json(
                json.dumps({"error": {"status": exc.status, "code": exc.code, "message": exc.message}})
            )
        else:
            err.print(f"[bold red]{exc.status} {exc.code}:[/] {exc.message}")
        return 3
    if as_json:
        out.print_json(json.dumps(explanation.to_dict()))
    else:
        render(explanation, out)
    return 0

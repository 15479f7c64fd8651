"""``hybridgate keys|tenants|audit|cost``: administration from the command line.

They work on the store and the audit trail named in the configuration, directly (no server
needed). Admin actions are written to the audit trail as the server's are, with ``cli:<user>``
as the actor.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from hybridgate.config.loader import LoadedConfig, load_config
from hybridgate.config.tenancy import BudgetConfig
from hybridgate.errors import ConfigError, HybridgateError
from hybridgate.tenancy.admin import Admin, BudgetName, KeySpec, RevokeSpec, TenantSpec, parse, writer_sink
from hybridgate.tenancy.audit import verify
from hybridgate.tenancy.reports import DIMENSIONS, cost_report
from hybridgate.tenancy.service import audit_writer, config_relative, open_store

keys_app = typer.Typer(
    help="API keys in the store (shown once at creation, stored hashed).", no_args_is_help=True
)
tenants_app = typer.Typer(help="Tenants in the store.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
budgets_app = typer.Typer(
    help="Budgets managed in the store (next to those in the configuration).", no_args_is_help=True
)
cost_app = typer.Typer(help="Cost reports from the store's usage ledger.", no_args_is_help=True)

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ConfigPath = Annotated[Path, typer.Option("--config", "-c", help="Path to the YAML configuration.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _load(path: Path) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {path}: invalid configuration")
        for where, message in exc.problems:
            err.print(f"  [red]✗[/] {where}: {message}" if where else f"  [red]✗[/] {message}")
        raise typer.Exit(code=2) from None


@contextmanager
def _admin(config: Path) -> Iterator[Admin]:
    loaded = _load(config)
    try:
        store = open_store(loaded)
        if store is None:
            err.print("[bold red]error:[/] no key store is configured (tenancy.store)")
            raise typer.Exit(code=2)
        try:
            configured = frozenset(b.name for b in loaded.config.tenancy.budgets)
            yield Admin(store, writer_sink(audit_writer(loaded, time.time)), time.time, configured)
        finally:
            store.close()
    except HybridgateError as exc:
        err.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(code=1) from None


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@tenants_app.command("create")
def tenants_create(config: ConfigPath, name: Annotated[str, typer.Argument(help="Tenant name.")]) -> None:
    """Create a tenant."""
    with _admin(config) as admin:
        admin.create_tenant(parse(TenantSpec, {"name": name}), _actor())
    err.print(f"[green]✓[/] tenant {name} created")


@tenants_app.command("list")
def tenants_list(config: ConfigPath, as_json: AsJson = False) -> None:
    """List tenants and their active keys."""
    with _admin(config) as admin:
        rows = admin.store.tenants()
    if as_json:
        typer.echo(orjson.dumps(rows).decode())
        return
    table = Table("tenant", "active keys", "created")
    for row in rows:
        table.add_row(row["name"], str(row["active_keys"]), _when(row["created_at"]))
    out.print(table)


@keys_app.command("create")
def keys_create(
    config: ConfigPath,
    tenant: Annotated[str, typer.Option(help="The tenant the key belongs to.")],
    scope: Annotated[
        list[str] | None, typer.Option(help="use, read or admin (repeatable; default: use).")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for people.")] = "",
    default_class: Annotated[
        str | None, typer.Option(help="Workload class when a request names none.")
    ] = None,
    workload_class: Annotated[
        list[str] | None, typer.Option("--class", help="A class it may use (repeatable; default: all).")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="A model it may use (repeatable; default: all).")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Origin region of its data (pinned).")] = None,
    sensitivity: Annotated[str | None, typer.Option(help="Minimum sensitivity of its requests.")] = None,
    rpm: Annotated[
        int | None, typer.Option(help="Requests per minute (default: tenancy.rate_limits).")
    ] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute (default: tenancy.rate_limits).")] = None,
) -> None:
    """Create a key. It is printed once, on stdout; only its hash is stored."""
    body = {
        "tenant": tenant,
        "name": name,
        "scopes": scope or ["use"],
        "default_class": default_class,
        "classes": workload_class,
        "models": model,
        "region": region,
        "sensitivity": sensitivity,
        "rpm": rpm,
        "tpm": tpm,
    }
    with _admin(config) as admin:
        record, token = admin.create_key(parse(KeySpec, body), _actor())
    err.print(f"[green]✓[/] key hg_{record.key_id} for tenant {tenant} ({', '.join(sorted(record.scopes))})")
    err.print("  store it now: it is shown only once")
    typer.echo(token)


@keys_app.command("list")
def keys_list(
    config: ConfigPath,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    as_json: AsJson = False,
) -> None:
    """List keys (ids, tenants, scopes, state; never secrets)."""
    with _admin(config) as admin:
        records = admin.store.keys(tenant)
    if as_json:
        typer.echo(orjson.dumps([r.public() for r in records]).decode())
        return
    table = Table("id", "tenant", "name", "scopes", "created", "state")
    for r in records:
        state = f"revoked {_when(r.revoked_at)}" if r.revoked_at is not None else "active"
        table.add_row(
            f"hg_{r.key_id}", r.tenant, r.name, ",".join(sorted(r.scopes)), _when(r.created_at), state
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    config: ConfigPath, key_id: Annotated[str, typer.Argument(help="The key id (hg_...).")]
) -> None:
    """Revoke a key (a running server honours it within tenancy.key_cache_ttl_s)."""
    with _admin(config) as admin:
        record = admin.revoke_key(parse(RevokeSpec, {"id": key_id}), _actor())
    err.print(f"[green]✓[/] key hg_{record.key_id} of tenant {record.tenant} revoked")


@budgets_app.command("set")
def budgets_set(
    config: ConfigPath,
    name: Annotated[str, typer.Argument(help="Budget name.")],
    tenant: Annotated[str | None, typer.Option(help="The tenant it limits.")] = None,
    key: Annotated[str | None, typer.Option(help="The key id it limits (hg_...).")] = None,
    period: Annotated[str, typer.Option(help="day or month (UTC).")] = "month",
    usd: Annotated[float | None, typer.Option(help="Money limit, USD.")] = None,
    tokens: Annotated[int | None, typer.Option(help="Token limit.")] = None,
    on_exhausted: Annotated[str, typer.Option(help="refuse or local-only.")] = "refuse",
    local_usd: Annotated[float | None, typer.Option(help="Local allowance once exhausted.")] = None,
) -> None:
    """Create or replace a budget (a running server applies it within 10 s)."""
    body = {"name": name, "tenant": tenant, "key": key, "period": period, "usd": usd, "tokens": tokens,
            "on_exhausted": on_exhausted, "local_usd": local_usd}  # fmt: skip
    with _admin(config) as admin:
        new = admin.set_budget(parse(BudgetConfig, body), _actor())
    err.print(f"[green]✓[/] budget {name} {'created' if new else 'replaced'}")


@budgets_app.command("list")
def budgets_list(config: ConfigPath) -> None:
    """The budgets in the store, as JSON (those in the configuration are in its file)."""
    with _admin(config) as admin:
        typer.echo(orjson.dumps(admin.store.budgets()).decode())


@budgets_app.command("delete")
def budgets_delete(config: ConfigPath, name: Annotated[str, typer.Argument(help="Budget name.")]) -> None:
    """Delete a budget from the store."""
    with _admin(config) as admin:
        admin.delete_budget(parse(BudgetName, {"name": name}), _actor())
    err.print(f"[green]✓[/] budget {name} deleted")


@audit_app.command("verify")
def audit_verify(config: ConfigPath) -> None:
    """Check the audit trail's chain and MACs; exit 1 naming the first bad entry if tampered with."""
    loaded = _load(config)
    audit = loaded.config.tenancy.audit
    if audit.path is None or audit.key is None:
        err.print("[bold red]error:[/] no audit trail is configured (tenancy.audit)")
        raise typer.Exit(code=2)
    path = config_relative(loaded, audit.path)
    verdict = verify(path, audit.key.get_secret_value().encode())
    if verdict.ok:
        out.print(f"[green]✓[/] {path}: {verdict.entries} entries, chain and MACs intact")
        return
    where = f"line {verdict.bad_line}: " if verdict.bad_line is not None else ""
    err.print(f"[bold red]✗[/] {path}: {where}{verdict.reason}")
    raise typer.Exit(code=1)


@cost_app.command("report")
def cost_report_cmd(
    config: ConfigPath,
    by: Annotated[str, typer.Option(help=f"Comma-separated dimensions: {', '.join(DIMENSIONS)}.")] = "tenant",
    period: Annotated[str, typer.Option(help="Group by day, month or all.")] = "month",
    since: Annotated[str | None, typer.Option(help="From this UTC date (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this UTC date (YYYY-MM-DD).")] = None,
    as_json: AsJson = False,
) -> None:
    """Requests, tokens and cost from the store's usage ledger, grouped by the chosen dimensions."""
    loaded = _load(config)
    try:
        store = open_store(loaded)
        if store is None:
            err.print("[bold red]error:[/] no store is configured (tenancy.store)")
            raise typer.Exit(code=2)
        try:
            rows = cost_report(store, by.split(","), period, since, until)
        finally:
            store.close()
    except HybridgateError as exc:
        err.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(orjson.dumps(rows).decode())
        return
    if not rows:
        out.print("no usage recorded")
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*(f"{v:.6f}" if isinstance(v, float) else str(v) for v in row.values()))
    out.print(table)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts is not None else ""

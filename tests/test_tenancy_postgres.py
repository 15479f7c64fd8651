"""The PostgreSQL store against a real, throw-away PostgreSQL server.

The server is started with the system's ``initdb``/``pg_ctl`` in a temporary directory (as
``nobody`` when the tests run as root: PostgreSQL refuses to run as root), on a free port, with
trust authentication on loopback; it is stopped at the end. Skipped where PostgreSQL or psycopg
is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from hybridgate.cli import app
from hybridgate.errors import InvalidRequest, NotFound, StoreUnavailable
from hybridgate.tenancy.keys import KeyDefaults, new_key, parse_key
from hybridgate.tenancy.postgres import PostgresStore
from hybridgate.tenancy.store import MIGRATIONS, SpendDelta, UsageRow
from tests.support.processes import free_port


def _pg_tool(name: str) -> str:
    """A PostgreSQL server tool: on PATH, or where Debian's packages put it (`make test` installs
    them; a missing server is a failure here, never a skipped check)."""
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed (make test installs Debian's postgresql)")
    return found


def _as_postgres_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("running as root without runuser (util-linux): cannot start PostgreSQL")
    return [runuser, "-u", "nobody", "--", *args]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="hg-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody")
    data, port = folder / "data", free_port()
    subprocess.run(
        _as_postgres_user([initdb, "-D", str(data), "-A", "trust", "-U", "hg"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        with psycopg.connect(f"postgresql://hg@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE hybridgate")
        yield f"postgresql://hg@127.0.0.1:{port}/hybridgate"
    finally:
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", str(data), "-w", "-m", "fast", "stop"]), capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def url(pg_url: str) -> Iterator[str]:
    yield pg_url
    with psycopg.connect(pg_url, autocommit=True) as conn:  # each test starts from an empty schema
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def test_migrations_apply_once_and_operations_work(url: str) -> None:
    store = PostgresStore(url)
    assert store.version == len(MIGRATIONS)
    store.create_tenant("acme", 1.0)
    key = new_key()
    record = store.create_key(
        key, "acme", name="ci", scopes=frozenset({"use", "read"}), defaults=KeyDefaults(region="eu"), now=2.0
    )
    store.close()
    store = PostgresStore(url)  # reopening applies nothing twice
    assert store.version == len(MIGRATIONS)
    assert store.key(key.key_id) == record
    assert store.tenants() == [{"name": "acme", "created_at": 1.0, "active_keys": 1}]
    assert store.revoke_key(key.key_id, 3.0).revoked
    with pytest.raises(InvalidRequest, match="already revoked"):
        store.revoke_key(key.key_id, 4.0)
    with pytest.raises(InvalidRequest, match="already exists"):
        store.create_tenant("acme", 0)
    with pytest.raises(NotFound):
        store.create_key(
            new_key(), "ghost", name="", scopes=frozenset({"use"}), defaults=KeyDefaults(), now=0
        )
    assert store.put_budget("b", {"name": "b", "tenant": "acme", "usd": 1.0}, 0.0)
    assert not store.put_budget("b", {"name": "b", "tenant": "acme", "usd": 2.0}, 0.0)
    assert store.budgets() == [{"name": "b", "tenant": "acme", "usd": 2.0}]
    store.record(
        [SpendDelta("b", "2026-11", 0.5, 10, 0.0)] * 2,
        [UsageRow(1.0, "acme", "hg_x", "default", "cloud", "us", "cloud", 3, 4, 0.5)],
    )
    assert store.spend(lambda _: "2026-11", ["b"])["b"].usd == 1.0
    assert store.usage()[0].cost_usd == 0.5
    store.delete_budget("b")
    with pytest.raises(NotFound):
        store.delete_budget("b")
    store.close()


def test_a_locked_store_fails_the_write_whole(url: str) -> None:
    store = PostgresStore(url, lock_timeout_s=0.2)
    with psycopg.connect(url) as other:
        other.execute("LOCK TABLE spend IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(StoreUnavailable, match="locked"):
            store.record(
                [SpendDelta("b", "2026-11", 1.0, 1, 0.0)],
                [UsageRow(1, "t", "k", "c", "p", "r", "d", 1, 1, 1)],
            )
    assert store.spend(lambda _: "2026-11", ["b"])["b"].usd == 0.0
    assert store.usage() == []  # the usage row of that transaction was not written either
    store.close()


def test_errors_never_show_the_password() -> None:
    secret = "pg-password-do-not-leak"
    with pytest.raises(StoreUnavailable) as failed:
        PostgresStore(f"postgresql://hg:{secret}@127.0.0.1:{free_port()}/nothing", connect_timeout_s=1)
    assert secret not in failed.value.message
    assert "the store failed" in failed.value.message


def test_the_cli_works_on_a_postgres_store(url: str, tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"""
version: 1
deployments:
  cloud: {{type: openai, base_url: "http://127.0.0.1:9/v1", model: gpt-4o-mini}}
models:
  m: {{deployments: [cloud]}}
tenancy:
  store: {url}
"""
    )
    runner = CliRunner()
    assert runner.invoke(app, ["tenants", "create", "-c", str(config), "acme"]).exit_code == 0
    created = runner.invoke(app, ["keys", "create", "-c", str(config), "--tenant", "acme"])
    assert created.exit_code == 0, created.output
    parsed = parse_key(created.stdout.strip().splitlines()[-1])
    assert parsed is not None
    listed = runner.invoke(app, ["keys", "list", "-c", str(config), "--json"])
    assert f"hg_{parsed[0]}" in listed.stdout
    assert parsed[1] not in listed.stdout

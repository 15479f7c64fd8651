"""The embedded store of tenants, API keys, budget spend and usage: one SQLite file.

:class:`SQLiteStore` is synchronous and owns one connection; :class:`AsyncStore` runs every call
on one dedicated thread, so the event loop never blocks on the disk and SQLite sees one writer.
Schema changes are numbered migrations (``PRAGMA user_version``), each applied in a transaction.
Every write is a transaction (``BEGIN IMMEDIATE``): a locked or full database fails it whole,
as :class:`~hybridgate.errors.StoreUnavailable`, and nothing is half-written.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hybridgate.errors import InvalidRequest, NotFound, StoreUnavailable
from hybridgate.tenancy.keys import KeyDefaults, KeyRecord, NewKey

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    # 1: tenants, keys, budget spend, usage ledger
    """
    CREATE TABLE tenants (name TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL REFERENCES tenants(name),
        name TEXT NOT NULL DEFAULT '',
        secret_sha256 TEXT NOT NULL,
        scopes TEXT NOT NULL,
        defaults TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    );
    CREATE TABLE spend (
        budget TEXT NOT NULL,
        period TEXT NOT NULL,
        usd DOUBLE PRECISION NOT NULL DEFAULT 0,
        tokens BIGINT NOT NULL DEFAULT 0,
        local_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (budget, period)
    );
    CREATE TABLE usage (
        ts DOUBLE PRECISION NOT NULL,
        tenant TEXT NOT NULL,
        key_id TEXT NOT NULL,
        class TEXT NOT NULL,
        placement TEXT NOT NULL,
        region TEXT NOT NULL,
        deployment TEXT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX usage_ts ON usage (ts);
    """,
    # 2: budgets managed at run time (admin API, CLI), next to those in the configuration
    """
    CREATE TABLE budgets (name TEXT PRIMARY KEY, spec TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
    """,
)


@dataclass(frozen=True, slots=True)
class SpendDelta:
    budget: str
    period: str
    usd: float
    tokens: int
    local_usd: float


@dataclass(frozen=True, slots=True)
class UsageRow:
    ts: float
    tenant: str
    key_id: str
    workload_class: str
    placement: str
    region: str
    deployment: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


def _fail(exc: sqlite3.Error) -> StoreUnavailable:
    text = str(exc)
    if "locked" in text or "busy" in text:
        why = "the store is locked by another process"
    elif "full" in text:
        why = "the store's disk is full"
    else:
        why = f"the store failed: {text}"
    return StoreUnavailable(f"{why}; nothing was written")


class Transaction(Protocol):
    """What a write transaction offers the store's methods (a DB-API connection, in effect)."""

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any: ...


class SQLStore(ABC):
    """The store's operations in portable SQL (``?`` placeholders); subclasses give the database."""

    @property
    @abstractmethod
    def version(self) -> int:
        """The schema version (the number of migrations applied)."""

    @abstractmethod
    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...

    @abstractmethod
    def _write(self) -> AbstractContextManager[Transaction]:
        """One write transaction: all of it, or nothing (locked, full, constraint)."""

    @abstractmethod
    def close(self) -> None: ...

    # ------------------------------------------------------------------ tenants

    def create_tenant(self, name: str, now: float) -> None:
        if self._read("SELECT 1 FROM tenants WHERE name = ?", (name,)):
            raise InvalidRequest(f"tenant {name!r} already exists")
        with self._write() as db:
            db.execute("INSERT INTO tenants (name, created_at) VALUES (?, ?)", (name, now))

    def tenants(self) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT t.name, t.created_at, COUNT(k.id) FROM tenants t "
            "LEFT JOIN api_keys k ON k.tenant = t.name AND k.revoked_at IS NULL "
            "GROUP BY t.name ORDER BY t.name"
        )
        return [{"name": n, "created_at": c, "active_keys": k} for n, c, k in rows]

    # ------------------------------------------------------------------ keys

    def create_key(
        self,
        key: NewKey,
        tenant: str,
        *,
        name: str,
        scopes: frozenset[str],
        defaults: KeyDefaults,
        now: float,
    ) -> KeyRecord:
        if not self._read("SELECT 1 FROM tenants WHERE name = ?", (tenant,)):
            raise NotFound(f"unknown tenant {tenant!r} (create it first)")
        with self._write() as db:
            db.execute(
                "INSERT INTO api_keys (id, tenant, name, secret_sha256, scopes, defaults, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.key_id,
                    tenant,
                    name,
                    key.secret_sha256,
                    ",".join(sorted(scopes)),
                    json.dumps(defaults.to_json()),
                    now,
                ),
            )
        return KeyRecord(key.key_id, tenant, name, scopes, defaults, now, None, key.secret_sha256)

    def key(self, key_id: str) -> KeyRecord | None:
        rows = self._read(
            "SELECT id, tenant, name, scopes, defaults, created_at, revoked_at, secret_sha256 "
            "FROM api_keys WHERE id = ?",
            (key_id,),
        )
        return _record(rows[0]) if rows else None

    def keys(self, tenant: str | None = None) -> list[KeyRecord]:
        sql = "SELECT id, tenant, name, scopes, defaults, created_at, revoked_at, secret_sha256 FROM api_keys"
        rows = (
            self._read(sql + " WHERE tenant = ? ORDER BY created_at", (tenant,))
            if tenant
            else (self._read(sql + " ORDER BY created_at"))
        )
        return [_record(r) for r in rows]

    def revoke_key(self, key_id: str, now: float) -> KeyRecord:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
            )
            changed = cursor.rowcount
        record = self.key(key_id)
        if record is None:
            raise NotFound(f"unknown key hg_{key_id}")
        if not changed:
            raise InvalidRequest(f"key hg_{key_id} was already revoked")
        return record

    # ------------------------------------------------------------------ budgets

    def put_budget(self, name: str, spec: dict[str, Any], now: float) -> bool:
        """Create or replace a budget; True when it is new."""
        new = not self._read("SELECT 1 FROM budgets WHERE name = ?", (name,))
        with self._write() as db:
            db.execute(
                "INSERT INTO budgets (name, spec, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) "
                "DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
                (name, json.dumps(spec), now),
            )
        return new

    def delete_budget(self, name: str) -> None:
        with self._write() as db:
            deleted = db.execute("DELETE FROM budgets WHERE name = ?", (name,)).rowcount
        if not deleted:
            raise NotFound(f"unknown budget {name!r}")

    def budgets(self) -> list[dict[str, Any]]:
        return [json.loads(spec) for (spec,) in self._read("SELECT spec FROM budgets ORDER BY name")]

    # ------------------------------------------------------------------ spend and usage

    def spend(self, period_of: Callable[[str], str], budgets: Sequence[str]) -> dict[str, SpendDelta]:
        """Each budget's spend in its current period (``period_of(budget)`` names it)."""
        out: dict[str, SpendDelta] = {}
        for budget in budgets:
            period = period_of(budget)
            rows = self._read(
                "SELECT usd, tokens, local_usd FROM spend WHERE budget = ? AND period = ?", (budget, period)
            )
            usd, tokens, local = rows[0] if rows else (0.0, 0, 0.0)
            out[budget] = SpendDelta(budget, period, usd, tokens, local)
        return out

    def record(self, deltas: Sequence[SpendDelta], usage: Sequence[UsageRow]) -> None:
        """Add spend and usage rows, in one transaction."""
        with self._write() as db:
            db.executemany(
                "INSERT INTO spend (budget, period, usd, tokens, local_usd) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (budget, period) DO UPDATE SET usd = spend.usd + excluded.usd, "
                "tokens = spend.tokens + excluded.tokens, local_usd = spend.local_usd + excluded.local_usd",
                [(d.budget, d.period, d.usd, d.tokens, d.local_usd) for d in deltas],
            )
            db.executemany(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (u.ts, u.tenant, u.key_id, u.workload_class, u.placement, u.region, u.deployment,
                     u.prompt_tokens, u.completion_tokens, u.cost_usd)
                    for u in usage
                ],
            )  # fmt: skip

    def usage(self, since: float | None = None, until: float | None = None) -> list[UsageRow]:
        rows = self._read(
            "SELECT * FROM usage WHERE ts >= ? AND ts < ? ORDER BY ts",
            (since if since is not None else float("-inf"), until if until is not None else float("inf")),
        )
        return [UsageRow(*r) for r in rows]


class SQLiteStore(SQLStore):
    """Tenants, keys, spend and usage in one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 2.0) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
            self._migrate()
        except sqlite3.Error as exc:
            raise _fail(exc) from None

    @property
    def version(self) -> int:
        row = self._db.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        for number, script in enumerate(MIGRATIONS, start=1):
            if self.version >= number:
                continue
            with self._write():
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _write(self) -> Iterator[Transaction]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _fail(exc) from None
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise InvalidRequest(f"rejected by the store: {exc}") from None
            if isinstance(exc, sqlite3.Error):
                raise _fail(exc) from None
            raise

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _fail(exc) from None

    def close(self) -> None:
        self._db.close()


def _record(row: Sequence[Any]) -> KeyRecord:
    key_id, tenant, name, scopes, defaults, created_at, revoked_at, digest = row
    return KeyRecord(
        key_id,
        tenant,
        name,
        frozenset(s for s in scopes.split(",") if s),
        KeyDefaults.from_json(json.loads(defaults)),
        created_at,
        revoked_at,
        digest,
    )


class AsyncStore:
    """The store, called from the event loop: every call runs on the store's own thread."""

    def __init__(self, store: SQLStore) -> None:
        self.sync = store
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hybridgate-store")
        self._closed = False

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.call(self.sync.close)
        self._thread.shutdown(wait=True)

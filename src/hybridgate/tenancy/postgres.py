"""The store in PostgreSQL (``tenancy.store: postgresql://...``), through psycopg 3.

The same operations and migrations as the SQLite store (:class:`~hybridgate.tenancy.store.SQLStore`
writes portable SQL); here the schema version lives in a ``hybridgate_schema`` table, migrations
are serialised between processes by an advisory lock, and a write waits at most ``lock_timeout_s``
for a row lock before failing whole as :class:`~hybridgate.errors.StoreUnavailable`. Error messages
never contain the URL's password. Install with ``pip install 'hybridgate[postgres]'``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hybridgate.errors import InvalidRequest, StoreUnavailable, scrub_secrets
from hybridgate.tenancy.store import MIGRATIONS, SQLStore, Transaction

_MIGRATION_LOCK = 0x6867_7374  # "hgst": one process migrates at a time


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class _Tx:
    """A psycopg connection inside a transaction, taking ``?`` placeholders."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Any:
        return self._conn.execute(_pg(sql), args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any:
        cursor = self._conn.cursor()
        cursor.executemany(_pg(sql), list(rows))
        return cursor


class PostgresStore(SQLStore):
    """Tenants, keys, spend and usage in a PostgreSQL database."""

    def __init__(self, url: str, *, lock_timeout_s: float = 2.0, connect_timeout_s: float = 5.0) -> None:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise StoreUnavailable(
                "a postgresql:// store needs psycopg: pip install 'hybridgate[postgres]'"
            ) from None
        self._psycopg = psycopg
        try:
            password = conninfo_to_dict(url).get("password")
        except psycopg.ProgrammingError:
            raise StoreUnavailable("the PostgreSQL store URL is malformed") from None
        self._secrets = [str(password)] if password else []
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=int(max(1, connect_timeout_s)))
            self._db.execute(f"SET lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
            self._migrate()
        except psycopg.Error as exc:
            raise self._fail(exc) from None

    def _fail(self, exc: Exception) -> StoreUnavailable:
        errors = self._psycopg.errors
        if isinstance(exc, errors.LockNotAvailable):
            why = "the store is locked by another process"
        elif isinstance(exc, errors.DiskFull | errors.OutOfMemory):
            why = "the store's disk is full"
        else:
            why = f"the store failed: {scrub_secrets(str(exc).strip(), known=self._secrets)}"
        return StoreUnavailable(f"{why}; nothing was written")

    @property
    def version(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM hybridgate_schema").fetchone()
        return int(row[0]) if row is not None else 0

    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS hybridgate_schema (version INTEGER NOT NULL)")
        for number, script in enumerate(MIGRATIONS, start=1):
            with self._write() as tx:
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                if self.version >= number:
                    continue
                for statement in filter(str.strip, script.split(";")):
                    tx.execute(statement)
                tx.execute("INSERT INTO hybridgate_schema (version) VALUES (?)", (number,))

    @contextmanager
    def _write(self) -> Iterator[Transaction]:
        psycopg = self._psycopg
        try:
            with self._db.transaction():
                yield _Tx(self._db)
        except psycopg.errors.IntegrityError as exc:
            raise InvalidRequest(f"rejected by the store: {exc.diag.message_primary or exc}") from None
        except psycopg.Error as exc:
            raise self._fail(exc) from None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(self._db.execute(_pg(sql), args).fetchall())
        except self._psycopg.Error as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        self._db.close()

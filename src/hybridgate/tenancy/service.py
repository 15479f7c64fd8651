"""Tenancy assembled for one gateway: store, budgets, spend recorder, audit trail, governed calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from hybridgate.config.loader import LoadedConfig
from hybridgate.config.tenancy import BudgetConfig
from hybridgate.errors import StoreUnavailable
from hybridgate.gateway import Gateway
from hybridgate.tenancy.audit import AuditLog, AuditWriter
from hybridgate.tenancy.budgets import BudgetLedger
from hybridgate.tenancy.governed import GovernedGateway, SpendRecorder
from hybridgate.tenancy.ratelimit import KeyRateLimiter
from hybridgate.tenancy.store import AsyncStore, SQLiteStore, SQLStore

log = logging.getLogger("hybridgate.tenancy")

# Budgets changed by another process (the CLI) are picked up this often, at the latest.
BUDGET_RELOAD_S = 10.0


def config_relative(loaded: LoadedConfig, path: str) -> Path:
    base = loaded.source.parent if loaded.source is not None else Path.cwd()
    return (base / path).resolve()


def open_store(loaded: LoadedConfig) -> SQLStore | None:
    """The configured store (migrated to the current schema), or None."""
    path = loaded.config.tenancy.store
    if path is None:
        return None
    if path.startswith(("postgresql://", "postgres://")):
        from hybridgate.tenancy.postgres import PostgresStore

        return PostgresStore(path)
    return SQLiteStore(path if path == ":memory:" else config_relative(loaded, path))


def audit_writer(loaded: LoadedConfig, now: Callable[[], float]) -> AuditWriter | None:
    """The configured audit trail's writer, or None when it is off."""
    audit = loaded.config.tenancy.audit
    if audit.path is None or audit.key is None:
        return None
    return AuditWriter(config_relative(loaded, audit.path), audit.key.get_secret_value().encode(), now)


def managed_budgets(specs: list[dict[str, object]]) -> list[BudgetConfig]:
    """The store's budgets; one that no longer validates is skipped (and logged), not fatal."""
    out: list[BudgetConfig] = []
    for spec in specs:
        try:
            out.append(BudgetConfig.model_validate(spec))
        except ValidationError as exc:
            log.error("budget %r in the store is invalid, ignored: %s", spec.get("name"), exc)
    return out


class Tenancy:
    """Everything tenancy adds to a gateway; ``start``/``close`` follow the gateway's lifespan."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        config = gateway.config.tenancy
        sync = open_store(gateway.loaded)
        self.store = AsyncStore(sync) if sync is not None else None
        managed = self.store is not None
        self.budgets = BudgetLedger(config.budgets, gateway.clock.wall) if config.budgets or managed else None
        self.recorder = SpendRecorder(self.store) if self.store is not None else None
        writer = audit_writer(gateway.loaded, gateway.clock.wall)
        self.audit = AuditLog(writer) if writer is not None else None
        self.limiter = KeyRateLimiter(gateway.clock)
        self.governed = GovernedGateway(gateway, self.budgets, self.recorder, self.audit, self.limiter)
        self._reloader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.audit is not None:
            self.audit.start()
        if self.store is None or self.budgets is None:
            return
        await self.reload_budgets()
        self._reloader = asyncio.create_task(self._reload_forever(), name="hybridgate-budgets")

    async def reload_budgets(self) -> None:
        """Read the store's budgets (and the recorded spend of any new one)."""
        if self.store is None or self.budgets is None:
            return
        budgets, store = self.budgets, self.store
        new = budgets.replace_managed(managed_budgets(await store.call(store.sync.budgets)))
        if new:
            budgets.load(await store.call(store.sync.spend, budgets.period_of, new))

    async def _reload_forever(self) -> None:
        while True:
            await self.gateway.clock.sleep(BUDGET_RELOAD_S)
            try:
                await self.reload_budgets()
            except StoreUnavailable as exc:  # keep enforcing what is known; try again later
                log.error("could not reload budgets: %s", exc.message)

    async def close(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            await asyncio.gather(self._reloader, return_exceptions=True)
            self._reloader = None
        await self.governed.close()
        if self.audit is not None:
            self.audit.close()
        if self.store is not None:
            await self.store.close()

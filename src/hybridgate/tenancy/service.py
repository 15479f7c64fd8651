"""Tenancy assembled for one gateway: store, budgets, spend recorder, audit trail, governed calls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from hybridgate.config.loader import LoadedConfig
from hybridgate.gateway import Gateway
from hybridgate.tenancy.audit import AuditLog, AuditWriter
from hybridgate.tenancy.budgets import BudgetLedger
from hybridgate.tenancy.governed import GovernedGateway, SpendRecorder
from hybridgate.tenancy.ratelimit import KeyRateLimiter
from hybridgate.tenancy.store import AsyncStore, SQLiteStore

log = logging.getLogger("hybridgate.tenancy")


def config_relative(loaded: LoadedConfig, path: str) -> Path:
    base = loaded.source.parent if loaded.source is not None else Path.cwd()
    return (base / path).resolve()


def open_store(loaded: LoadedConfig) -> SQLiteStore | None:
    """The configured store (migrated to the current schema), or None."""
    path = loaded.config.tenancy.store
    if path is None:
        return None
    return SQLiteStore(path if path == ":memory:" else config_relative(loaded, path))


def audit_writer(loaded: LoadedConfig, now: Callable[[], float]) -> AuditWriter | None:
    """The configured audit trail's writer, or None when it is off."""
    audit = loaded.config.tenancy.audit
    if audit.path is None or audit.key is None:
        return None
    return AuditWriter(config_relative(loaded, audit.path), audit.key.get_secret_value().encode(), now)


class Tenancy:
    """Everything tenancy adds to a gateway; ``start``/``close`` follow the gateway's lifespan."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        config = gateway.config.tenancy
        sync = open_store(gateway.loaded)
        self.store = AsyncStore(sync) if sync is not None else None
        self.budgets = BudgetLedger(config.budgets, gateway.clock.wall) if config.budgets else None
        self.recorder = SpendRecorder(self.store) if self.store is not None else None
        writer = audit_writer(gateway.loaded, gateway.clock.wall)
        self.audit = AuditLog(writer) if writer is not None else None
        self.limiter = KeyRateLimiter(gateway.clock)
        self.governed = GovernedGateway(gateway, self.budgets, self.recorder, self.audit, self.limiter)

    async def start(self) -> None:
        if self.audit is not None:
            self.audit.start()
        if self.store is not None and self.budgets is not None:
            budgets = self.budgets
            spent = await self.store.call(self.store.sync.spend, budgets.period_of, budgets.names)
            budgets.load(spent)

    async def close(self) -> None:
        await self.governed.close()
        if self.audit is not None:
            self.audit.close()
        if self.store is not None:
            await self.store.close()

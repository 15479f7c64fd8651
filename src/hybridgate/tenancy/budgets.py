"""Budgets per tenant and per key, enforced atomically: reserve, then settle or release.

Before a request is sent, its *maximum* cost (the most expensive deployment it may reach, with
the most output it may produce) is reserved on every budget that applies; the request is
admitted only if settled spend + outstanding reservations + this reservation stay within the
limit. Reserving is synchronous (no await between the check and the reservation), so on the
one event loop concurrent requests cannot both take the last of a budget: the overspend is
bounded by how much one request's actual cost exceeds its reservation (nothing, when prices
and the token estimate hold). After the call the actual cost is settled and the rest released;
a failed request releases all of it.

When a budget is exhausted, its action decides: ``refuse`` (402 naming the budget) or
``local-only`` (the request is routed to local deployments only, and their cost is charged to the
budget's separate ``local_usd`` allowance). Periods are UTC days or months of the injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hybridgate.config.tenancy import BudgetConfig
from hybridgate.errors import BudgetExhausted
from hybridgate.tenancy.store import SpendDelta


def period_key(period: str, wall: float) -> str:
    t = time.gmtime(wall)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        if period == "day"
        else f"{t.tm_year:04d}-{t.tm_mon:02d}"
    )


@dataclass(slots=True)
class Account:
    """One budget in one period: settled spend and outstanding reservations."""

    config: BudgetConfig
    period: str
    usd: float = 0.0
    tokens: int = 0
    local_usd: float = 0.0
    reserved_usd: float = 0.0
    reserved_tokens: int = 0
    reserved_local_usd: float = 0.0

    def fits(self, usd: float, tokens: int) -> bool:
        c = self.config
        if c.usd is not None and self.usd + self.reserved_usd + usd > c.usd:
            return False
        return c.tokens is None or self.tokens + self.reserved_tokens + tokens <= c.tokens

    def fits_local(self, usd: float) -> bool:
        limit = self.config.local_usd
        return limit is None or self.local_usd + self.reserved_local_usd + usd <= limit


@dataclass(slots=True)
class Hold:
    account: Account
    usd: float
    tokens: int
    local: bool  # held on the local allowance


@dataclass(slots=True)
class Reservation:
    """What one request holds; ``local_only`` says why it may not leave the device, if so."""

    holds: list[Hold] = field(default_factory=list)
    local_only: str | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class MaxCost:
    """The most a request may cost: on any deployment, and on local deployments only."""

    usd: float
    local_usd: float
    tokens: int


class BudgetLedger:
    """The reservation ledger of every configured budget (in process; spend persisted by the caller)."""

    def __init__(self, budgets: Sequence[BudgetConfig], wall: Callable[[], float]) -> None:
        self._configured = list(budgets)
        self._budgets = list(budgets)
        self._wall = wall
        self._accounts: dict[str, Account] = {}
        self.refused = 0

    @property
    def configured(self) -> frozenset[str]:
        """Names of the budgets in the configuration (the store cannot override them)."""
        return frozenset(b.name for b in self._configured)

    def replace_managed(self, managed: Sequence[BudgetConfig]) -> list[str]:
        """Set the budgets managed in the store (besides the configured ones); returns the names
        that are new to this ledger (their recorded spend should be loaded)."""
        configured = self.configured
        self._budgets = [*self._configured, *(b for b in managed if b.name not in configured)]
        names = {b.name for b in self._budgets}
        for gone in set(self._accounts) - names:
            del self._accounts[gone]
        return [b.name for b in self._budgets if b.name not in self._accounts]

    @property
    def names(self) -> list[str]:
        return [b.name for b in self._budgets]

    def period_of(self, name: str) -> str:
        config = next(b for b in self._budgets if b.name == name)
        return period_key(config.period, self._wall())

    def load(self, spent: dict[str, SpendDelta]) -> None:
        """Start the budgets named in ``spent`` from what the store recorded for their periods."""
        for budget in self._budgets:
            if budget.name not in spent:
                continue
            account = self._account(budget)
            if (s := spent[budget.name]).period == account.period:
                account.usd, account.tokens, account.local_usd = s.usd, s.tokens, s.local_usd

    def _account(self, budget: BudgetConfig) -> Account:
        period = period_key(budget.period, self._wall())
        account = self._accounts.get(budget.name)
        if account is None or account.period != period:  # a new day or month starts from zero
            account = self._accounts[budget.name] = Account(budget, period)
        elif account.config is not budget:  # changed through the admin API or the CLI
            account.config = budget
        return account

    def applicable(self, tenant: str, key_id: str) -> list[Account]:
        return [
            self._account(b)
            for b in self._budgets
            if (b.tenant is not None and b.tenant == tenant) or (b.key is not None and b.key == key_id)
        ]

    def reserve(self, tenant: str, key_id: str, cost: MaxCost, *, may_go_local: bool) -> Reservation:
        """Hold ``cost`` on every applicable budget, or raise 402 naming the one that is spent."""
        reservation = Reservation()
        accounts = self.applicable(tenant, key_id)
        exhausted = [a for a in accounts if not a.fits(cost.usd, cost.tokens)]
        for account in exhausted:
            c = account.config
            if c.on_exhausted == "refuse" or not may_go_local:
                self.refused += 1
                raise BudgetExhausted(f"budget {c.name!r} ({c.period} {account.period}) is exhausted")
            if not account.fits_local(cost.local_usd):
                self.refused += 1
                raise BudgetExhausted(
                    f"budget {c.name!r} ({c.period} {account.period}) and its local allowance are exhausted"
                )
        if exhausted:
            names = ", ".join(repr(a.config.name) for a in exhausted)
            reservation.local_only = f"budget {names} exhausted: local only"
        for account in accounts:
            local = reservation.local_only is not None
            usd = cost.local_usd if local else cost.usd
            hold = Hold(account, usd, 0 if local else cost.tokens, local=local and account in exhausted)
            if hold.local:
                account.reserved_local_usd += hold.usd
            else:
                account.reserved_usd += hold.usd
                account.reserved_tokens += hold.tokens
            reservation.holds.append(hold)
        return reservation

    def release(self, reservation: Reservation) -> None:
        """The request failed: give back everything it held."""
        self.settle(reservation, 0.0, 0)

    def settle(self, reservation: Reservation, usd: float, tokens: int) -> list[SpendDelta]:
        """Charge the actual cost, release the rest; returns the spend to persist."""
        if reservation.done:
            return []
        reservation.done = True
        deltas: list[SpendDelta] = []
        for hold in reservation.holds:
            a = hold.account
            if hold.local:
                a.reserved_local_usd = max(0.0, a.reserved_local_usd - hold.usd)
                a.local_usd += usd
                delta = SpendDelta(a.config.name, a.period, 0.0, 0, usd)
            else:
                a.reserved_usd = max(0.0, a.reserved_usd - hold.usd)
                a.reserved_tokens = max(0, a.reserved_tokens - hold.tokens)
                a.usd += usd
                a.tokens += tokens
                delta = SpendDelta(a.config.name, a.period, usd, tokens, 0.0)
            if usd or tokens:
                deltas.append(delta)
        return deltas

    def describe(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for budget in self._budgets:
            a = self._account(budget)
            out.append(
                {"name": budget.name, "period": a.period, "usd": a.usd, "tokens": a.tokens,
                 "local_usd": a.local_usd, "limit_usd": budget.usd, "limit_tokens": budget.tokens,
                 "reserved_usd": a.reserved_usd}
            )  # fmt: skip
        return out

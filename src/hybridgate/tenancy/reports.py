"""``hybridgate cost report``: the store's usage ledger grouped by tenant, class, placement,
region, deployment, key and period."""

from __future__ import annotations

import calendar
import time
from collections.abc import Sequence
from typing import Any

from hybridgate.errors import InvalidRequest
from hybridgate.tenancy.store import SQLStore, UsageRow

DIMENSIONS = ("tenant", "key", "class", "placement", "region", "deployment")
_FIELD = {"tenant": "tenant", "key": "key_id", "class": "workload_class", "placement": "placement",
          "region": "region", "deployment": "deployment"}  # fmt: skip


def _date(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%d")))
    except ValueError:
        raise InvalidRequest(f"--{option} must be a date like 2026-11-28, got {text!r}") from None


def _period(ts: float, period: str) -> str:
    t = time.gmtime(ts)
    if period == "day":
        return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
    return f"{t.tm_year:04d}-{t.tm_mon:02d}" if period == "month" else "all"


def group(rows: Sequence[UsageRow], by: Sequence[str], period: str) -> list[dict[str, Any]]:
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise InvalidRequest(f"unknown dimension {unknown[0]!r} (known: {', '.join(DIMENSIONS)})")
    if period not in ("day", "month", "all"):
        raise InvalidRequest(f"period must be day, month or all, got {period!r}")
    totals: dict[tuple[str, ...], list[float]] = {}
    for row in rows:
        key = (_period(row.ts, period), *(str(getattr(row, _FIELD[d])) for d in by))
        t = totals.setdefault(key, [0, 0, 0, 0.0])
        t[0] += 1
        t[1] += row.prompt_tokens
        t[2] += row.completion_tokens
        t[3] += row.cost_usd
    out: list[dict[str, Any]] = []
    for key in sorted(totals):
        requests, prompt, completion, cost = totals[key]
        entry: dict[str, Any] = {"period": key[0], **dict(zip(by, key[1:], strict=True))}
        entry.update(requests=int(requests), prompt_tokens=int(prompt), completion_tokens=int(completion),
                     cost_usd=round(cost, 9))  # fmt: skip
        out.append(entry)
    return out


def cost_report(
    store: SQLStore, by: Sequence[str], period: str, since: str | None, until: str | None
) -> list[dict[str, Any]]:
    return group(store.usage(_date(since, "since"), _date(until, "until")), [d.strip() for d in by], period)

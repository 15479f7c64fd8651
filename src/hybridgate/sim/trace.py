"""Trace replay: the requests of a decision log the gateway wrote, replayed at their own times.

Each JSON line of the log (``decision_log.path`` in the configuration) gives when a request came
(``ts``), its class, tenant, origin region, declared sensitivity, whether it streamed, its token
usage, and the kinds of sensitive data the scan found (``plan.data.kinds``; never values). The
simulator replays those requests — arrival times scaled by ``trace_speed`` — through the
simulated gateway, so a routing rule can be tried on last week's traffic. Requests that never
got an answer carry no usage and are replayed with the class's expected output; lines that are
not requests (or not JSON) are errors naming the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import orjson

from hybridgate.config.governance import SENSITIVITY_ORDER, Sensitivity
from hybridgate.errors import ConfigError


class TraceRecord(NamedTuple):
    t: float  # seconds after the first record, already scaled by the replay speed
    workload_class: str
    tenant: str
    region: str
    sensitivity: Sensitivity
    stream: bool
    prompt_tokens: int
    output_tokens: int | None  # None: not known (the request failed); the class's expected output
    kinds: frozenset[str]


def _record(data: Any) -> tuple[float, TraceRecord]:
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    ts, cls = data.get("ts"), data.get("class")
    if not isinstance(ts, int | float) or not isinstance(cls, str):
        raise ValueError("needs a numeric 'ts' and a string 'class'")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    plan = data.get("plan") if isinstance(data.get("plan"), dict) else {}
    kinds = (plan.get("data") or {}).get("kinds") or [] if isinstance(plan, dict) else []
    declared = data.get("sensitivity", "public")
    sensitivity: Sensitivity = next((s for s in SENSITIVITY_ORDER if s == declared), "public")
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    output = usage.get("completion_tokens") if isinstance(usage, dict) else None
    record = TraceRecord(
        0.0,
        cls,
        str(data.get("tenant", "default")),
        str(data.get("region", "default")),
        sensitivity,
        bool(data.get("stream", False)),
        max(1, int(prompt)) if isinstance(prompt, int | float) else 200,
        max(1, int(output)) if isinstance(output, int | float) and output > 0 else None,
        frozenset(str(k) for k in kinds) if isinstance(kinds, list) else frozenset(),
    )
    return float(ts), record


def load_trace(path: Path, speed: float = 1.0) -> list[TraceRecord]:
    """The records of a decision log in time order; raises ConfigError naming bad lines."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError([("trace", f"cannot read {path}: {exc}")]) from exc
    rows: list[tuple[float, int, TraceRecord]] = []
    problems: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            ts, record = _record(orjson.loads(line))
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            problems.append((f"trace {path.name} line {number}", str(exc)))
            if len(problems) >= 10:
                break
            continue
        rows.append((ts, number, record))
    if problems:
        raise ConfigError(problems)
    if not rows:
        raise ConfigError([("trace", f"{path} holds no requests")])
    rows.sort(key=lambda row: (row[0], row[1]))
    first = rows[0][0]
    return [record._replace(t=(ts - first) / speed) for ts, _, record in rows]

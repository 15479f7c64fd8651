"""The gateway's sandbox clouds, through their control API (docs/sandbox.md).

The gateway starts one sandbox child per ``sandbox`` deployment and reports each one's base URL
in ``/readyz`` (``deployments.NAME.runtime.url``). Through it the demo

- turns on **capture** before the workload, so it can check afterwards what each cloud really
  received: a planted sensitive value found there is a governance violation;
- injects the **outage**: a ``flapping`` rule that is down (503 on every request, model lists
  included, so the probes see it too) for the outage's length, then up;
- clears the faults at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

CAPTURE_SIZE = 1_000_000  # request bodies kept per sandbox: every request of a run
_UP_S = 86_400.0  # after its outage a flapping rule stays up this long (the run ends first)


@dataclass(frozen=True, slots=True)
class Cloud:
    """One sandbox deployment of the gateway: its name and control base URL."""

    deployment: str
    url: str


def clouds_of(readyz: Mapping[str, Any]) -> list[Cloud]:
    """The sandbox deployments listed in a ``/readyz`` body, with their control URLs."""
    out = []
    for name, dep in (readyz.get("deployments") or {}).items():
        runtime = dep.get("runtime") if isinstance(dep, dict) else None
        if isinstance(runtime, dict) and runtime.get("sandbox") and isinstance(runtime.get("url"), str):
            out.append(Cloud(name, runtime["url"]))
    return sorted(out, key=lambda c: c.deployment)


async def find_clouds(http: aiohttp.ClientSession, gateway_url: str) -> list[Cloud]:
    async with http.get(f"{gateway_url}/readyz") as response:
        return clouds_of(await response.json())


async def _each(
    http: aiohttp.ClientSession, clouds: Sequence[Cloud], method: str, path: str, body: Any
) -> None:
    async def one(cloud: Cloud) -> None:
        data = None if body is None else orjson.dumps(body)
        async with http.request(method, f"{cloud.url}{path}", data=data) as response:
            response.raise_for_status()

    await asyncio.gather(*(one(c) for c in clouds))


async def start_capture(http: aiohttp.ClientSession, clouds: Sequence[Cloud]) -> None:
    await _each(http, clouds, "POST", "/sandbox/capture", {"enabled": True, "size": CAPTURE_SIZE})


async def start_outage(http: aiohttp.ClientSession, clouds: Sequence[Cloud], length_s: float) -> None:
    """Every cloud down for ``length_s`` from now (503 to everything), then up again by itself."""
    rule = {"kind": "flapping", "down_s": length_s, "up_s": _UP_S, "status": 503}
    await _each(http, clouds, "POST", "/sandbox/faults", [rule])


async def clear_faults(http: aiohttp.ClientSession, clouds: Sequence[Cloud]) -> None:
    await _each(http, clouds, "DELETE", "/sandbox/faults", None)


async def received_text(http: aiohttp.ClientSession, clouds: Sequence[Cloud]) -> dict[str, str]:
    """Per cloud, every request body it received since capture started, as one JSON text."""

    async def one(cloud: Cloud) -> tuple[str, str]:
        async with http.get(f"{cloud.url}/sandbox/captured") as response:
            response.raise_for_status()
            captured = await response.json()
        bodies = [r.get("body") for r in captured.get("requests", [])]
        return cloud.deployment, orjson.dumps(bodies).decode()

    return dict(await asyncio.gather(*(one(c) for c in clouds)))


def leaked(values: Iterable[str], received: Mapping[str, str]) -> list[str]:
    """The clouds among ``received`` whose bodies contain any of ``values``."""
    wanted = list(values)
    return [name for name, text in received.items() if any(v in text for v in wanted)]

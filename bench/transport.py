"""The upstream HTTP client alone: hybridgate's transport vs aiohttp's client, side by side.

Both clients send the same chat-completion request, sequentially on one keep-alive connection,
to the same mock upstream (its own process), alternating in rounds so that machine noise hits
both alike. Reported per client: CPU time per request in this process (what the gateway pays
per upstream call) and wall time per request, and the ratio between the two clients.

Usage::

    python bench/transport.py [--requests 4000] [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import orjson
from rich.console import Console
from rich.table import Table

import _harness as h
from hybridgate.backends.transport import HTTPTransport

BODY = orjson.dumps(
    {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 60, "temperature": 0}
)
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
RESULTS_DIR = Path(__file__).resolve().parent / "results"

Call = Callable[[], Awaitable[bytes]]


async def _measure(call: Call, n: int) -> tuple[float, float]:
    """(CPU µs per request, wall µs per request) over ``n`` sequential calls."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        body = await call()
        if not body.startswith(b"{"):
            raise RuntimeError(f"unexpected answer: {body[:80]!r}")
    return (time.process_time() - cpu0) / n * 1e6, (time.perf_counter() - wall0) / n * 1e6


async def run(port: int, requests: int, rounds: int) -> dict[str, dict[str, float]]:
    base = f"http://127.0.0.1:{port}/v1"
    transport = HTTPTransport(base)
    head = transport.request_head("POST", "/chat/completions", HEADERS)
    loop = asyncio.get_running_loop()

    async def ours() -> bytes:
        until = loop.time() + 10
        return await (await transport.request(head, BODY, until=until)).read(until)

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    url = f"{base}/chat/completions"

    async def theirs() -> bytes:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            return await response.read()

    clients: dict[str, Call] = {"hybridgate transport": ours, f"aiohttp {aiohttp.__version__}": theirs}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    try:
        for call in clients.values():  # warm-up: connections, caches
            await _measure(call, 200)
        per_round = max(1, requests // rounds)
        for r in range(rounds):
            order = list(clients.items()) if r % 2 == 0 else list(reversed(clients.items()))
            for name, call in order:
                samples[name].append(await _measure(call, per_round))
    finally:
        await transport.aclose()
        await session.close()
    return {
        name: {
            "cpu_us_per_request": sorted(c for c, _ in values)[len(values) // 2],
            "wall_us_per_request": sorted(w for _, w in values)[len(values) // 2],
        }
        for name, values in samples.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=4000, help="requests per client in total")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    ap.add_argument("--json", type=Path, default=None, help="where to write the JSON results")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hybridgate-bench-transport-") as tmp:
        mock = h.Child("mock", h.mock_command(), Path(tmp) / "mock.log", h.MOCK_READY)
        with mock:
            port = int(mock.start(30.0).group(1))
            with asyncio.Runner(loop_factory=h.loop_factory()) as runner:
                results = runner.run(run(port, args.requests, args.rounds))
    ours, theirs = results.values()
    table = Table(title=f"upstream client cost per request (median of {args.rounds} rounds, one connection)")
    for column in ("client", "CPU µs/request", "wall µs/request"):
        table.add_column(column, justify="right")
    for name, r in results.items():
        table.add_row(name, f"{r['cpu_us_per_request']:.1f}", f"{r['wall_us_per_request']:.1f}")
    Console().print(table)
    ratio = theirs["cpu_us_per_request"] / ours["cpu_us_per_request"]
    print(f"CPU ratio aiohttp / hybridgate transport: {ratio:.2f}x")
    out = args.json or RESULTS_DIR / f"transport-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(
        orjson.dumps(
            {"results": results, "cpu_ratio": ratio, "loop": h.loop_name()}, option=orjson.OPT_INDENT_2
        )
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

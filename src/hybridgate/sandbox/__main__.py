"""Run the SANDBOX server.

    python -m hybridgate.sandbox --port 0 --profile cloud-typical --seed 1 --ready-file F

With ``--port 0`` it binds a free port; once listening it writes ``{"port": N, "pid": P}`` to
the ready file (atomically), which is how the gateway and the tests find it. SIGTERM or SIGINT
stop it; with ``--exit-on-eof`` so does the end of its stdin, which is how a parent ties the
sandbox's life to its own (the pipe closes when the parent dies, however it dies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import orjson
from pydantic import TypeAdapter, ValidationError

from hybridgate.sandbox.faults import FaultRule
from hybridgate.sandbox.profile import ProfileError, builtin_profiles, load_profile
from hybridgate.sandbox.server import SandboxServer

log = logging.getLogger("hybridgate.sandbox")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hybridgate.sandbox",
        description="hybridgate SANDBOX: a stand-in cloud LLM API on loopback "
        "(synthetic text and latency, fault injection; not a real model).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port; 0 picks a free one (default)")
    parser.add_argument(
        "--profile",
        default="cloud-typical",
        help=f"built-in ({', '.join(builtin_profiles())}) or a YAML path",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of latency, faults and text")
    parser.add_argument(
        "--time-scale", type=float, default=None, help="multiply every delay (overrides the profile)"
    )
    parser.add_argument(
        "--context-window", type=int, default=None, help="override the profile's context window"
    )
    parser.add_argument(
        "--model", action="append", default=[], help="a model name /v1/models lists (repeatable)"
    )
    parser.add_argument("--faults", default=None, help="JSON list of fault rules to install at start")
    parser.add_argument(
        "--ready-file", type=Path, default=None, help='write {"port": N, "pid": P} here once listening'
    )
    parser.add_argument("--exit-on-eof", action="store_true", help="exit when stdin reaches end of file")
    parser.add_argument(
        "--log-size", type=int, default=10_000, help="request records kept for /sandbox/stats"
    )
    return parser.parse_args(argv)


def _write_ready(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps({"port": port, "pid": os.getpid()}))
    os.replace(tmp, path)


async def _stop_at_eof(stop: asyncio.Event) -> None:
    """Set ``stop`` when stdin ends: the parent closed its end of the pipe, or died."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    stop.set()


async def _serve(args: argparse.Namespace, server: SandboxServer) -> None:
    sock = socket.create_server((args.host, args.port))
    port = await server.start(sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_stop_at_eof(stop)) if args.exit_on_eof else None
    if args.ready_file is not None:
        _write_ready(args.ready_file, port)
    log.warning(  # after the ready file: whoever sees this line finds the file in place
        "hybridgate SANDBOX listening on http://%s:%d (profile %s, seed %d, time_scale %g): "
        "a stand-in cloud with synthetic text and latency, NOT a real model",
        args.host,
        port,
        server.profile.name,
        server.seed,
        server.time_scale,
    )
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await server.close()


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        profile = load_profile(args.profile)
        updates: dict[str, object] = {}
        if args.context_window is not None:
            updates["context_window"] = args.context_window
        if args.model:
            updates["models"] = args.model
        profile = profile.model_copy(update=updates)
        server = SandboxServer(profile, seed=args.seed, time_scale=args.time_scale, log_size=args.log_size)
        if args.faults:
            server.faults.add(TypeAdapter(list[FaultRule]).validate_json(args.faults))
    except (ProfileError, ValidationError) as exc:
        print(f"hybridgate sandbox: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args, server))
    else:
        uvloop.run(_serve(args, server))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One server process: a whole gateway serving HTTP on a socket bound before it started.

``serve`` with one worker runs :func:`serve_one` in its own process, exactly as before workers
existed. With several, the supervisor forks one process per worker and each runs
:func:`run_worker`: the same gateway and app, plus the Unix socket that lets any worker's
/metrics gather every worker's metrics (:mod:`hybridgate.serving.peers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from hybridgate.api.app import create_app
from hybridgate.config.loader import LoadedConfig
from hybridgate.config.schema import ServerConfig
from hybridgate.errors import ConfigError, HybridgateError
from hybridgate.gateway import Gateway
from hybridgate.privacy.guard import build_guard
from hybridgate.serving.peers import ExpositionServer, WorkerExpositions, socket_path

log = logging.getLogger("hybridgate.serving")

# Exit status of a worker whose gateway could not be built from the configuration (as `serve`'s).
CONFIG_ERROR_EXIT = 2


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the supervisor hands a worker process."""

    index: int
    count: int
    directory: Path  # the instance's private directory of the workers' Unix sockets
    ready_fd: int  # pipe to the supervisor: the worker writes its index there once serving
    parent_fd: int  # pipe from the supervisor: end of file when the supervisor is gone


def uvicorn_config(app: Callable[..., Awaitable[None]], server: ServerConfig) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        log_level=server.log_level,
        access_log=server.access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,
        # X-Forwarded-* are not trusted (and their middleware costs on every request); the
        # gateway does not need client addresses. No Server header advertising the stack.
        proxy_headers=False,
        server_header=False,
    )


def build_gateway(loaded: LoadedConfig) -> Gateway:
    """The gateway of ``loaded`` (raises ConfigError when a deployment cannot be built)."""
    return Gateway(loaded, guard=build_guard(loaded.config.governance.detection))


def serve_one(gateway: Gateway, sock: socket.socket, on_ready: Callable[[], None]) -> None:
    """Serve ``gateway`` on ``sock`` in this process until SIGTERM or SIGINT (one worker)."""
    asgi = create_app(gateway, on_ready=on_ready)
    uvicorn.Server(uvicorn_config(asgi, gateway.config.server)).run(sockets=[sock])


def run_worker(loaded: LoadedConfig, sock: socket.socket, spec: WorkerSpec) -> None:
    """The body of worker ``spec.index``'s process (forked by the supervisor)."""
    try:
        gateway = build_gateway(loaded)
    except ConfigError as exc:
        log.error("worker %d: %s", spec.index, exc.message)
        raise SystemExit(CONFIG_ERROR_EXIT) from None
    local = ExpositionServer(socket_path(spec.directory, spec.index), gateway.metrics.render)
    everyone = WorkerExpositions(spec.index, spec.count, spec.directory, gateway.metrics.render)

    def on_ready() -> None:
        os.write(spec.ready_fd, f"{spec.index}\n".encode())

    try:
        asgi = create_app(gateway, on_ready=on_ready, metrics=everyone.render)
    except HybridgateError as exc:  # e.g. the key store is locked or unreadable
        log.error("worker %d: %s", spec.index, exc.message)
        raise SystemExit(CONFIG_ERROR_EXIT) from None
    config = uvicorn_config(asgi, gateway.config.server)
    server = uvicorn.Server(config)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        orphaned = runner.run(_serve(server, sock, local, spec.parent_fd))
    if orphaned:
        # Nobody else will remove the instance's directory: the last worker out does (rmdir
        # fails while another worker's socket is still in it).
        with contextlib.suppress(OSError):
            spec.directory.rmdir()


async def _serve(
    server: uvicorn.Server, sock: socket.socket, local: ExpositionServer, parent_fd: int
) -> bool:
    """Serve until stopped; True when stopped because the supervisor is gone."""
    loop = asyncio.get_running_loop()
    orphaned = False

    def parent_gone() -> None:
        # The supervisor died without stopping us (SIGKILL): do not serve on as an orphan.
        nonlocal orphaned
        orphaned = True
        loop.remove_reader(parent_fd)
        log.warning("the supervisor process is gone: shutting down")
        server.should_exit = True

    loop.add_reader(parent_fd, parent_gone)
    await local.start()  # before the app reports ready: a ready worker answers its peers
    try:
        await server.serve(sockets=[sock])
    finally:
        await local.close()
    return orphaned

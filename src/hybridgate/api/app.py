"""The ASGI application, assembled in one place.

Every endpoint is wrapped by :func:`_endpoint`, which authenticates and renders any
:class:`~hybridgate.errors.HybridgateError` in that endpoint's wire format. Unknown routes and
methods, and (as a last resort) unexpected exceptions, also answer in JSON, never with a
traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hybridgate.api.anthropic_routes import AnthropicRoutes
from hybridgate.api.http import Authenticator, error_response
from hybridgate.api.openai_routes import OpenAIRoutes
from hybridgate.api.system_routes import SystemRoutes
from hybridgate.errors import HybridgateError, InvalidRequest, NotFound
from hybridgate.gateway import Gateway
from hybridgate.types import WireFormat

log = logging.getLogger("hybridgate.api")

Handler = Callable[[Request], Awaitable[Response]]


def _format_of(path: str) -> WireFormat:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def _endpoint(handler: Handler, fmt: WireFormat, auth: Authenticator | None) -> Handler:
    async def run(request: Request) -> Response:
        try:
            if auth is not None:
                auth.check(request)
            return await handler(request)
        except HybridgateError as err:
            return error_response(err, fmt)

    return run


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    fmt = _format_of(request.url.path)
    if exc.status_code == 404:
        return error_response(NotFound(f"no route {request.method} {request.url.path}"), fmt)
    err = InvalidRequest(f"{exc.detail}: {request.method} {request.url.path}")
    err.status = exc.status_code
    return error_response(err, fmt)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The last-resort boundary: a bug must still reach the client as a JSON error in its own
    # format, and the traceback goes to the log only.
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    err = HybridgateError("internal error in the gateway; see the gateway log")
    return error_response(err, _format_of(request.url.path))


def create_app(gateway: Gateway, *, on_ready: Callable[[], None] | None = None) -> Starlette:
    """The ASGI app for ``gateway``; its lifespan starts and closes the gateway.

    ``on_ready`` runs once the gateway's backends have started (before requests are served).
    """
    server = gateway.config.server
    keys = [k.get_secret_value() for k in server.auth.api_keys]
    auth = Authenticator(keys)
    if not auth.enabled:
        log.warning("client authentication is OFF (server.auth.api_keys is empty): local development only")
    openai = OpenAIRoutes(gateway, server.max_body_bytes)
    anthropic = AnthropicRoutes(gateway, server.max_body_bytes)
    system = SystemRoutes(gateway)

    routes = [
        Route("/v1/chat/completions", _endpoint(openai.chat_completions, "openai", auth), methods=["POST"]),
        Route("/v1/embeddings", _endpoint(openai.embeddings, "openai", auth), methods=["POST"]),
        Route("/v1/messages", _endpoint(anthropic.messages, "anthropic", auth), methods=["POST"]),
        Route("/v1/models", _endpoint(system.models, "openai", auth), methods=["GET"]),
        Route("/healthz", _endpoint(system.healthz, "openai", None), methods=["GET"]),
        Route("/readyz", _endpoint(system.readyz, "openai", None), methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await gateway.close()

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception, Exception: _unexpected},
    )

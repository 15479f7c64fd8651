"""The ASGI application, assembled in one place.

Routing is an exact-path table; each route names its wire format (errors are rendered in it)
and whether it needs a client key. Every :class:`~hybridgate.errors.HybridgateError` becomes a
JSON error in the route's format; an unexpected exception is logged with its traceback and the
client gets a JSON 500, never the traceback.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hybridgate.api.anthropic_routes import AnthropicRoutes
from hybridgate.api.asgi import EventStreamResponse, Handler, Receive, Request, Response, Scope, Send
from hybridgate.api.auth import ClientAuth
from hybridgate.api.dashboard_routes import DashboardRoutes
from hybridgate.api.explain_routes import ExplainRoutes
from hybridgate.api.http import Authenticator, error_response
from hybridgate.api.openai_routes import OpenAIRoutes
from hybridgate.api.system_routes import SystemRoutes
from hybridgate.api.tenancy_routes import TenancyRoutes
from hybridgate.errors import HybridgateError, MethodNotAllowed, NotFound
from hybridgate.gateway import Gateway
from hybridgate.tenancy.service import Tenancy
from hybridgate.types import WireFormat

log = logging.getLogger("hybridgate.api")


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    format: WireFormat
    authenticated: bool
    scope: str = "use"  # what the client key must be allowed to do: use, read or admin


def _format_of(path: str) -> WireFormat:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


class GatewayApp:
    """The ASGI callable: lifespan starts and closes the gateway; HTTP goes through the route table."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        on_ready: Callable[[], None] | None = None,
        metrics: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self.gateway = gateway
        self.on_ready = on_ready
        server = gateway.config.server
        self.tenancy = Tenancy(gateway)
        self.auth = ClientAuth(
            Authenticator(server.auth.api_keys),
            self.tenancy.store,
            gateway.clock,
            cache_ttl_s=gateway.config.tenancy.key_cache_ttl_s,
            disabled=server.auth.disabled,
        )
        if not self.auth.enabled:
            log.warning("%s", self.auth.status()["warning"])
        openai = OpenAIRoutes(self.tenancy.governed, server.max_body_bytes)
        anthropic = AnthropicRoutes(self.tenancy.governed, server.max_body_bytes)
        system = SystemRoutes(gateway, metrics)
        tenancy = TenancyRoutes(gateway, self.tenancy, self.auth)
        explain = ExplainRoutes(gateway, server.max_body_bytes)
        dashboard = DashboardRoutes(gateway.config)
        self.routes: dict[str, dict[str, Route]] = {
            "/v1/chat/completions": {"POST": Route(openai.chat_completions, "openai", True)},
            "/v1/embeddings": {"POST": Route(openai.embeddings, "openai", True)},
            "/v1/messages": {"POST": Route(anthropic.messages, "anthropic", True)},
            "/v1/models": {"GET": Route(system.models, "openai", True)},
            "/v1/route/explain": {"POST": Route(explain.explain, "openai", True)},
            "/metrics": {"GET": Route(system.metrics, "openai", True, "read")},
            "/healthz": {"GET": Route(system.healthz, "openai", False)},
            "/readyz": {"GET": Route(tenancy.readyz, "openai", False)},
            # The page holds no data; the data it shows comes from /metrics with the client key.
            "/dashboard": {"GET": Route(dashboard.page, "openai", False)},
            "/dashboard/dashboard.js": {"GET": Route(dashboard.script, "openai", False)},
            "/dashboard/prometheus.js": {"GET": Route(dashboard.parser, "openai", False)},
            "/dashboard/dashboard.css": {"GET": Route(dashboard.style, "openai", False)},
            "/dashboard/config.json": {"GET": Route(dashboard.config, "openai", True, "read")},
            **tenancy.admin_routes(Route),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, self.gateway.clock.monotonic())
        fmt = _format_of(request.path)
        response: Response | EventStreamResponse
        try:
            route = self._route(request)
            fmt = route.format
            if route.authenticated:
                request.identity = await self.auth.authenticate(request, route.scope)
            response = await route.handler(request)
        except HybridgateError as err:
            response = error_response(err, fmt)
        except Exception:
            # The last-resort boundary: a bug still reaches the client as JSON in its format,
            # and the traceback goes to the log only.
            log.exception("unexpected error on %s %s", request.method, request.path)
            response = error_response(
                HybridgateError("internal error in the gateway; see the gateway log"), fmt
            )
        await response(request, send)

    def _route(self, request: Request) -> Route:
        methods = self.routes.get(request.path)
        if methods is None:
            raise NotFound(f"no route {request.method} {request.path}")
        route = methods.get(request.method)
        if route is None:
            raise MethodNotAllowed(f"method {request.method} is not allowed on {request.path}")
        return route

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                    await self.tenancy.start()
                    self.gateway.start_health()
                except HybridgateError as err:
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                # Everything allocated so far lives as long as the process: move it out of the
                # cyclic collector's view, so full collections stay short (tail latency).
                gc.collect()
                gc.freeze()
                if self.on_ready is not None:
                    self.on_ready()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.tenancy.close()
                await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(
    gateway: Gateway,
    *,
    on_ready: Callable[[], None] | None = None,
    metrics: Callable[[], Awaitable[bytes]] | None = None,
) -> GatewayApp:
    """The ASGI app for ``gateway``; ``on_ready`` runs once its backends have started.

    ``metrics`` renders the /metrics body when it is not the gateway's own registry (several
    workers: every worker's, merged).
    """
    return GatewayApp(gateway, on_ready=on_ready, metrics=metrics)

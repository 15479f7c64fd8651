"""GET /dashboard: the live dashboard page, its script and style, and its configuration.

The page and its assets hold no data and are served without a key; the data behind them
(``/metrics``, ``/dashboard/config.json``) needs the client key, which the page asks for once and
keeps in the tab's ``sessionStorage`` (sent as ``Authorization: Bearer``, never in a URL).
Everything is rendered once at start-up and served from memory: the request path is untouched.
"""

from __future__ import annotations

import orjson

from hybridgate.api.asgi import Request, Response
from hybridgate.config.schema import GatewayConfig
from hybridgate.telemetry.dashboard import DashboardAsset, dashboard_config, load_assets

# The browser itself refuses any request to another origin: no CDN, no font, no beacon.
_SECURITY = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


def _response(asset: DashboardAsset) -> Response:
    return Response(asset.body, headers=[(b"content-type", asset.content_type.encode()), *_SECURITY])


class DashboardRoutes:
    def __init__(self, config: GatewayConfig) -> None:
        assets = load_assets()
        self._page = _response(assets["index.html"])
        self._script = _response(assets["dashboard.js"])
        self._parser = _response(assets["prometheus.js"])
        self._style = _response(assets["dashboard.css"])
        self._config = _response(DashboardAsset(orjson.dumps(dashboard_config(config)), "application/json"))

    async def page(self, request: Request) -> Response:
        return self._page

    async def script(self, request: Request) -> Response:
        return self._script

    async def parser(self, request: Request) -> Response:
        return self._parser

    async def style(self, request: Request) -> Response:
        return self._style

    async def config(self, request: Request) -> Response:
        return self._config

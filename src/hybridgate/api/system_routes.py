"""Models listing, liveness and readiness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from hybridgate.api.asgi import JSONResponse, Request, Response
from hybridgate.gateway import Gateway, ModelInfo
from hybridgate.telemetry.metrics import CONTENT_TYPE


def _model_entry(m: ModelInfo, created: int) -> dict[str, Any]:
    caps = m.capabilities
    created_at = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        # OpenAI's model object ...
        "id": m.name,
        "object": "model",
        "created": created,
        "owned_by": "hybridgate",
        # ... and Anthropic's, so both SDKs' models.list() parse the same response.
        "type": "model",
        "display_name": m.description or m.name,
        "created_at": created_at,
        # hybridgate's own details.
        "context_window": m.context_window,
        "capabilities": {
            "chat": caps.chat,
            "streaming": caps.streaming,
            "tools": caps.tools,
            "vision": caps.vision,
            "embeddings": caps.embeddings,
        },
        "placement": list(m.placements),
        "regions": list(m.regions),
        "deployments": [{"name": n, "state": s} for n, s in m.deployments],
    }


class SystemRoutes:
    def __init__(self, gateway: Gateway, metrics: Callable[[], Awaitable[bytes]] | None = None) -> None:
        self.gateway = gateway
        self._metrics = metrics  # None: this process's own registry (one worker)

    async def models(self, request: Request) -> Response:
        created = int(self.gateway.started_at)
        data = [_model_entry(m, created) for m in self.gateway.models()]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def metrics(self, request: Request) -> Response:
        body = self.gateway.metrics.render() if self._metrics is None else await self._metrics()
        return Response(body, headers=[(b"content-type", CONTENT_TYPE.encode())])

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        ready, detail = self.gateway.readiness()
        return JSONResponse(detail, status=200 if ready else 503)

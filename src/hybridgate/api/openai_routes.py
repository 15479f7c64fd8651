"""OpenAI-compatible endpoints: chat completions and embeddings."""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any

from hybridgate.api.asgi import EventStreamResponse, JSONResponse, Request, Response, cancel_on_disconnect
from hybridgate.api.http import read_json
from hybridgate.api.streaming import sse_response
from hybridgate.tenancy.governed import GovernedGateway
from hybridgate.wire import openai as wire


class OpenAIRoutes:
    def __init__(self, gateway: GovernedGateway, max_body_bytes: int) -> None:
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes

    async def chat_completions(self, request: Request) -> Response | EventStreamResponse:
        body = await read_json(request, self.max_body_bytes)
        req = wire.parse_chat_request(body)
        ctx = self.gateway.context(request.identity, request.headers, req.metadata)
        if req.stream:
            key = request.headers.get("idempotency-key")
            served, events = await cancel_on_disconnect(
                request, self.gateway.open_stream(req, ctx, request.arrived, key)
            )
            encoder = wire.ChunkEncoder(
                wire.completion_id(served.response_id), req.model, include_usage=req.include_usage
            )
            return sse_response(events, encoder, served.headers())
        key = request.headers.get("idempotency-key")
        served, completion = await cancel_on_disconnect(
            request, self.gateway.complete(req, ctx, request.arrived, key)
        )
        headers = {**served.headers(), "x-hybridgate-upstream-model": completion.model}
        return JSONResponse(wire.render_completion(completion, req.model), headers=headers)

    async def embeddings(self, request: Request) -> Response | EventStreamResponse:
        body = await read_json(request, self.max_body_bytes)
        req, encoding = wire.parse_embedding_request(body)
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        ctx = self.gateway.context(request.identity, request.headers, metadata or {})
        served, result = await self.gateway.embed(req, ctx, request.arrived)
        payload: dict[str, Any] = wire.render_embeddings(result, req.model)
        if encoding == "base64":
            for item in payload["data"]:
                item["embedding"] = _base64_floats(item["embedding"])
        return JSONResponse(payload, headers=served.headers())


def _base64_floats(vector: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32."""
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()

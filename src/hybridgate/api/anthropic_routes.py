"""The Anthropic Messages endpoint."""

from __future__ import annotations

from hybridgate.api.asgi import EventStreamResponse, JSONResponse, Request, Response
from hybridgate.api.http import read_json
from hybridgate.api.openai_routes import route_headers
from hybridgate.api.streaming import sse_response
from hybridgate.gateway import Gateway
from hybridgate.wire import anthropic as wire


class AnthropicRoutes:
    def __init__(self, gateway: Gateway, max_body_bytes: int) -> None:
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes

    async def messages(self, request: Request) -> Response | EventStreamResponse:
        body = await read_json(request, self.max_body_bytes)
        req = wire.parse_messages_request(body)
        if req.stream:
            _, stream = await self.gateway.open_stream(req)
            encoder = wire.EventEncoder(wire.message_id(), req.model)
            return sse_response(stream, encoder, route_headers(stream.deployment, stream.attempts))
        _, answer = await self.gateway.complete(req)
        headers = route_headers(answer.deployment, answer.attempts, answer.result.model)
        return JSONResponse(wire.render_message(answer.result, req.model), headers=headers)

"""The Anthropic Messages endpoint."""

from __future__ import annotations

from hybridgate.api.asgi import EventStreamResponse, JSONResponse, Request, Response, cancel_on_disconnect
from hybridgate.api.http import read_json
from hybridgate.api.streaming import sse_response
from hybridgate.tenancy.governed import GovernedGateway
from hybridgate.wire import anthropic as wire


class AnthropicRoutes:
    def __init__(self, gateway: GovernedGateway, max_body_bytes: int) -> None:
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes

    async def messages(self, request: Request) -> Response | EventStreamResponse:
        body = await read_json(request, self.max_body_bytes)
        req = wire.parse_messages_request(body)
        ctx = self.gateway.context(request.identity, request.headers, req.metadata)
        if req.stream:
            key = request.headers.get("idempotency-key")
            served, events = await cancel_on_disconnect(
                request, self.gateway.open_stream(req, ctx, request.arrived, key)
            )
            encoder = wire.EventEncoder(wire.message_id(served.response_id), req.model)
            return sse_response(events, encoder, served.headers())
        key = request.headers.get("idempotency-key")
        served, completion = await cancel_on_disconnect(
            request, self.gateway.complete(req, ctx, request.arrived, key)
        )
        headers = {**served.headers(), "x-hybridgate-upstream-model": completion.model}
        return JSONResponse(wire.render_message(completion, req.model), headers=headers)

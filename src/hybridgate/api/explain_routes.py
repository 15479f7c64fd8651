"""POST /v1/route/explain: how a request would be routed, without running it."""

from __future__ import annotations

from hybridgate.api.asgi import JSONResponse, Request, Response
from hybridgate.api.http import read_json
from hybridgate.errors import InvalidRequest
from hybridgate.gateway import Gateway
from hybridgate.wire import anthropic as anthropic_wire
from hybridgate.wire import openai as openai_wire


class ExplainRoutes:
    def __init__(self, gateway: Gateway, max_body_bytes: int) -> None:
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes

    async def explain(self, request: Request) -> Response:
        """The body is a chat request (OpenAI format, or Anthropic with ``?format=anthropic``).

        The same context rules apply as for a real request (headers, metadata, key defaults); the
        answer is the Explanation with the live health the gateway has now, and the context used.
        """
        body = await read_json(request, self.max_body_bytes)
        fmt = request.query.get("format", "openai")
        if fmt == "openai":
            req = openai_wire.parse_chat_request(body)
        elif fmt == "anthropic":
            req = anthropic_wire.parse_messages_request(body)
        else:
            raise InvalidRequest("format must be 'openai' or 'anthropic'", param="format")
        ctx = self.gateway.context(request.identity, request.headers, req.metadata)
        explanation = self.gateway.explain(req, ctx)
        return JSONResponse(
            {
                "context": {
                    "class": ctx.workload_class,
                    "tenant": ctx.tenant,
                    "region": ctx.region,
                    "sensitivity": ctx.sensitivity,
                    "latency_budget_ms": ctx.latency_budget_ms,
                    "max_cost_usd": ctx.max_cost_usd,
                },
                "explanation": explanation.to_dict(),
            }
        )

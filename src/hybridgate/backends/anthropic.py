"""Adapter for the native Anthropic Messages API (or any server speaking it).

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``; one pooled keep-alive
session per deployment; every failure mapped to :mod:`hybridgate.errors`. A stream that ends
after its stop reason but without ``message_stop`` is finalised; one that ends before any stop
reason raises :class:`~hybridgate.errors.UpstreamConnectionError`, never a silent truncation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from hybridgate.backends.base import ProbeResult, capabilities_of
from hybridgate.backends.http import Deadline, HTTPUpstream, mapped_errors
from hybridgate.backends.registry import BackendContext
from hybridgate.config.schema import AnthropicDeployment
from hybridgate.errors import UnsupportedFeature, UpstreamConnectionError
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    StreamEvent,
    Timeouts,
)
from hybridgate.wire import anthropic as wire


@dataclass(slots=True)
class StreamStats:
    """Counters the health layer reads."""

    streams_without_stop: int = 0


class AnthropicBackend:
    """One Anthropic Messages deployment."""

    def __init__(self, name: str, config: AnthropicDeployment, context: BackendContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.capabilities = capabilities_of(
            config,
            embeddings=False,
            response_format=False,  # the Messages API has no response_format; the codec drops it
            assistant_prefill=True,  # a trailing assistant turn is continued
        )
        self.stats = StreamStats()
        secret = config.api_key.get_secret_value() if config.api_key else ""
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": config.anthropic_version,
            **config.headers,
        }
        if secret:
            headers["x-api-key"] = secret
        self.http = HTTPUpstream(
            name,
            config.base_url,
            headers,
            secret=secret,
            max_connections=config.max_connections,
            timeouts=Timeouts(**config.timeouts.model_dump()),
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    def _body(self, request: InferenceRequest, *, stream: bool) -> dict[str, Any]:
        return wire.render_messages_request(
            request, self.config.model, stream=stream, default_max_tokens=self.config.default_max_tokens
        )

    # ------------------------------------------------------------------ inference

    async def complete(self, request: InferenceRequest, timeouts: Timeouts) -> Completion:
        answer = await self.http.post_json(
            "/v1/messages", self._body(request, stream=False), Deadline.whole(timeouts)
        )
        return wire.parse_message(answer, self.name)

    async def stream(self, request: InferenceRequest, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        deadline = Deadline.start(timeouts)
        decoder = wire.EventDecoder(self.name)
        response = await self.http.post("/v1/messages", self._body(request, stream=True), deadline)
        reader = self.http.events(response, deadline)
        try:
            while batch := await reader.next_batch():
                for sse in batch:
                    if not sse.data:
                        continue
                    # A malformed event may have carried text: skipping it would truncate silently.
                    with mapped_errors(self.name, "stream"):
                        data = orjson.loads(sse.data)
                    for event in decoder.feed(data):
                        reader.first_seen = True
                        yield event
                    if decoder.stopped:
                        break
                if decoder.stopped:
                    break
        finally:
            # Drop (not pool) a connection whose answer was abandoned half-way.
            if decoder.stopped:
                response.release()
            else:
                response.close()
        self._check_complete(decoder)
        yield decoder.end()

    def _check_complete(self, decoder: wire.EventDecoder) -> None:
        if decoder.stopped:
            return
        if decoder.finish_reason is None:
            raise UpstreamConnectionError(
                f"{self.name}: stream ended before the answer was complete", deployment=self.name
            )
        self.stats.streams_without_stop += 1

    async def embed(self, request: EmbeddingRequest, timeouts: Timeouts) -> EmbeddingResult:
        raise UnsupportedFeature(f"deployment {self.name} (Anthropic Messages API) does not serve embeddings")

    async def probe(self) -> ProbeResult:
        """GET /v1/models: authenticated, costs no tokens."""
        return await self.http.probe("/v1/models")


def create(name: str, config: AnthropicDeployment, context: BackendContext) -> AnthropicBackend:
    """Entry point registered as backend type ``anthropic``."""
    return AnthropicBackend(name, config, context)

"""Adapter for any OpenAI-compatible server.

OpenAI itself, vLLM, llama.cpp's server, Ollama's ``/v1``, LM Studio, Groq, Together...: one pooled
keep-alive session per deployment; every failure mapped to :mod:`hybridgate.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from hybridgate.backends.base import ProbeResult, capabilities_of
from hybridgate.backends.http import Deadline, HTTPUpstream
from hybridgate.backends.registry import BackendContext
from hybridgate.config.schema import OpenAIDeployment
from hybridgate.errors import UnsupportedFeature, UpstreamConnectionError
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    StreamEvent,
    Timeouts,
)
from hybridgate.wire import openai as wire


@dataclass(slots=True)
class StreamStats:
    """Counters the health layer reads: chunks skipped because they were malformed, and so on."""

    malformed_chunks: int = 0
    streams_without_done: int = 0


class OpenAIBackend:
    """One OpenAI-compatible deployment."""

    def __init__(self, name: str, config: OpenAIDeployment, context: BackendContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.capabilities = capabilities_of(config)
        self.stats = StreamStats()
        secret = config.api_key.get_secret_value() if config.api_key else ""
        headers = {"Content-Type": "application/json", "Accept": "application/json", **config.headers}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        self.http = HTTPUpstream(
            name,
            config.base_url,
            headers,
            secret=secret,
            max_connections=config.max_connections,
            timeouts=Timeouts(**config.timeouts.model_dump()),
        )

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()

    async def complete(self, request: InferenceRequest, timeouts: Timeouts) -> Completion:
        body = wire.render_chat_request(request, self.config.model, stream=False)
        answer = await self.http.post_json("/chat/completions", body, Deadline.whole(timeouts))
        return wire.parse_completion(answer, self.name)

    async def stream(self, request: InferenceRequest, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        deadline = Deadline.start(timeouts)
        body = wire.render_chat_request(request, self.config.model, stream=True)
        decoder = wire.ChunkDecoder(self.name)
        response = await self.http.post("/chat/completions", body, deadline)
        done = False
        reader = self.http.events(response, deadline)
        try:
            while not done and (batch := await reader.next_batch()):
                for sse in batch:
                    if sse.data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = orjson.loads(sse.data)
                    except orjson.JSONDecodeError:
                        self.stats.malformed_chunks += 1
                        continue
                    for event in decoder.feed(chunk):
                        reader.first_seen = True
                        yield event
        finally:
            # Drop (not pool) a connection whose answer was abandoned half-way.
            if done:
                response.release()
            else:
                response.close()
        if not done:
            if decoder.finish_reason is None:
                raise UpstreamConnectionError(
                    f"{self.name}: stream ended before the answer was complete", deployment=self.name
                )
            self.stats.streams_without_done += 1
        yield decoder.end()

    async def embed(self, request: EmbeddingRequest, timeouts: Timeouts) -> EmbeddingResult:
        if not self.capabilities.embeddings:
            raise UnsupportedFeature(f"deployment {self.name} does not serve embeddings")
        body: dict[str, Any] = {"model": self.config.model, "input": list(request.inputs)}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        answer = await self.http.post_json("/embeddings", body, Deadline.whole(timeouts))
        return wire.parse_embeddings(answer, self.name)

    async def probe(self) -> ProbeResult:
        """GET /models: costs no tokens."""
        return await self.http.probe("/models")


def create(name: str, config: OpenAIDeployment, context: BackendContext) -> OpenAIBackend:
    return OpenAIBackend(name, config, context)

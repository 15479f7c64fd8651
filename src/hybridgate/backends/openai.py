"""Adapter for any OpenAI-compatible server.

OpenAI itself, vLLM, llama.cpp's server, Ollama's ``/v1``, LM Studio, Groq, Together...: one pooled
keep-alive session per deployment; every failure mapped to :mod:`hybridgate.errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from hybridgate.backends.base import Capabilities, ProbeResult
from hybridgate.backends.http import Deadline, error_for_status, iter_sse, make_session, mapped_errors
from hybridgate.backends.registry import BackendContext
from hybridgate.config.schema import OpenAIDeployment, effective_placement
from hybridgate.errors import BackendUnavailable, UnsupportedFeature, UpstreamConnectionError
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    StreamEnd,
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
        self.capabilities = Capabilities(
            placement=effective_placement(config),
            region=config.region,
            context_window=config.context_window,
            max_output_tokens=config.max_output_tokens,
            chat=config.chat,
            tools=config.tools,
            vision=config.vision,
            embeddings=config.embeddings,
            assistant_prefill=config.assistant_prefill,
        )
        self.stats = StreamStats()
        self._timeouts = Timeouts(**config.timeouts.model_dump())
        self._secret = config.api_key.get_secret_value() if config.api_key else ""
        headers = {"Content-Type": "application/json", "Accept": "application/json", **config.headers}
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._session is None:
            self._session = make_session(self.config.max_connections, self._timeouts)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise BackendUnavailable(f"{self.name}: backend not started", deployment=self.name)
        return self._session

    async def _post(self, path: str, body: dict[str, Any], deadline: Deadline) -> aiohttp.ClientResponse:
        """POST and wait for response headers (bounded by the first-token deadline)."""
        session = self._http()
        async with asyncio.timeout_at(deadline.first_token_at):
            response = await session.post(
                f"{self.config.base_url}{path}", data=orjson.dumps(body), headers=self._headers
            )
        if response.status != 200:
            try:
                async with asyncio.timeout_at(deadline.next_read(False)):
                    payload = await response.read()
            finally:
                response.release()
            raise error_for_status(response.status, payload, response.headers, self.name, (self._secret,))
        return response

    # ------------------------------------------------------------------ inference

    async def complete(self, request: InferenceRequest, timeouts: Timeouts) -> Completion:
        deadline = Deadline.start(timeouts)
        body = wire.render_chat_request(request, self.config.model, stream=False)
        with mapped_errors(self.name):
            response = await self._post("/chat/completions", body, deadline)
            try:
                async with asyncio.timeout_at(deadline.total_at):
                    payload = await response.read()
            finally:
                response.release()
            return wire.parse_completion(orjson.loads(payload), self.name)

    async def stream(self, request: InferenceRequest, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        deadline = Deadline.start(timeouts)
        body = wire.render_chat_request(request, self.config.model, stream=True)
        decoder = wire.ChunkDecoder(self.name)
        with mapped_errors(self.name, "stream"):
            response = await self._post("/chat/completions", body, deadline)
        done = False
        first_seen = [False]
        try:
            with mapped_errors(self.name, "stream"):
                async for sse in iter_sse(response, deadline, first_seen):
                    if sse.data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = orjson.loads(sse.data)
                    except orjson.JSONDecodeError:
                        self.stats.malformed_chunks += 1
                        continue
                    for event in decoder.feed(chunk):
                        first_seen[0] = True
                        yield event
        finally:
            # Closing (not releasing) drops a half-read connection instead of returning it to the pool.
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
        end: StreamEnd = decoder.end()
        yield end

    async def embed(self, request: EmbeddingRequest, timeouts: Timeouts) -> EmbeddingResult:
        if not self.capabilities.embeddings:
            raise UnsupportedFeature(f"deployment {self.name} does not serve embeddings")
        deadline = Deadline.start(timeouts)
        body: dict[str, Any] = {"model": self.config.model, "input": list(request.inputs)}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        with mapped_errors(self.name):
            response = await self._post("/embeddings", body, deadline)
            try:
                async with asyncio.timeout_at(deadline.total_at):
                    payload = await response.read()
            finally:
                response.release()
            return wire.parse_embeddings(orjson.loads(payload), self.name)

    async def probe(self) -> ProbeResult:
        """GET /models: costs no tokens."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            session = self._http()
            async with asyncio.timeout(self._timeouts.connect + 5.0):
                async with session.get(f"{self.config.base_url}/models", headers=self._headers) as response:
                    await response.read()
                    ok = response.status == 200
                    detail = "" if ok else f"status {response.status}"
        except (TimeoutError, aiohttp.ClientError, OSError, BackendUnavailable) as exc:
            ok, detail = False, type(exc).__name__
        return ProbeResult(ok=ok, latency_s=loop.time() - started, detail=detail)


def create(name: str, config: OpenAIDeployment, context: BackendContext) -> OpenAIBackend:
    return OpenAIBackend(name, config, context)

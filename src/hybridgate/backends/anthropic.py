"""Adapter for the native Anthropic Messages API (or any server speaking it).

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``; one pooled keep-alive
session per deployment; every failure mapped to :mod:`hybridgate.errors`. A stream that ends
after its stop reason but without ``message_stop`` is finalised; one that ends before any stop
reason raises :class:`~hybridgate.errors.UpstreamConnectionError`, never a silent truncation.
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
from hybridgate.config.schema import AnthropicDeployment, effective_placement
from hybridgate.errors import BackendUnavailable, UnsupportedFeature, UpstreamConnectionError
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
        self.capabilities = Capabilities(
            placement=effective_placement(config),
            region=config.region,
            context_window=config.context_window,
            max_output_tokens=config.max_output_tokens,
            tools=config.tools,
            vision=config.vision,
            embeddings=False,
            response_format=False,  # the Messages API has no response_format; the codec drops it
            assistant_prefill=True,  # a trailing assistant turn is continued
        )
        self.stats = StreamStats()
        self._timeouts = Timeouts(**config.timeouts.model_dump())
        self._secret = config.api_key.get_secret_value() if config.api_key else ""
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "anthropic-version": config.anthropic_version,
            **config.headers,
        }
        if self._secret:
            headers["x-api-key"] = self._secret
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

    def _body(self, request: InferenceRequest, *, stream: bool) -> dict[str, Any]:
        return wire.render_messages_request(
            request, self.config.model, stream=stream, default_max_tokens=self.config.default_max_tokens
        )

    async def _post(self, body: dict[str, Any], deadline: Deadline) -> aiohttp.ClientResponse:
        """POST /v1/messages and wait for response headers (bounded by the first-token deadline)."""
        session = self._http()
        async with asyncio.timeout_at(deadline.first_token_at):
            response = await session.post(
                f"{self.config.base_url}/v1/messages", data=orjson.dumps(body), headers=self._headers
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
        body = self._body(request, stream=False)
        with mapped_errors(self.name):
            response = await self._post(body, deadline)
            try:
                async with asyncio.timeout_at(deadline.total_at):
                    payload = await response.read()
            finally:
                response.release()
            return wire.parse_message(orjson.loads(payload), self.name)

    async def stream(self, request: InferenceRequest, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        deadline = Deadline.start(timeouts)
        decoder = wire.EventDecoder(self.name)
        with mapped_errors(self.name, "stream"):
            response = await self._post(self._body(request, stream=True), deadline)
        first_seen = [False]
        try:
            with mapped_errors(self.name, "stream"):
                async for sse in iter_sse(response, deadline, first_seen):
                    if not sse.data:
                        continue
                    # A malformed event may have carried text: skipping it would truncate silently.
                    for event in decoder.feed(orjson.loads(sse.data)):
                        first_seen[0] = True
                        yield event
                    if decoder.stopped:
                        break
        finally:
            # Closing (not releasing) drops a half-read connection instead of returning it to the pool.
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
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            session = self._http()
            async with asyncio.timeout(self._timeouts.connect + 5.0):
                url = f"{self.config.base_url}/v1/models"
                async with session.get(url, headers=self._headers) as response:
                    await response.read()
                    ok = response.status == 200
                    detail = "" if ok else f"status {response.status}"
        except (TimeoutError, aiohttp.ClientError, OSError, BackendUnavailable) as exc:
            ok, detail = False, type(exc).__name__
        return ProbeResult(ok=ok, latency_s=loop.time() - started, detail=detail)


def create(name: str, config: AnthropicDeployment, context: BackendContext) -> AnthropicBackend:
    """Entry point registered as backend type ``anthropic``."""
    return AnthropicBackend(name, config, context)

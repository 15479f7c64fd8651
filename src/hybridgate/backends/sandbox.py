"""The ``sandbox`` backend type: a SANDBOX stand-in cloud, run as a child process.

``start()`` spawns ``python -m hybridgate.sandbox`` on a free loopback port, then every call goes
through the real HTTP adapter of the configured wire (``openai`` or ``anthropic``, loaded through
the backend registry like any other type), so the gateway exercises exactly the code a real
cloud deployment would. ``close()`` stops the adapter and reaps the child::

    deployments:
      sandbox-cloud:
        type: sandbox
        profile: cloud-typical      # or test-fast, cloud-heavy-tail, cloud-fast, instant, a YAML path
        model: sandbox-gpt
        region: us
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from hybridgate.backends.base import Backend, ProbeResult, capabilities_of
from hybridgate.backends.registry import BackendContext, backend_factory
from hybridgate.config.schema import (
    AnthropicDeployment,
    OpenAIDeployment,
    SandboxDeployment,
)
from hybridgate.errors import BackendUnavailable
from hybridgate.sandbox.process import SandboxProcess, SandboxStartError
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    StreamEvent,
    Timeouts,
)


class SandboxBackend:
    """One sandbox deployment: a child sandbox server plus the wire adapter that talks to it."""

    def __init__(self, name: str, config: SandboxDeployment, context: BackendContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self.capabilities = capabilities_of(config, embeddings=config.wire == "openai")
        self.process = SandboxProcess(
            config.profile, seed=config.seed, context_window=config.context_window, models=(config.model,)
        )
        self._adapter: Backend | None = None

    @property
    def sandbox_url(self) -> str:
        """Base URL of the running sandbox (its control API lives under ``/sandbox/``)."""
        return self.process.base_url

    def describe(self) -> dict[str, object]:
        """Live facts for /readyz: the sandbox's base URL (its control API: faults, stats, capture),
        pid and profile, so scripts can inject faults into the gateway's own sandbox."""
        running = self.process.running and self.process.port is not None
        return {
            "sandbox": True,
            "url": self.process.base_url if running else None,
            "pid": self.process.pid if running else None,
            "profile": self.config.profile,
        }

    def _upstream_config(self, base_url: str) -> OpenAIDeployment | AnthropicDeployment:
        c = self.config
        if c.wire == "anthropic":
            return AnthropicDeployment(
                type="anthropic",
                base_url=base_url,
                model=c.model,
                placement=c.placement,
                region=c.region,
                context_window=c.context_window,
                max_output_tokens=c.max_output_tokens,
                tools=c.tools,
                vision=c.vision,
                timeouts=c.timeouts,
            )
        return OpenAIDeployment(
            type="openai",
            base_url=f"{base_url}/v1",
            model=c.model,
            placement=c.placement,
            region=c.region,
            context_window=c.context_window,
            max_output_tokens=c.max_output_tokens,
            tools=c.tools,
            vision=c.vision,
            timeouts=c.timeouts,
            embeddings=True,
            assistant_prefill=c.assistant_prefill,
        )

    async def start(self) -> None:
        if self._adapter is not None:
            return
        try:
            await self.process.start()
        except SandboxStartError as exc:
            raise BackendUnavailable(
                f"{self.name}: sandbox did not start: {exc}", deployment=self.name
            ) from exc
        adapter = backend_factory(self.config.wire)(
            self.name, self._upstream_config(self.process.base_url), self.context
        )
        started = False
        try:
            await adapter.start()
            started = True
        finally:
            if not started:  # never leave the child behind
                await self.process.stop()
        self._adapter = adapter

    async def close(self) -> None:
        adapter, self._adapter = self._adapter, None
        try:
            if adapter is not None:
                await adapter.close()
        finally:
            await self.process.stop()

    def _started(self) -> Backend:
        if self._adapter is None:
            raise BackendUnavailable(f"{self.name}: backend not started", deployment=self.name)
        return self._adapter

    async def complete(self, request: InferenceRequest, timeouts: Timeouts) -> Completion:
        return await self._started().complete(request, timeouts)

    def stream(self, request: InferenceRequest, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        """The adapter's stream (raises :class:`BackendUnavailable` at once when not started)."""
        return self._started().stream(request, timeouts)

    async def embed(self, request: EmbeddingRequest, timeouts: Timeouts) -> EmbeddingResult:
        return await self._started().embed(request, timeouts)

    async def probe(self) -> ProbeResult:
        if self._adapter is None:
            return ProbeResult(ok=False, latency_s=0.0, detail="not started")
        if not self.process.running:
            return ProbeResult(ok=False, latency_s=0.0, detail="sandbox process exited")
        return await self._adapter.probe()


def create(name: str, config: SandboxDeployment, context: BackendContext) -> SandboxBackend:
    return SandboxBackend(name, config, context)

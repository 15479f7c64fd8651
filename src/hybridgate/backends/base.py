"""The one Backend protocol every adapter implements.

A backend is one *deployment*: a concrete model on a concrete runtime or provider (for example
``gpt-4o-mini`` at OpenAI, or ``tiny.gguf`` in the embedded llama.cpp worker). Adapters translate
the normalised :mod:`hybridgate.types` to their wire format and map every foreign exception into
:mod:`hybridgate.errors` before it leaves the adapter.

A minimal in-memory backend, e.g. for a test double, is a class with these methods::

    class Echo:
        name = "echo"
        capabilities = Capabilities(placement="local", region="local", context_window=4096)

        async def start(self) -> None: ...
        async def close(self) -> None: ...
        async def complete(self, request, timeouts): return Completion(id="1", model="echo", text="hi")
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from hybridgate.config.schema import AnyDeployment, effective_placement
from hybridgate.types import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    InferenceRequest,
    Placement,
    StreamEvent,
    Timeouts,
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a deployment can do and where it runs. The planner filters candidates on these."""

    placement: Placement
    region: str
    context_window: int
    max_output_tokens: int | None = None
    chat: bool = True
    streaming: bool = True
    tools: bool = True
    vision: bool = False
    embeddings: bool = False
    response_format: bool = True
    assistant_prefill: bool = False


def capabilities_of(config: AnyDeployment, **overrides: Any) -> Capabilities:
    """What a deployment's config says it can do; an adapter overrides what its runtime knows better."""
    base = Capabilities(
        placement=effective_placement(config),
        region=config.region,
        context_window=config.context_window,
        max_output_tokens=config.max_output_tokens,
        chat=getattr(config, "chat", True),
        tools=config.tools,
        vision=config.vision,
        embeddings=getattr(config, "embeddings", False),
        assistant_prefill=getattr(config, "assistant_prefill", False),
    )
    return replace(base, **overrides) if overrides else base


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of an active health probe."""

    ok: bool
    latency_s: float
    detail: str = ""


@runtime_checkable
class Backend(Protocol):
    """One deployment. Implementations must be safe for concurrent use from one event loop."""

    name: str
    capabilities: Capabilities

    async def start(self) -> None:
        """Acquire resources (connection pools, worker processes, loaded models)."""
        ...

    async def close(self) -> None:
        """Release everything ``start`` acquired. Idempotent."""
        ...

    async def complete(self, request: InferenceRequest, timeouts: Timeouts) -> Completion:
        """Run ``request`` to completion (``request.stream`` is ignored)."""
        ...

    def stream(self, request: InferenceRequest, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        """Yield text/tool-call deltas, then exactly one :class:`~hybridgate.types.StreamEnd`.

        Closing the iterator early (``aclose``) must cancel the upstream work promptly.
        """
        ...

    async def embed(self, request: EmbeddingRequest, timeouts: Timeouts) -> EmbeddingResult:
        """Embed ``request.inputs``; raises ``UnsupportedFeature`` when not capable."""
        ...

    async def probe(self) -> ProbeResult:
        """A cheap health check; never raises."""
        ...


@runtime_checkable
class Describable(Protocol):
    """Optional: a backend that reports live details of its runtime (shown in /readyz)."""

    def describe(self) -> Mapping[str, object]:
        """Small, JSON-serialisable facts: queue depth, cold-start time, restarts..."""
        ...

"""Value objects of the data plane: one normalised request, response and stream vocabulary.

Both wire formats (OpenAI chat completions, Anthropic messages) parse into these and render from
them, so any client format can be served by any backend. Objects are immutable where they cross
task boundaries (requests, tool calls); builders that accumulate (usage while streaming) are not.

Conventions:

- System prompts are ``Message(role="system")`` entries at the front of ``messages``.
- A tool result is ``Message(role="tool", tool_call_id=...)`` (OpenAI's shape); the Anthropic
  codec converts ``tool_result`` blocks to and from it.
- ``ToolCall.arguments`` is the JSON text of the arguments, exactly as produced by the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeAlias

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "content_filter", "error"]
Placement: TypeAlias = Literal["local", "cloud"]
WireFormat: TypeAlias = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image given by URL (``https:``/``data:``) or inline base64 with its media type."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    type: Literal["image"] = "image"


ContentPart: TypeAlias = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: tuple[ContentPart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False

    @property
    def text(self) -> str:
        """All text parts joined (images are skipped)."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @staticmethod
    def of_text(role: Role, text: str) -> Message:
        return Message(role=role, content=(TextPart(text),) if text else ())


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``mode`` is auto, none or required; ``name`` forces one tool (mode "required")."""

    mode: Literal["auto", "none", "required"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One chat request, whatever wire format it arrived in.

    ``extra`` holds parameters of the source format that have no normalised field (for example
    OpenAI's ``seed`` or ``logprobs``); adapters for the same format pass them through.
    """

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: Mapping[str, Any] | None = None
    user: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source_format: WireFormat = "openai"
    extra: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 50  # the workload class's; local runtimes serve higher first when queues form


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer. ``model`` is what the upstream reported."""

    id: str
    model: str
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    created: int = 0


# --------------------------------------------------------------------------- stream events


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of tool call ``index``: the first piece carries ``id`` and ``name``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last event of every successful stream. Usage is always filled."""

    finish_reason: FinishReason
    usage: Usage


StreamEvent: TypeAlias = TextDelta | ToolCallDelta | StreamEnd


# --------------------------------------------------------------------------- embeddings


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None
    user: str | None = None


@dataclass(slots=True)
class EmbeddingResult:
    model: str
    vectors: list[list[float]]
    usage: Usage = field(default_factory=Usage)


# --------------------------------------------------------------------------- timeouts


class Timeouts(NamedTuple):
    """Per-attempt deadlines in seconds. ``total`` bounds the whole attempt, streaming included."""

    connect: float = 5.0
    first_token: float = 30.0
    idle: float = 30.0
    total: float = 300.0

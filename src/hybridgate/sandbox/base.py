"""The SANDBOX's own vocabulary, shared by its two wire codecs and the server.

A codec (:mod:`~hybridgate.sandbox.openai_api`, :mod:`~hybridgate.sandbox.anthropic_api`) parses
a request body into a :class:`ChatJob`, and renders an :class:`Answer` or an
:class:`ErrorReply` the way that provider does. The server in between knows no wire format.

The sandbox deliberately does not reuse the gateway's own codecs (:mod:`hybridgate.wire`): it
stands in for the providers, so its bytes must come from an independent reading of their APIs,
or a mistake in the gateway's codec would be mirrored here and never seen by a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

Finish: TypeAlias = Literal["stop", "length", "tool_calls"]
ErrorKind: TypeAlias = Literal[
    "invalid_request", "rate_limit", "server_error", "overloaded", "context_length", "content_policy"
]


class BadRequest(ValueError):
    """The request body is unusable; answered with the provider's own 400 error."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChatJob:
    """One chat request as the sandbox needs it, whichever wire it came in."""

    model: str
    prompt_tokens: int
    max_tokens: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    tools: tuple[ToolSpec, ...]
    tool_choice: Literal["auto", "none", "required"]
    forced_tool: str | None
    fingerprint: bytes
    """What the answer is derived from (messages, system prompt, request seed): same prompt, same answer."""


@dataclass(frozen=True, slots=True)
class ToolCallOut:
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A synthetic answer: text tokens, or the argument pieces of one tool call."""

    pieces: tuple[str, ...]
    finish: Finish
    stop_sequence: str | None = None
    tool: ToolCallOut | None = None

    @property
    def text(self) -> str:
        return "" if self.tool is not None else "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces)


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error the sandbox answers with; each codec words it like its provider."""

    kind: ErrorKind
    status: int
    message: str | None = None
    param: str | None = None
    code: str | None = None
    retry_after_s: float | None = None
    tokens: int = 0
    limit: int = 0


@dataclass(frozen=True, slots=True)
class StreamScript:
    """The bytes of one streamed answer, in order, so the server can pace and break them."""

    preamble: bytes
    """Sent with the response headers before the first token; empty: headers go at the first token."""
    head: bytes
    tokens: tuple[bytes, ...]
    tail: bytes
    done: bytes
    """The closing sentinel (``[DONE]`` / ``message_stop``) that ``missing_done`` leaves out."""
    malformed: bytes


class Codec(Protocol):
    """One provider's wire format, as the sandbox speaks it."""

    endpoint: str

    def parse(self, body: Any) -> ChatJob:
        """Validate the minimum and normalise; raises :class:`BadRequest`."""
        ...

    def completion(self, job: ChatJob, answer: Answer, request_id: str) -> bytes:
        """The whole (non-streamed) response body."""
        ...

    def stream(self, job: ChatJob, answer: Answer, request_id: str) -> StreamScript: ...

    def error(self, reply: ErrorReply) -> tuple[int, bytes]:
        """The HTTP status (a provider may word ``reply.status`` its own way) and the error body."""
        ...


def reported_model(requested: str) -> str:
    """The model name the sandbox reports: always says 'sandbox', so it cannot pass for a real one."""
    return requested if "sandbox" in requested else f"sandbox/{requested}"

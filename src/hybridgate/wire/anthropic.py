"""The Anthropic Messages wire format, both directions.

Server side (a client called us): :func:`parse_messages_request`, :func:`render_message`,
:class:`EventEncoder`, :func:`render_error`.
Client side (we call an upstream): :func:`render_messages_request`, :func:`parse_message`,
:class:`EventDecoder`.

Translation rules (docs/wire-formats.md has the full table and what is lossy):

- Tool ids are preserved exactly in both directions (an OpenAI ``call_abc`` stays ``call_abc``).
- ``tool_result`` blocks become ``role="tool"`` messages, one per block, in order; rendering
  merges consecutive tool messages (and a following user message) into one user turn.
- System messages are lifted into the top-level ``system``; consecutive same-role turns merge.
- ``tool_use.input`` (an object) <-> ``ToolCall.arguments`` (JSON text); see :func:`tool_input`
  for arguments that are not a JSON object.
- Usage: ``prompt_tokens`` counts every input token (``input_tokens`` plus cache reads and
  writes); ``cached_prompt_tokens`` is ``cache_read_input_tokens``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hybridgate.errors import (
    HybridgateError,
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    scrub_secrets,
)
from hybridgate.types import (
    Completion,
    ContentPart,
    FinishReason,
    ImagePart,
    InferenceRequest,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from hybridgate.wire.common import validation_message

RAW_ARGUMENTS_KEY = "_raw_arguments"
"""Key under which tool-call arguments that are not a JSON object travel in ``tool_use.input``."""

# --------------------------------------------------------------------------- request schema


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _TextBlock(_Model):
    type: Literal["text"]
    text: str


class _Base64Source(_Model):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class _URLSource(_Model):
    type: Literal["url"]
    url: str = Field(min_length=1)


class _ImageBlock(_Model):
    type: Literal["image"]
    source: Annotated[_Base64Source | _URLSource, Field(discriminator="type")]


class _ToolUseBlock(_Model):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


_ResultPart = Annotated[_TextBlock | _ImageBlock, Field(discriminator="type")]


class _ToolResultBlock(_Model):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[_ResultPart] | None = None
    is_error: bool | None = None


class _ThinkingBlock(_Model):
    """Accepted in assistant turns and dropped: the normalised vocabulary has no thinking."""

    type: Literal["thinking", "redacted_thinking"]


_UserBlock = Annotated[_TextBlock | _ImageBlock | _ToolResultBlock, Field(discriminator="type")]
_AssistantBlock = Annotated[_TextBlock | _ToolUseBlock | _ThinkingBlock, Field(discriminator="type")]


class _UserMessage(_Model):
    role: Literal["user"]
    content: str | list[_UserBlock]


class _AssistantMessage(_Model):
    role: Literal["assistant"]
    content: str | list[_AssistantBlock]


_InputMessage = Annotated[_UserMessage | _AssistantMessage, Field(discriminator="role")]


class _ToolDef(_Model):
    type: Literal["custom"] | None = None
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")
    description: str | None = None
    input_schema: dict[str, Any]


class _ToolChoice(_Model):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, min_length=1)
    disable_parallel_tool_use: bool | None = None


class _Metadata(BaseModel):
    # Extra keys are kept: the gateway reads request context (tenant, class...) from metadata.
    model_config = ConfigDict(extra="allow")
    user_id: str | None = None


class MessagesRequestModel(BaseModel):
    """POST /v1/messages body (fields the gateway understands; others pass through)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[_InputMessage] = Field(min_length=1)
    system: str | list[_TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    stream: bool | None = False
    tools: list[_ToolDef] | None = None
    tool_choice: _ToolChoice | None = None
    metadata: _Metadata | None = None


_KNOWN = frozenset(MessagesRequestModel.model_fields)

# Parameters kept in ``extra`` but never forwarded: thinking blocks cannot be carried back through
# the normalised vocabulary, and with thinking on the API rejects tool-use turns that lack them.
_NOT_FORWARDED = frozenset({"thinking"})

# --------------------------------------------------------------------------- shared helpers


def message_id(upstream_id: str | None = None) -> str:
    """A ``msg_`` id: ``upstream_id`` when it is one, derived from it otherwise, else a fresh one."""
    if not upstream_id:
        return f"msg_{uuid.uuid4().hex[:24]}"
    return upstream_id if upstream_id.startswith("msg_") else f"msg_{upstream_id}"


def tool_input(arguments: str) -> dict[str, Any]:
    """The ``tool_use.input`` object for JSON-text ``arguments``.

    Empty text gives ``{}``, a JSON object gives itself. Anything else (invalid or truncated JSON,
    a JSON array or scalar) gives ``{"_raw_arguments": text}``: the API requires an object, and
    the text the model produced is kept rather than silently replaced by ``{}``.
    """
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {RAW_ARGUMENTS_KEY: arguments}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS_KEY: arguments}


def _finish_reason(stop_reason: Any) -> FinishReason:
    match stop_reason:
        case "max_tokens" | "model_context_window_exceeded":
            return "length"
        case "tool_use":
            return "tool_calls"
        case "refusal":
            return "content_filter"
        case _:  # end_turn, stop_sequence, pause_turn, and reasons added later
            return "stop"


def _stop_reason(reason: FinishReason, has_tool_calls: bool) -> str:
    # Anthropic clients run tools only on stop_reason "tool_use"; some OpenAI-compatible servers
    # say "stop" after a tool call, so the presence of tool calls decides.
    match reason:
        case "length":
            return "max_tokens"
        case "content_filter":
            return "refusal"
        case _:
            return "tool_use" if has_tool_calls else "end_turn"


def _usage_out(u: Usage) -> dict[str, int]:
    return {
        "input_tokens": max(0, u.prompt_tokens - u.cached_prompt_tokens),
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached_prompt_tokens,
    }


@dataclass(slots=True)
class _TokenCounts:
    """Anthropic usage counters; later reports (cumulative) overwrite the fields they carry."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def update(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            return
        for key in self.__slots__:
            value = raw.get(key)
            if isinstance(value, int):
                setattr(self, key, value)

    def usage(self) -> Usage:
        prompt = self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens
        return Usage(prompt, self.output_tokens, self.cache_read_input_tokens)


# --------------------------------------------------------------------------- server side


def _image(block: _ImageBlock) -> ImagePart:
    src = block.source
    if isinstance(src, _Base64Source):
        return ImagePart(data=src.data, media_type=src.media_type)
    return ImagePart(url=src.url)


def _result_content(content: str | list[_TextBlock | _ImageBlock] | None) -> tuple[ContentPart, ...]:
    """A tool_result's content: adjacent text blocks joined by newlines, images kept in place."""
    if content is None or isinstance(content, str):
        return (TextPart(content),) if content else ()
    parts: list[ContentPart] = []
    texts: list[str] = []
    for block in content:
        if isinstance(block, _TextBlock):
            texts.append(block.text)
            continue
        if texts:
            parts.append(TextPart("\n".join(texts)))
            texts = []
        parts.append(_image(block))
    if texts:
        parts.append(TextPart("\n".join(texts)))
    return tuple(parts)


def _user_messages(m: _UserMessage) -> list[Message]:
    """One user turn: each tool_result block becomes a tool message, the rest user messages, in order."""
    if isinstance(m.content, str):
        return [Message.of_text("user", m.content)]
    out: list[Message] = []
    pending: list[ContentPart] = []
    for block in m.content:
        if isinstance(block, _ToolResultBlock):
            if pending:
                out.append(Message(role="user", content=tuple(pending)))
                pending = []
            out.append(
                Message(
                    role="tool",
                    content=_result_content(block.content),
                    tool_call_id=block.tool_use_id,
                    is_error=bool(block.is_error),
                )
            )
        elif isinstance(block, _TextBlock):
            if block.text:
                pending.append(TextPart(block.text))
        else:
            pending.append(_image(block))
    if pending or not out:
        out.append(Message(role="user", content=tuple(pending)))
    return out


def _arguments_text(value: dict[str, Any], param: str) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise InvalidRequest(f"{param}: not representable as JSON ({exc})", param=param) from exc


def _assistant_message(m: _AssistantMessage, index: int) -> Message:
    if isinstance(m.content, str):
        return Message.of_text("assistant", m.content)
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(m.content):
        if isinstance(block, _TextBlock):
            if block.text:
                parts.append(TextPart(block.text))
        elif isinstance(block, _ToolUseBlock):
            arguments = _arguments_text(block.input, f"messages[{index}].content[{j}].input")
            calls.append(ToolCall(block.id, block.name, arguments))
    return Message(role="assistant", content=tuple(parts), tool_calls=tuple(calls))


def _system_message(system: str | list[_TextBlock] | None) -> Message | None:
    if isinstance(system, str):
        return Message.of_text("system", system) if system else None
    parts = tuple(TextPart(b.text) for b in system or () if b.text)
    return Message(role="system", content=parts) if parts else None


def _tool_choice(tc: _ToolChoice | None, tools: tuple[Tool, ...]) -> tuple[ToolChoice | None, bool | None]:
    """The normalised tool choice and ``parallel_tool_calls``."""
    if tc is None:
        return None, None
    parallel = None if tc.disable_parallel_tool_use is None else not tc.disable_parallel_tool_use
    match tc.type:
        case "auto":
            return ToolChoice(mode="auto"), parallel
        case "any":
            return ToolChoice(mode="required"), parallel
        case "none":
            return ToolChoice(mode="none"), parallel
    if tc.name is None:
        raise InvalidRequest("tool_choice.name: required when type is 'tool'", param="tool_choice.name")
    if tc.name not in {t.name for t in tools}:
        raise InvalidRequest(f"tool_choice names unknown tool {tc.name!r}", param="tool_choice.name")
    return ToolChoice(mode="required", name=tc.name), parallel


def parse_messages_request(body: Mapping[str, Any]) -> InferenceRequest:
    """Validate an Anthropic Messages body; raises :class:`InvalidRequest` naming the field.

    >>> body = {"model": "m", "max_tokens": 8, "system": "be brief"}
    >>> req = parse_messages_request({**body, "messages": [{"role": "user", "content": "hi"}]})
    >>> [m.role for m in req.messages]
    ['system', 'user']
    """
    try:
        m = MessagesRequestModel.model_validate(body)
    except ValidationError as exc:
        message, param = validation_message(exc, body)
        raise InvalidRequest(message, param=param) from exc
    messages: list[Message] = []
    system = _system_message(m.system)
    if system is not None:
        messages.append(system)
    for i, msg in enumerate(m.messages):
        if isinstance(msg, _UserMessage):
            messages.extend(_user_messages(msg))
        else:
            messages.append(_assistant_message(msg, i))
    tools = tuple(Tool(t.name, t.description, t.input_schema) for t in m.tools or ())
    choice, parallel = _tool_choice(m.tool_choice, tools)
    return InferenceRequest(
        model=m.model,
        messages=tuple(messages),
        max_tokens=m.max_tokens,
        temperature=m.temperature,
        top_p=m.top_p,
        stop=tuple(m.stop_sequences or ()),
        stream=bool(m.stream),
        include_usage=True,  # Anthropic streams always report usage
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        user=m.metadata.user_id if m.metadata else None,
        metadata=m.metadata.model_dump(exclude_none=True) if m.metadata else {},
        source_format="anthropic",
        extra={k: v for k, v in body.items() if k not in _KNOWN},
    )


def _tool_use_block(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments)}


def render_message(c: Completion, model: str) -> dict[str, Any]:
    """A ``message`` object for a client; ``model`` is the name the client asked for."""
    content: list[dict[str, Any]] = [{"type": "text", "text": c.text}] if c.text else []
    content.extend(_tool_use_block(t) for t in c.tool_calls)
    return {
        "id": message_id(c.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(c.finish_reason, bool(c.tool_calls)),
        "stop_sequence": None,
        "usage": _usage_out(c.usage),
    }


def render_error(err: HybridgateError) -> dict[str, Any]:
    """The Anthropic error body for ``err``."""
    return {"type": "error", "error": {"type": err.anthropic_type, "message": err.message}}


_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_TEXT_DELTA = b'{"type":"text_delta","text":'
_JSON_DELTA = b'{"type":"input_json_delta","partial_json":'
_TEXT_BLOCK: Literal["text"] = "text"  # the kind of an open text block; tool_use blocks: their tool index


def _sse(event: bytes, body: Mapping[str, Any]) -> bytes:
    return b"event: " + event + b"\ndata: " + orjson.dumps(body) + b"\n\n"


class EventEncoder:
    """Turns stream events into Anthropic SSE bytes.

    A run of text deltas is one ``text`` block; each tool call is one ``tool_use`` block. Blocks
    are opened and closed in order, numbered across both kinds, while a
    :class:`~hybridgate.types.ToolCallDelta` index counts tool calls only. Pieces of one tool
    call must arrive together: a piece for a tool call whose block is already closed cannot be
    expressed and raises :class:`UpstreamProtocolError` (the caller then ends with :meth:`error`).
    """

    def __init__(self, msg_id: str, model: str, *, input_tokens: int = 0) -> None:
        self.message_id = message_id(msg_id)
        self._message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        self._started = False
        self._blocks = 0  # blocks opened so far
        self._open: int | Literal["text"] | None = None  # kind of the open block
        self._delta_head = b""  # prebuilt start of every delta event of the open block
        self._tools_seen: set[int] = set()

    def start(self) -> bytes:
        """``message_start`` and a ``ping``; sent before the first token to flush headers early."""
        self._started = True
        return _sse(b"message_start", {"type": "message_start", "message": self._message}) + _PING

    def encode(self, event: StreamEvent) -> bytes:
        out = b"" if self._started else self.start()
        if isinstance(event, TextDelta):
            if not event.text:
                return out
            if self._open != _TEXT_BLOCK:
                out += self._open_block(_TEXT_BLOCK, {"type": "text", "text": ""}, _TEXT_DELTA)
            return out + self._delta_head + orjson.dumps(event.text) + b"}}\n\n"
        if isinstance(event, ToolCallDelta):
            if self._open != event.index:
                out += self._open_tool(event)
            if not event.arguments:
                return out
            return out + self._delta_head + orjson.dumps(event.arguments) + b"}}\n\n"
        return out + self._finish(event)

    def error(self, err: HybridgateError) -> bytes:
        """The explicit ``error`` event that ends a failed stream (no ``message_stop`` follows)."""
        return _sse(b"error", render_error(err))

    def _open_tool(self, event: ToolCallDelta) -> bytes:
        if event.index in self._tools_seen:
            raise UpstreamProtocolError(f"pieces of tool call {event.index} arrived after later content")
        if not event.name:
            raise UpstreamProtocolError(f"tool call {event.index} started without a name")
        self._tools_seen.add(event.index)
        call_id = event.id or f"toolu_{self.message_id.removeprefix('msg_')}_{event.index}"
        block = {"type": "tool_use", "id": call_id, "name": event.name, "input": {}}
        return self._open_block(event.index, block, _JSON_DELTA)

    def _open_block(
        self, kind: int | Literal["text"], content_block: dict[str, Any], delta_type: bytes
    ) -> bytes:
        out = self._close_block()
        index = self._blocks
        self._blocks += 1
        self._open = kind
        self._delta_head = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":' % index
            + delta_type
        )
        body = {"type": "content_block_start", "index": index, "content_block": content_block}
        return out + _sse(b"content_block_start", body)

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        index = self._blocks - 1
        return b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n' % index

    def _finish(self, end: StreamEnd) -> bytes:
        reason = _stop_reason(end.finish_reason, bool(self._tools_seen))
        delta = {"stop_reason": reason, "stop_sequence": None}
        body = {"type": "message_delta", "delta": delta, "usage": _usage_out(end.usage)}
        return self._close_block() + _sse(b"message_delta", body) + _MESSAGE_STOP


# --------------------------------------------------------------------------- client side


def _image_out(p: ImagePart) -> dict[str, Any]:
    if p.data is not None:
        source = {"type": "base64", "media_type": p.media_type or "image/png", "data": p.data}
    elif p.url is not None and p.url.startswith("data:") and ";base64," in p.url:
        media_type, data = p.url[5:].split(";base64,", 1)
        source = {"type": "base64", "media_type": media_type or "image/png", "data": data}
    else:
        source = {"type": "url", "url": p.url or ""}
    return {"type": "image", "source": source}


def _parts_out(parts: Iterable[ContentPart]) -> list[dict[str, Any]]:
    """Content blocks; empty text is dropped (the API rejects empty text blocks)."""
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            if p.text:
                out.append({"type": "text", "text": p.text})
        else:
            out.append(_image_out(p))
    return out


def _tool_result_out(m: Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
    if all(isinstance(p, TextPart) for p in m.content):
        if m.text:
            block["content"] = m.text
    else:
        block["content"] = _parts_out(m.content)
    if m.is_error:
        block["is_error"] = True
    return block


def _blocks_out(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [_tool_result_out(m)]
    blocks = _parts_out(m.content)
    if m.role == "assistant":
        blocks.extend(_tool_use_block(t) for t in m.tool_calls)
    return blocks


def _strip_final_prefill(turns: list[dict[str, Any]]) -> None:
    """The API rejects a final assistant turn ending in whitespace; strip it (and drop what empties)."""
    last = turns[-1]
    if last["role"] != "assistant" or last["content"][-1]["type"] != "text":
        return
    text = last["content"][-1]["text"].rstrip()
    if text:
        last["content"][-1] = {"type": "text", "text": text}
        return
    last["content"].pop()
    if not last["content"]:
        turns.pop()


def _turns_out(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Non-system messages as Anthropic turns: tool results ride in user turns, same roles merge."""
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks_out(m)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if turns:
        _strip_final_prefill(turns)
    return turns


def _system_out(messages: Iterable[Message]) -> str | list[dict[str, Any]] | None:
    """Every system message's text, wherever it stood, as the top-level ``system``."""
    system = (m for m in messages if m.role == "system")
    texts = [p.text for m in system for p in m.content if isinstance(p, TextPart) and p.text]
    if not texts:
        return None
    return texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]


def _tool_choice_out(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None:
        if parallel is not False:
            return None
        out: dict[str, Any] = {"type": "auto"}
    elif choice.name:
        out = {"type": "tool", "name": choice.name}
    else:
        out = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice.mode]}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def render_messages_request(
    req: InferenceRequest, upstream_model: str, *, stream: bool, default_max_tokens: int
) -> dict[str, Any]:
    """The body to POST to an Anthropic Messages upstream.

    Parameters that arrived in Anthropic format (``top_k``, ``service_tier``...) pass through;
    ``response_format`` and other-format extras are dropped; temperature is clamped to 1.
    """
    body: dict[str, Any] = {}
    if req.source_format == "anthropic":
        body.update((k, v) for k, v in req.extra.items() if k not in _NOT_FORWARDED)
    body["model"] = upstream_model
    body["max_tokens"] = req.max_tokens or default_max_tokens
    system = _system_out(req.messages)
    if system is not None:
        body["system"] = system
    body["messages"] = _turns_out(req.messages)
    if req.temperature is not None:
        body["temperature"] = min(req.temperature, 1.0)
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.tools:
        body["tools"] = [_tool_out(t) for t in req.tools]
        choice = _tool_choice_out(req.tool_choice, req.parallel_tool_calls)
        if choice is not None:
            body["tool_choice"] = choice
    if req.user is not None:
        body["metadata"] = {"user_id": req.user}
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body


def _tool_out(t: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name, "input_schema": dict(t.parameters) or {"type": "object"}}
    if t.description:
        out["description"] = t.description
    return out


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def parse_message(body: Any, deployment: str) -> Completion:
    """Read an upstream ``message``; raises :class:`UpstreamProtocolError` when malformed."""
    try:
        if body.get("type") == "error":
            raise _upstream_error(body.get("error"), deployment)
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in body["content"]:
            if block["type"] == "text":
                texts.append(_str(block["text"]))
            elif block["type"] == "tool_use":
                arguments = orjson.dumps(block.get("input") or {}).decode()
                calls.append(ToolCall(_str(block["id"]), _str(block["name"]), arguments))
        counts = _TokenCounts()
        counts.update(body.get("usage"))
        return Completion(
            id=str(body.get("id") or message_id()),
            model=str(body.get("model") or ""),
            text="".join(texts),
            tool_calls=tuple(calls),
            finish_reason=_finish_reason(body.get("stop_reason")),
            usage=counts.usage(),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise UpstreamProtocolError(f"malformed message from {deployment}", deployment=deployment) from exc


def _upstream_error(err: Any, deployment: str) -> UpstreamError:
    """An ``error`` the upstream reported inside a 200 response, mapped by its type."""
    kind = err.get("type") if isinstance(err, dict) else None
    detail = err.get("message") if isinstance(err, dict) else None
    text = f"{deployment}: upstream error in stream: {scrub_secrets(str(detail or kind or 'unknown'))}"
    match kind:
        case "overloaded_error" | "api_error":
            return UpstreamServerError(text, deployment=deployment)
        case "rate_limit_error":
            return UpstreamRateLimited(text, deployment=deployment)
        case "timeout_error":
            return UpstreamTimeout(text, deployment=deployment)
        case _:
            return UpstreamProtocolError(text, deployment=deployment)


class EventDecoder:
    """Reads upstream Messages stream events (parsed ``data`` objects) into normalised events.

    ``finish_reason`` is set once a ``message_delta`` carried a stop reason and ``stopped`` once
    ``message_stop`` arrived: a stream that ends before either is truncated. Tool-use blocks are
    numbered by tool call (as :class:`~hybridgate.types.ToolCallDelta` counts them), not by block.
    Unknown event and block types (thinking, server tools, types added later) are skipped.
    """

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        self.finish_reason: FinishReason | None = None
        self.stopped = False
        self._counts = _TokenCounts()
        self._tool_of_block: dict[int, int] = {}
        self._text_blocks: set[int] = set()

    def feed(self, event: Any) -> list[StreamEvent]:
        try:
            return self._feed(event)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise UpstreamProtocolError(
                f"{self.deployment}: malformed stream event", deployment=self.deployment
            ) from exc

    def end(self) -> StreamEnd:
        return StreamEnd(self.finish_reason or "stop", self._counts.usage())

    def _feed(self, event: Any) -> list[StreamEvent]:
        match event["type"]:
            case "message_start":
                self._counts.update(event["message"].get("usage"))
            case "content_block_start":
                return self._block_start(int(event["index"]), event["content_block"])
            case "content_block_delta":
                return self._block_delta(int(event["index"]), event["delta"])
            case "message_delta":
                reason = event["delta"].get("stop_reason")
                if reason is not None:
                    self.finish_reason = _finish_reason(reason)
                self._counts.update(event.get("usage"))
            case "message_stop":
                self.stopped = True
            case "error":
                raise _upstream_error(event.get("error"), self.deployment)
        return []

    def _block_start(self, index: int, block: Any) -> list[StreamEvent]:
        if block["type"] == "text":
            self._text_blocks.add(index)
            text = _str(block.get("text") or "")
            return [TextDelta(text)] if text else []
        if block["type"] != "tool_use":
            return []
        ordinal = len(self._tool_of_block)
        self._tool_of_block[index] = ordinal
        initial = block.get("input")
        arguments = orjson.dumps(initial).decode() if initial else ""
        return [ToolCallDelta(ordinal, id=_str(block["id"]), name=_str(block["name"]), arguments=arguments)]

    def _block_delta(self, index: int, delta: Any) -> list[StreamEvent]:
        kind = delta["type"]
        if kind == "text_delta":
            if index not in self._text_blocks:
                raise ValueError(f"text delta for block {index}, which is not an open text block")
            text = _str(delta["text"])
            return [TextDelta(text)] if text else []
        if kind == "input_json_delta":
            ordinal = self._tool_of_block.get(index)
            if ordinal is None:
                raise ValueError(f"input_json_delta for block {index}, which is not a tool_use block")
            partial = _str(delta["partial_json"])
            return [ToolCallDelta(ordinal, arguments=partial)] if partial else []
        return []

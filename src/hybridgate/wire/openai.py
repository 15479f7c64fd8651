"""The OpenAI chat-completions wire format, both directions.

Server side (a client called us): :func:`parse_chat_request`, :func:`render_completion`,
:class:`ChunkEncoder`, :func:`render_error`.
Client side (we call an upstream): :func:`render_chat_request`, :func:`parse_completion`,
:class:`ChunkDecoder`.

Validation uses pydantic models that mirror the public API reference; unknown top-level
parameters are kept in ``InferenceRequest.extra`` and passed through to OpenAI-compatible
upstreams unchanged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hybridgate.errors import HybridgateError, InvalidRequest, UnsupportedFeature, UpstreamProtocolError
from hybridgate.types import (
    Completion,
    ContentPart,
    EmbeddingRequest,
    EmbeddingResult,
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

# --------------------------------------------------------------------------- request schema


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _TextPart(_Model):
    type: Literal["text"]
    text: str


class _ImageURL(_Model):
    url: str = Field(min_length=1)
    detail: str | None = None


class _ImagePart(_Model):
    type: Literal["image_url"]
    image_url: _ImageURL


_UserPart = Annotated[_TextPart | _ImagePart, Field(discriminator="type")]


class _Function(_Model):
    name: str = Field(min_length=1)
    arguments: str


class _ToolCall(_Model):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: _Function


class _SystemMessage(_Model):
    role: Literal["system", "developer"]
    content: str | list[_TextPart]
    name: str | None = None


class _UserMessage(_Model):
    role: Literal["user"]
    content: str | list[_UserPart]
    name: str | None = None


class _AssistantMessage(_Model):
    role: Literal["assistant"]
    content: str | list[_TextPart] | None = None
    tool_calls: list[_ToolCall] | None = None
    name: str | None = None


class _ToolMessage(_Model):
    role: Literal["tool"]
    content: str | list[_TextPart]
    tool_call_id: str = Field(min_length=1)


_ChatMessage = Annotated[
    _SystemMessage | _UserMessage | _AssistantMessage | _ToolMessage, Field(discriminator="role")
]


class _FunctionDef(_Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _ToolDef(_Model):
    type: Literal["function"]
    function: _FunctionDef


class _NamedFunction(_Model):
    name: str


class _NamedToolChoice(_Model):
    type: Literal["function"]
    function: _NamedFunction


class _StreamOptions(_Model):
    include_usage: bool = False


class _ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]


class ChatRequestModel(BaseModel):
    """POST /v1/chat/completions body (fields the gateway understands; others pass through)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[_ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    tools: list[_ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | _NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: _ResponseFormat | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


class EmbeddingRequestModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str] = Field(...)
    dimensions: int | None = Field(None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


# --------------------------------------------------------------------------- server side


def _text_of(content: str | list[_TextPart] | None) -> tuple[ContentPart, ...]:
    if content is None:
        return ()
    if isinstance(content, str):
        return (TextPart(content),) if content else ()
    return tuple(TextPart(p.text) for p in content)


def _user_parts(content: str | list[_TextPart | _ImagePart]) -> tuple[ContentPart, ...]:
    if isinstance(content, str):
        return (TextPart(content),) if content else ()
    parts: list[ContentPart] = []
    for p in content:
        if isinstance(p, _TextPart):
            parts.append(TextPart(p.text))
        else:
            parts.append(_image_from_url(p.image_url.url))
    return tuple(parts)


def _image_from_url(url: str) -> ImagePart:
    if url.startswith("data:") and ";base64," in url:
        header, data = url[5:].split(";base64,", 1)
        return ImagePart(data=data, media_type=header or "image/png")
    return ImagePart(url=url)


def _message(m: _SystemMessage | _UserMessage | _AssistantMessage | _ToolMessage) -> Message:
    if isinstance(m, _SystemMessage):
        return Message(role="system", content=_text_of(m.content), name=m.name)
    if isinstance(m, _UserMessage):
        return Message(role="user", content=_user_parts(m.content), name=m.name)
    if isinstance(m, _AssistantMessage):
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
        return Message(role="assistant", content=_text_of(m.content), tool_calls=calls, name=m.name)
    return Message(role="tool", content=_text_of(m.content), tool_call_id=m.tool_call_id)


_KNOWN = frozenset(ChatRequestModel.model_fields)


def parse_chat_request(body: Mapping[str, Any]) -> InferenceRequest:
    """Validate an OpenAI chat request body; raises :class:`InvalidRequest` naming the field."""
    try:
        m = ChatRequestModel.model_validate(body)
    except ValidationError as exc:
        message, param = validation_message(exc, body)
        raise InvalidRequest(message, param=param) from exc
    if m.n not in (None, 1):
        raise UnsupportedFeature("only n=1 is supported", param="n")
    stop = (m.stop,) if isinstance(m.stop, str) else tuple(m.stop or ())
    if len(stop) > 4:
        raise InvalidRequest("'stop' accepts at most 4 sequences", param="stop")
    choice: ToolChoice | None = None
    if isinstance(m.tool_choice, str):
        choice = ToolChoice(mode=m.tool_choice)
    elif m.tool_choice is not None:
        choice = ToolChoice(mode="required", name=m.tool_choice.function.name)
    tools = tuple(
        Tool(
            t.function.name,
            t.function.description,
            t.function.parameters or {"type": "object", "properties": {}},
        )
        for t in m.tools or ()
    )
    if choice is not None and choice.name is not None and choice.name not in {t.name for t in tools}:
        raise InvalidRequest(f"tool_choice names unknown tool {choice.name!r}", param="tool_choice")
    extra = {k: v for k, v in body.items() if k not in _KNOWN}
    return InferenceRequest(
        model=m.model,
        messages=tuple(_message(x) for x in m.messages),
        max_tokens=m.max_completion_tokens or m.max_tokens,
        temperature=m.temperature,
        top_p=m.top_p,
        stop=stop,
        stream=bool(m.stream),
        include_usage=bool(m.stream_options and m.stream_options.include_usage),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=m.parallel_tool_calls,
        response_format=m.response_format.model_dump() if m.response_format else None,
        user=m.user,
        metadata=m.metadata or {},
        source_format="openai",
        extra=extra,
    )


def parse_embedding_request(body: Mapping[str, Any]) -> tuple[EmbeddingRequest, str]:
    """Validate an embeddings body; returns the request and the asked encoding format."""
    try:
        m = EmbeddingRequestModel.model_validate(body)
    except ValidationError as exc:
        message, param = validation_message(exc, body)
        raise InvalidRequest(message, param=param) from exc
    inputs = (m.input,) if isinstance(m.input, str) else tuple(m.input)
    if not inputs or any(not s for s in inputs):
        raise InvalidRequest("'input' must be a non-empty string or list of non-empty strings", param="input")
    return EmbeddingRequest(
        model=m.model, inputs=inputs, dimensions=m.dimensions, user=m.user
    ), m.encoding_format


def _message_dict(c: Completion) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": c.text if (c.text or not c.tool_calls) else None}
    if c.tool_calls:
        msg["tool_calls"] = [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in c.tool_calls
        ]
    return msg


def _usage_dict(u: Usage) -> dict[str, Any]:
    d: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }
    if u.cached_prompt_tokens:
        d["prompt_tokens_details"] = {"cached_tokens": u.cached_prompt_tokens}
    return d


def _finish(reason: FinishReason) -> str:
    return "stop" if reason == "error" else reason


def completion_id(upstream_id: str | None = None) -> str:
    """A ``chatcmpl-`` id: ``upstream_id`` when it is one, derived from it otherwise, else a fresh one."""
    if not upstream_id:
        return f"chatcmpl-{uuid.uuid4().hex[:24]}"
    return upstream_id if upstream_id.startswith("chatcmpl-") else f"chatcmpl-{upstream_id}"


def render_completion(c: Completion, model: str) -> dict[str, Any]:
    """A chat.completion object for a client; ``model`` is the name the client asked for."""
    return {
        "id": completion_id(c.id),
        "object": "chat.completion",
        "created": c.created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": _message_dict(c),
                "logprobs": None,
                "finish_reason": _finish(c.finish_reason),
            }
        ],
        "usage": _usage_dict(c.usage),
    }


def render_embeddings(result: EmbeddingResult, model: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(result.vectors)],
        "model": model,
        "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens},
    }


def render_error(err: HybridgateError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.openai_type, "param": err.param, "code": err.code}}


class ChunkEncoder:
    """Turns stream events into OpenAI SSE ``data:`` lines (bytes), ending with ``[DONE]``."""

    def __init__(
        self, completion_id: str, model: str, *, include_usage: bool, created: int | None = None
    ) -> None:
        self.include_usage = include_usage
        created = created or int(time.time())
        # Every chunk shares this prefix; building it once keeps per-token cost to one dumps().
        self._head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._started = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            **self._head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def start(self) -> bytes:
        self._started = True
        return self._chunk({"role": "assistant", "content": ""})

    def encode(self, event: StreamEvent) -> bytes:
        out = b"" if self._started else self.start()
        if isinstance(event, TextDelta):
            return out + self._chunk({"content": event.text})
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
            fn: dict[str, Any] = {"arguments": event.arguments}
            if event.name is not None:
                fn["name"] = event.name
            call["function"] = fn
            return out + self._chunk({"tool_calls": [call]})
        out += self._chunk({}, _finish(event.finish_reason))
        if self.include_usage:
            body = {**self._head, "choices": [], "usage": _usage_dict(event.usage)}
            out += b"data: " + orjson.dumps(body) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def error(self, err: HybridgateError) -> bytes:
        """The explicit error event that ends a failed stream (no ``[DONE]`` follows)."""
        return b"data: " + orjson.dumps(render_error(err)) + b"\n\n"


# --------------------------------------------------------------------------- client side


def _content_out(parts: tuple[ContentPart, ...]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, TextPart))
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            out.append({"type": "text", "text": p.text})
        else:
            url = p.url if p.url is not None else f"data:{p.media_type or 'image/png'};base64,{p.data}"
            out.append({"type": "image_url", "image_url": {"url": url}})
    return out


def _message_out(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role}
    if m.role == "assistant":
        # "" rather than null when there is no text: the API accepts both, and several
        # OpenAI-compatible servers (llama-cpp-python's among them) reject null.
        d["content"] = _content_out(m.content) if m.content else ("" if m.tool_calls else None)
        if m.tool_calls:
            d["tool_calls"] = [
                {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
                for t in m.tool_calls
            ]
    else:
        d["content"] = _content_out(m.content)
    if m.role == "tool":
        d["tool_call_id"] = m.tool_call_id
    if m.name is not None and m.role in ("system", "user", "assistant"):
        d["name"] = m.name
    return d


def render_chat_request(req: InferenceRequest, upstream_model: str, *, stream: bool) -> dict[str, Any]:
    """The body to POST to an OpenAI-compatible upstream."""
    body: dict[str, Any] = dict(req.extra) if req.source_format == "openai" else {}
    body["model"] = upstream_model
    body["messages"] = [_message_out(m) for m in req.messages]
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop"] = list(req.stop)
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description or "",
                    "parameters": dict(t.parameters),
                },
            }
            for t in req.tools
        ]
    if req.tool_choice is not None:
        tc = req.tool_choice
        body["tool_choice"] = {"type": "function", "function": {"name": tc.name}} if tc.name else tc.mode
    if req.parallel_tool_calls is not None and req.tools:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.response_format is not None:
        body["response_format"] = dict(req.response_format)
    if req.user is not None:
        body["user"] = req.user
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


_FINISH: dict[str | None, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    None: "stop",
}


def parse_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_prompt_tokens=int(cached or 0),
    )


def parse_completion(body: Any, deployment: str) -> Completion:
    """Read an upstream chat.completion; raises :class:`UpstreamProtocolError` when malformed."""
    try:
        choice = body["choices"][0]
        msg = choice["message"]
        content = msg.get("content")
        if isinstance(content, list):  # some servers return parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        calls = tuple(
            ToolCall(str(t["id"]), str(t["function"]["name"]), str(t["function"].get("arguments") or ""))
            for t in msg.get("tool_calls") or ()
        )
        return Completion(
            id=str(body.get("id") or "chatcmpl-unknown"),
            model=str(body.get("model") or ""),
            text=content or "",
            tool_calls=calls,
            finish_reason=_FINISH.get(choice.get("finish_reason"), "stop"),
            usage=parse_usage(body.get("usage")),
            created=int(body.get("created") or 0),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise UpstreamProtocolError(
            f"malformed chat completion from {deployment}", deployment=deployment
        ) from exc


class ChunkDecoder:
    """Reads upstream ``chat.completion.chunk`` objects into normalised stream events."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None
        self.completion_tokens_seen = 0

    def feed(self, chunk: Any) -> list[StreamEvent]:
        """Events of one chunk; an error chunk or a malformed one raises :class:`UpstreamProtocolError`."""
        try:
            return self._feed(chunk)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise UpstreamProtocolError("malformed stream chunk", deployment=self.deployment) from exc

    def _feed(self, chunk: Any) -> list[StreamEvent]:
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError("stream chunk is not an object", deployment=self.deployment)
        if "error" in chunk:
            err = chunk["error"]
            message = err.get("message", "upstream stream error") if isinstance(err, dict) else str(err)
            raise UpstreamProtocolError(f"upstream error in stream: {message}", deployment=self.deployment)
        if chunk.get("usage"):
            self.usage = parse_usage(chunk["usage"])
        events: list[StreamEvent] = []
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise UpstreamProtocolError("stream chunk has no choices", deployment=self.deployment)
        for choice in choices:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self.completion_tokens_seen += 1
                events.append(TextDelta(text))
            for tc in delta.get("tool_calls") or ():
                fn = tc.get("function") or {}
                events.append(
                    ToolCallDelta(
                        index=int(tc.get("index", 0)),
                        id=tc.get("id"),
                        name=fn.get("name"),
                        arguments=fn.get("arguments") or "",
                    )
                )
            if choice.get("finish_reason"):
                self.finish_reason = _FINISH.get(choice["finish_reason"], "stop")
        return events

    def end(self) -> StreamEnd:
        usage = self.usage or Usage(completion_tokens=self.completion_tokens_seen)
        return StreamEnd(self.finish_reason or "stop", usage)


def parse_embeddings(body: Any, deployment: str) -> EmbeddingResult:
    try:
        data = sorted(body["data"], key=lambda d: d.get("index", 0))
        vectors = [[float(x) for x in d["embedding"]] for d in data]
        return EmbeddingResult(
            model=str(body.get("model") or ""), vectors=vectors, usage=parse_usage(body.get("usage"))
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamProtocolError(f"malformed embeddings from {deployment}", deployment=deployment) from exc

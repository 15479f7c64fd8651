"""The Anthropic Messages format as the SANDBOX speaks it: messages, the SSE event stream, errors.

A stream is ``message_start`` and ``ping`` (sent with the headers, before the first token, as
Anthropic does), then ``content_block_start``, one ``content_block_delta`` per token,
``content_block_stop``, ``message_delta`` with the stop reason and usage, and ``message_stop``.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from hybridgate.sandbox.base import (
    Answer,
    BadRequest,
    ChatJob,
    ErrorReply,
    StreamScript,
    ToolSpec,
    reported_model,
)
from hybridgate.sandbox.synth import estimate_tokens, text_chars

_LABEL = " (hybridgate sandbox)"
_STOP_REASON = {"stop": b"end_turn", "length": b"max_tokens", "tool_calls": b"tool_use"}


def _event(name: bytes, data: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


def _tools(
    body: dict[str, Any],
) -> tuple[tuple[ToolSpec, ...], Literal["auto", "none", "required"], str | None]:
    raw = body.get("tools") or []
    if not isinstance(raw, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) for t in raw
    ):
        raise BadRequest("tools: each tool needs a name")
    tools = tuple(
        ToolSpec(t["name"], t["input_schema"] if isinstance(t.get("input_schema"), dict) else {}) for t in raw
    )
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else None
    if choice is None or kind == "auto":
        return tools, "auto", None
    if kind == "none":
        return tools, "none", None
    if kind == "any":
        return tools, "required", None
    if kind == "tool" and isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return tools, "required", choice["name"]
    raise BadRequest("tool_choice: expected type auto, any, tool or none")


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise BadRequest("stop_sequences: Input should be a valid list of strings")


class AnthropicCodec:
    """``POST /v1/messages`` in Anthropic's format."""

    endpoint = "messages"

    def parse(self, body: Any) -> ChatJob:
        if not isinstance(body, dict):
            raise BadRequest("Input should be a valid dictionary")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required")
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise BadRequest("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadRequest("max_tokens: Input should be greater than or equal to 1")
        messages = body.get("messages")
        if messages is None:
            raise BadRequest("messages: Field required")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: at least one message is required")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or "content" not in m:
                raise BadRequest(f"messages.{i}: each message needs a role (user or assistant) and content")
        system = body.get("system")
        tools, tool_choice, forced = _tools(body)
        chars = text_chars(system) + text_chars(messages) + text_chars(body.get("tools"))
        return ChatJob(
            model=model,
            prompt_tokens=estimate_tokens(chars) + 3 * len(messages) + 3,
            max_tokens=max_tokens,
            stop=_stop_sequences(body.get("stop_sequences")),
            stream=body.get("stream") is True,
            include_usage=True,
            tools=tools,
            tool_choice=tool_choice,
            forced_tool=forced,
            fingerprint=orjson.dumps([model, system, messages]),
        )

    def _content_block(self, answer: Answer, request_id: str, *, streamed: bool) -> dict[str, Any]:
        if answer.tool is None:
            return {"type": "text", "text": "" if streamed else answer.text}
        tool_input: Any = {}
        if not streamed and answer.finish == "tool_calls":
            tool_input = orjson.loads(answer.tool.arguments)
        return {
            "type": "tool_use",
            "id": f"toolu_{request_id}",
            "name": answer.tool.name,
            "input": tool_input,
        }

    @staticmethod
    def _stop(answer: Answer) -> tuple[bytes, bytes]:
        if answer.stop_sequence is not None:
            return b"stop_sequence", orjson.dumps(answer.stop_sequence)
        return _STOP_REASON[answer.finish], b"null"

    def _message(
        self, job: ChatJob, request_id: str, content: list[Any], output_tokens: int
    ) -> dict[str, Any]:
        return {
            "id": f"msg_{request_id}",
            "type": "message",
            "role": "assistant",
            "model": reported_model(job.model),
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": job.prompt_tokens, "output_tokens": output_tokens},
        }

    def completion(self, job: ChatJob, answer: Answer, request_id: str) -> bytes:
        message = self._message(
            job,
            request_id,
            [self._content_block(answer, request_id, streamed=False)],
            answer.completion_tokens,
        )
        reason, sequence = self._stop(answer)
        message["stop_reason"] = reason.decode()
        message["stop_sequence"] = orjson.loads(sequence)
        return orjson.dumps(message)

    def stream(self, job: ChatJob, answer: Answer, request_id: str) -> StreamScript:
        start = {"type": "message_start", "message": self._message(job, request_id, [], 1)}
        preamble = _event(b"message_start", orjson.dumps(start)) + _event(b"ping", b'{"type":"ping"}')
        block = self._content_block(answer, request_id, streamed=True)
        head = _event(
            b"content_block_start",
            orjson.dumps({"type": "content_block_start", "index": 0, "content_block": block}),
        )
        prefix = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        if answer.tool is None:
            tokens = tuple(
                prefix + b'{"type":"text_delta","text":' + orjson.dumps(p) + b"}}\n\n" for p in answer.pieces
            )
        else:
            tokens = tuple(
                prefix + b'{"type":"input_json_delta","partial_json":' + orjson.dumps(p) + b"}}\n\n"
                for p in answer.pieces
            )
        reason, sequence = self._stop(answer)
        tail = _event(b"content_block_stop", b'{"type":"content_block_stop","index":0}') + _event(
            b"message_delta",
            b'{"type":"message_delta","delta":{"stop_reason":"'
            + reason
            + b'","stop_sequence":'
            + sequence
            + b'},"usage":{"output_tokens":'
            + str(answer.completion_tokens).encode()
            + b"}}",
        )
        done = _event(b"message_stop", b'{"type":"message_stop"}')
        malformed = prefix + b'{"type":"text_delta","text":"\\u00e\n\n'
        return StreamScript(preamble, head, tokens, tail, done, malformed)

    def error(self, reply: ErrorReply) -> tuple[int, bytes]:
        status, kind = reply.status, reply.kind
        etype = "invalid_request_error"
        if kind == "invalid_request":
            message = reply.message or "Invalid request."
        elif kind == "rate_limit":
            etype = "rate_limit_error"
            message = "Number of requests has exceeded your per-minute rate limit." + _LABEL
        elif kind == "context_length":
            message = f"prompt is too long: {reply.tokens} tokens > {reply.limit} maximum"
        elif kind == "content_policy":
            message = "Output blocked by content filtering policy" + _LABEL
        elif kind == "overloaded" or status == 529:
            status, etype, message = 529, "overloaded_error", "Overloaded" + _LABEL
        else:
            etype, message = "api_error", "Internal server error" + _LABEL
        return status, orjson.dumps({"type": "error", "error": {"type": etype, "message": message}})

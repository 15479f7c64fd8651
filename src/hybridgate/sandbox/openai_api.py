"""The OpenAI wire format as the SANDBOX speaks it: chat completions, SSE chunks, embeddings, errors.

Shapes follow the public API reference (``chat.completion``, ``chat.completion.chunk`` with
``stream_options.include_usage``, ``data: [DONE]``, the ``{"error": {...}}`` body and its codes).
Stream chunks are assembled from prebuilt byte prefixes: one ``orjson.dumps`` per token.
"""

from __future__ import annotations

import base64
import time
from array import array
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

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_LABEL = " (hybridgate sandbox)"
_FINGERPRINT = b'"system_fingerprint":"fp_sandbox"'


def _int_param(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"Invalid '{name}': expected an integer of at least 1.", name, "invalid_value")
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise BadRequest(
        "Invalid 'stop': expected a string or an array of up to 4 strings.", "stop", "invalid_value"
    )


def _tools(
    body: dict[str, Any],
) -> tuple[tuple[ToolSpec, ...], Literal["auto", "none", "required"], str | None]:
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise BadRequest("Invalid 'tools': expected an array.", "tools", "invalid_type")
    tools: list[ToolSpec] = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest(
                f"Missing required parameter: 'tools[{i}].function.name'.", f"tools[{i}].function"
            )
        params = fn.get("parameters")
        tools.append(ToolSpec(fn["name"], params if isinstance(params, dict) else {}))
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none", "required"):
        return tuple(tools), choice or "auto", None
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return tuple(tools), "required", choice["function"]["name"]
    raise BadRequest("Invalid value for 'tool_choice'.", "tool_choice", "invalid_value")


class OpenAICodec:
    """``POST /v1/chat/completions`` in OpenAI's format."""

    endpoint = "chat.completions"

    def parse(self, body: Any) -> ChatJob:
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter")
        messages = body.get("messages")
        if messages is None:
            raise BadRequest(
                "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
            )
        if not isinstance(messages, list) or not messages:
            raise BadRequest("Invalid 'messages': expected a non-empty array.", "messages", "invalid_value")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                raise BadRequest(
                    f"Invalid value for 'messages[{i}].role'.", f"messages[{i}].role", "invalid_value"
                )
        max_tokens = _int_param(body, "max_completion_tokens") or _int_param(body, "max_tokens")
        options = body.get("stream_options")
        tools, tool_choice, forced = _tools(body)
        chars = text_chars(messages) + text_chars(body.get("tools"))
        return ChatJob(
            model=model,
            prompt_tokens=estimate_tokens(chars) + 3 * len(messages) + 3,
            max_tokens=max_tokens,
            stop=_stop(body.get("stop")),
            stream=body.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            tools=tools,
            tool_choice=tool_choice,
            forced_tool=forced,
            fingerprint=orjson.dumps([model, messages, body.get("seed")]),
        )

    def completion(self, job: ChatJob, answer: Answer, request_id: str) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
        if answer.tool is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": f"call_{request_id}",
                    "type": "function",
                    "function": {"name": answer.tool.name, "arguments": answer.tool.arguments},
                }
            ]
        return orjson.dumps(
            {
                "id": f"chatcmpl-{request_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": reported_model(job.model),
                "system_fingerprint": "fp_sandbox",
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish}
                ],
                "usage": _usage(job, answer),
            }
        )

    def stream(self, job: ChatJob, answer: Answer, request_id: str) -> StreamScript:
        head_fields = (
            b'{"id":"chatcmpl-'
            + request_id.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(int(time.time())).encode()
            + b',"model":'
            + orjson.dumps(reported_model(job.model))
            + b","
            + _FINGERPRINT
        )
        prefix = b"data: " + head_fields + b',"choices":[{"index":0,"delta":'
        suffix = b',"logprobs":null,"finish_reason":null}]}\n\n'
        if answer.tool is None:
            head = prefix + b'{"role":"assistant","content":"","refusal":null}' + suffix
            tokens = tuple(prefix + b'{"content":' + orjson.dumps(p) + b"}" + suffix for p in answer.pieces)
        else:
            call = {
                "index": 0,
                "id": f"call_{request_id}",
                "type": "function",
                "function": {"name": answer.tool.name, "arguments": ""},
            }
            head = (
                prefix + orjson.dumps({"role": "assistant", "content": None, "tool_calls": [call]}) + suffix
            )
            tokens = tuple(
                prefix
                + b'{"tool_calls":[{"index":0,"function":{"arguments":'
                + orjson.dumps(p)
                + b"}}]}"
                + suffix
                for p in answer.pieces
            )
        tail = prefix + b'{},"logprobs":null,"finish_reason":"' + answer.finish.encode() + b'"}]}\n\n'
        if job.include_usage:
            tail += (
                b"data: "
                + head_fields
                + b',"choices":[],"usage":'
                + orjson.dumps(_usage(job, answer))
                + b"}\n\n"
            )
        malformed = prefix + b'{"content":"\\u00e\n\n'
        return StreamScript(b"", head, tokens, tail, b"data: [DONE]\n\n", malformed)

    def error(self, reply: ErrorReply) -> tuple[int, bytes]:
        status, kind = reply.status, reply.kind
        etype, code, param = "invalid_request_error", reply.code, reply.param
        if kind == "invalid_request":
            message = reply.message or "Invalid request."
        elif kind == "rate_limit":
            etype, code = "requests", "rate_limit_exceeded"
            message = (
                "Rate limit reached for requests per min (RPM): Limit 60, Used 60, Requested 1." + _LABEL
            )
        elif kind == "context_length":
            param, code = "messages", "context_length_exceeded"
            message = (
                f"This model's maximum context length is {reply.limit} tokens. However, your messages "
                f"resulted in {reply.tokens} tokens. Please reduce the length of the messages."
            )
        elif kind == "content_policy":
            code = "content_policy_violation"
            message = (
                "Your request was rejected as a result of our safety system. Your prompt may contain "
                "text that is not allowed by our safety system." + _LABEL
            )
        else:  # server_error, overloaded
            etype = "server_error"
            if kind == "overloaded" or status == 503:
                status = 503
                message = "The engine is currently overloaded, please try again later." + _LABEL
            else:
                message = "The server had an error while processing your request. Sorry about that!" + _LABEL
        return status, orjson.dumps(
            {"error": {"message": message, "type": etype, "param": param, "code": code}}
        )


def _usage(job: ChatJob, answer: Answer) -> dict[str, int]:
    n = answer.completion_tokens
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": n, "total_tokens": job.prompt_tokens + n}


def parse_embeddings(body: Any) -> tuple[str, list[str], int | None, bool]:
    """(model, inputs, dimensions, as_base64) of a ``POST /v1/embeddings`` body."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter")
    raw = body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise BadRequest("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    texts: list[str] = []
    for item in raw:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and all(isinstance(t, int) for t in item):
            texts.append(" ".join(map(str, item)))  # token ids: embedded as their text
        else:
            raise BadRequest(
                "Invalid 'input': expected strings or arrays of token ids.", "input", "invalid_value"
            )
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 8192):
        raise BadRequest(
            "Invalid 'dimensions': expected an integer from 1 to 8192.", "dimensions", "invalid_value"
        )
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise BadRequest("Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format")
    return model, texts, dims, fmt == "base64"


def render_embeddings(model: str, vectors: list[list[float]], as_base64: bool, prompt_tokens: int) -> bytes:
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(array("f", v).tobytes()).decode() if as_base64 else v,
        }
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return orjson.dumps({"object": "list", "data": data, "model": reported_model(model), "usage": usage})

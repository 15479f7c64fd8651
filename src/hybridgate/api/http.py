"""Request reading and response writing shared by every endpoint."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from hybridgate.api.asgi import JSONResponse, Request
from hybridgate.errors import AuthenticationFailed, HybridgateError, InvalidRequest
from hybridgate.types import WireFormat
from hybridgate.wire import anthropic as anthropic_wire
from hybridgate.wire import openai as openai_wire


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, or a 400/413 naming what is wrong with it."""
    body = await request.body(max_bytes)
    if not body.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if isinstance(exc.__cause__, UnicodeDecodeError) or "utf-8" in str(exc).lower():
            raise InvalidRequest("request body is not valid UTF-8") from None
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data


def error_response(
    err: HybridgateError, fmt: WireFormat, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``err`` in the client's own wire format, with its status (and Retry-After when known)."""
    body = anthropic_wire.render_error(err) if fmt == "anthropic" else openai_wire.render_error(err)
    out = dict(headers or {})
    if err.retry_after is not None:
        out["retry-after"] = str(max(1, math.ceil(err.retry_after)))
    return JSONResponse(body, status=err.status, headers=out)


class Authenticator:
    """Static client keys from config; comparisons in constant time on digests."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, request: Request) -> None:
        if not self._digests:
            return
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        if not token:
            raise AuthenticationFailed(
                "missing API key (send 'Authorization: Bearer KEY' or 'x-api-key: KEY')"
            )
        digest = hashlib.sha256(token.encode()).digest()
        matched = False
        for known in self._digests:  # every key is compared: timing does not tell which matched
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise AuthenticationFailed("invalid API key")

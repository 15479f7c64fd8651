"""Request reading and response writing shared by every endpoint."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydantic import SecretStr

from hybridgate.api.asgi import JSONResponse, Request
from hybridgate.config.schema import ClientKey
from hybridgate.errors import AuthenticationFailed, HybridgateError, InvalidRequest
from hybridgate.policy.context import ANONYMOUS, ClientIdentity
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
    """Client keys from config, each with its identity; comparisons in constant time on digests."""

    def __init__(self, keys: Iterable[SecretStr | ClientKey]) -> None:
        self._keys: list[tuple[bytes, ClientIdentity]] = []
        self._verified: dict[str, ClientIdentity] = {}
        for entry in keys:
            secret = (
                entry.get_secret_value() if isinstance(entry, SecretStr) else entry.key.get_secret_value()
            )
            if not secret:
                continue
            digest = hashlib.sha256(secret.encode()).digest()
            self._keys.append((digest, _identity(entry, digest)))

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, request: Request) -> ClientIdentity:
        """The identity of the request's key (anonymous when auth is off); 401 otherwise."""
        if not self._keys:
            return ANONYMOUS
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        if not token:
            raise AuthenticationFailed(
                "missing API key (send 'Authorization: Bearer KEY' or 'x-api-key: KEY')"
            )
        found = self._verified.get(token)
        if found is not None:
            return found
        digest = hashlib.sha256(token.encode()).digest()
        for known, identity in self._keys:  # every key is compared: timing does not tell which matched
            if hmac.compare_digest(digest, known):
                found = identity
        if found is None:
            raise AuthenticationFailed("invalid API key")
        # Only valid keys are remembered, so the map is bounded by the configured keys.
        self._verified[token] = found
        return found


def _identity(entry: SecretStr | ClientKey, digest: bytes) -> ClientIdentity:
    key_id = "key-" + digest.hex()[:12]
    if isinstance(entry, SecretStr):
        return ClientIdentity(key_id=key_id)
    return ClientIdentity(
        key_id=key_id,
        tenant=entry.tenant,
        default_class=entry.default_class,
        classes=frozenset(entry.classes) if entry.classes is not None else None,
        region=entry.region,
        sensitivity=entry.sensitivity,
        models=frozenset(entry.models) if entry.models is not None else None,
        rpm=entry.rpm,
        tpm=entry.tpm,
        scopes=frozenset(entry.scopes) if entry.scopes is not None else frozenset({"use", "read", "admin"}),
    )

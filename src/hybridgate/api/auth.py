"""Client authentication: config keys and store keys, scopes, and explicit "auth off".

Store keys (``hg_<id>_<secret>``) are looked up by id on the store's thread and cached for
``tenancy.key_cache_ttl_s`` on the injected clock; a key revoked through this process (admin API)
is forgotten at once, one revoked elsewhere (CLI) within the TTL. Any other token is checked
against the config's keys. Errors never contain the presented token.
"""

from __future__ import annotations

from typing import Literal

from hybridgate.api.asgi import Request
from hybridgate.api.http import Authenticator
from hybridgate.clock import Clock
from hybridgate.errors import AuthenticationFailed, PermissionDenied
from hybridgate.policy.context import ANONYMOUS, ClientIdentity
from hybridgate.tenancy.keys import KeyRecord, parse_key, secret_matches
from hybridgate.tenancy.store import AsyncStore

Mode = Literal["keys", "disabled", "implicit-off"]
_MAX_CACHED = 10_000


def presented_token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "").strip()


class ClientAuth:
    """Who a request is, and whether its key has the scope a route needs."""

    def __init__(
        self,
        config_keys: Authenticator,
        store: AsyncStore | None,
        clock: Clock,
        *,
        cache_ttl_s: float,
        disabled: bool,
    ) -> None:
        self.config_keys = config_keys
        self.store = store
        self.clock = clock
        self.cache_ttl_s = cache_ttl_s
        if disabled:
            self.mode: Mode = "disabled"
        elif config_keys.enabled or store is not None:
            self.mode = "keys"
        else:
            self.mode = "implicit-off"
        self._cache: dict[str, tuple[KeyRecord | None, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.mode == "keys"

    def status(self) -> dict[str, object]:
        """For /readyz: on, or off with the warning people must see."""
        if self.enabled:
            return {"enabled": True, "store": self.store is not None}
        why = "server.auth.disabled is true" if self.mode == "disabled" else "no client keys and no key store"
        return {"enabled": False, "warning": f"client authentication is OFF ({why}): local development only"}

    def forget(self, key_id: str) -> None:
        """Drop a cached lookup (the key was revoked or changed in this process)."""
        self._cache.pop(key_id, None)

    async def authenticate(self, request: Request, scope: str) -> ClientIdentity:
        identity = ANONYMOUS if not self.enabled else await self._identity(request)
        if scope not in identity.scopes:
            raise PermissionDenied(f"this API key lacks the {scope!r} scope")
        return identity

    async def _identity(self, request: Request) -> ClientIdentity:
        token = presented_token(request)
        if not token:
            raise AuthenticationFailed(
                "missing API key (send 'Authorization: Bearer KEY' or 'x-api-key: KEY')"
            )
        parsed = parse_key(token) if self.store is not None else None
        if parsed is None:
            if not self.config_keys.enabled:
                raise AuthenticationFailed("invalid API key")
            return self.config_keys.check(request)
        key_id, secret = parsed
        record = await self._lookup(key_id)
        if record is None or not secret_matches(secret, record.secret_sha256):
            raise AuthenticationFailed("invalid API key")
        if record.revoked:
            raise AuthenticationFailed(f"API key hg_{key_id} has been revoked")
        return record.identity()

    async def _lookup(self, key_id: str) -> KeyRecord | None:
        now = self.clock.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        assert self.store is not None
        record = await self.store.call(self.store.sync.key, key_id)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()  # ids come from requests: keep the cache bounded
        self._cache[key_id] = (record, now + self.cache_ttl_s)
        return record

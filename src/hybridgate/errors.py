"""The one error tree of hybridgate.

Every failure the gateway can meet is one of these. Adapters map their library's exceptions
(aiohttp, llama.cpp, a worker process dying) into this tree at the edge, with
``raise ... from exc``; nothing above the adapters ever sees a foreign exception. The API layer
renders any of them in the client's own wire format (OpenAI or Anthropic) with ``status``.

    HybridgateError
    ├── ConfigError                      configuration is invalid (never an HTTP response)
    ├── ClientError                      the request is at fault (4xx)
    │   ├── InvalidRequest               400: malformed JSON, schema violation (names the field)
    │   │   ├── ContextLengthExceeded    400: prompt + max_tokens exceed every context window
    │   │   └── UnsupportedFeature       400: no deployment of the model can do what was asked
    │   ├── AuthenticationFailed         401
    │   ├── PaymentRequired              402
    │   │   └── BudgetExhausted          402: a tenant's or key's budget is spent (names the budget)
    │   ├── PermissionDenied             403
    │   ├── NotFound                     404: unknown model or route
    │   ├── MethodNotAllowed             405
    │   ├── PayloadTooLarge              413
    │   ├── UnprocessableEntity          422: well-formed but semantically unusable
    │   │   └── SensitiveDataRefused     422: data governance refused the request (names the rule)
    │   ├── RateLimited                  429 (+ Retry-After)
    │   └── ClientDisconnected           499: the client went away; its upstream work was cancelled
    ├── UpstreamError                    a backend failed; ``kind`` drives retry/failover
    │   ├── UpstreamRateLimited          429 from the provider (+ its Retry-After)
    │   ├── UpstreamServerError          5xx from the provider
    │   ├── UpstreamTimeout              connect / first-token / idle / total deadline passed
    │   ├── UpstreamConnectionError      refused, reset, DNS: nothing usable came back
    │   ├── UpstreamProtocolError        the provider answered something we cannot parse
    │   ├── UpstreamRejected             the provider refused the request (4xx)
    │   │   ├── UpstreamContextLength    its context window is too small for this request
    │   │   └── UpstreamContentPolicy    its content policy refused (returned as is)
    │   ├── UpstreamAuthError            our credentials for it were refused (a config problem)
    │   ├── BackendOverloaded            a local runtime's bounded queue is full
    │   ├── BackendCrashed               a local worker process died mid-request
    │   └── BackendUnavailable           not configured, not started, or circuit open
    ├── StoreUnavailable                 503: the tenants/keys store is locked, full or unreadable
    └── NoRouteAvailable                 503: every candidate failed or none was acceptable

Messages never contain secrets (API keys, tokens): adapters build them from status codes and
provider error messages, which are scrubbed by :func:`scrub_secrets` before use.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class ErrorKind(StrEnum):
    """What went wrong, as the retry and failover policy needs to know it."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    PROTOCOL = "protocol"
    REJECTED = "rejected"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"
    AUTH = "auth"
    OVERLOADED = "overloaded"
    CRASHED = "crashed"
    UNAVAILABLE = "unavailable"


class HybridgateError(Exception):
    """Base of every error hybridgate raises.

    ``status`` is the HTTP status a client sees, ``openai_type``/``anthropic_type`` the error
    ``type`` in each wire format, ``code`` a stable machine-readable code.
    """

    status: int = 500
    openai_type: str = "api_error"
    anthropic_type: str = "api_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after


class ConfigError(HybridgateError):
    """The configuration is invalid. ``problems`` holds one (yaml_path, message) per issue."""

    code = "config_error"

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {path}: {msg}" if path else f"  {msg}" for path, msg in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


# --------------------------------------------------------------------------- client errors


class ClientError(HybridgateError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    code = "invalid_request"


class InvalidRequest(ClientError):
    pass


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class UnsupportedFeature(InvalidRequest):
    code = "unsupported_feature"


class AuthenticationFailed(ClientError):
    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"
    code = "invalid_api_key"


class PaymentRequired(ClientError):
    status = 402
    openai_type = "insufficient_quota"
    anthropic_type = "billing_error"
    code = "payment_required"


class BudgetExhausted(PaymentRequired):
    """Names the budget and its period, never amounts of other tenants."""

    code = "budget_exhausted"


class PermissionDenied(ClientError):
    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"
    code = "permission_denied"


class NotFound(ClientError):
    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ClientError):
    status = 413
    anthropic_type = "request_too_large"
    code = "request_too_large"


class UnprocessableEntity(ClientError):
    status = 422
    code = "unprocessable_entity"


class SensitiveDataRefused(UnprocessableEntity):
    """Never echoes the sensitive values: the message names kinds and the rule only."""

    code = "sensitive_data_refused"


class RateLimited(ClientError):
    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ClientDisconnected(ClientError):
    """Never seen by the client (it is gone); recorded in logs and the decision log."""

    status = 499
    code = "client_closed_request"


# --------------------------------------------------------------------------- upstream errors


class UpstreamError(HybridgateError):
    """A backend attempt failed. ``deployment`` names it; ``kind`` drives the retry policy."""

    kind: ErrorKind = ErrorKind.SERVER_ERROR
    status = 502
    openai_type = "api_error"
    anthropic_type = "api_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        deployment: str = "",
        upstream_status: int | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, param=param, retry_after=retry_after)
        self.deployment = deployment
        self.upstream_status = upstream_status


class UpstreamRateLimited(UpstreamError):
    kind = ErrorKind.RATE_LIMITED
    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "upstream_rate_limited"


class UpstreamServerError(UpstreamError):
    kind = ErrorKind.SERVER_ERROR
    status = 502
    code = "upstream_server_error"


class UpstreamTimeout(UpstreamError):
    kind = ErrorKind.TIMEOUT
    status = 504
    anthropic_type = "timeout_error"
    code = "upstream_timeout"


class UpstreamConnectionError(UpstreamError):
    kind = ErrorKind.CONNECTION
    status = 502
    code = "upstream_connection_error"


class UpstreamProtocolError(UpstreamError):
    kind = ErrorKind.PROTOCOL
    status = 502
    code = "upstream_protocol_error"


class UpstreamRejected(UpstreamError):
    """The provider said the request itself is bad; the client sees the provider's 4xx."""

    kind = ErrorKind.REJECTED
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    code = "upstream_rejected"


class UpstreamContextLength(UpstreamRejected):
    kind = ErrorKind.CONTEXT_LENGTH
    code = "context_length_exceeded"


class UpstreamContentPolicy(UpstreamRejected):
    kind = ErrorKind.CONTENT_POLICY
    code = "content_policy_violation"


class UpstreamAuthError(UpstreamError):
    kind = ErrorKind.AUTH
    status = 502
    code = "upstream_auth_error"


class BackendOverloaded(UpstreamError):
    kind = ErrorKind.OVERLOADED
    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "overloaded_error"
    code = "backend_overloaded"


class BackendCrashed(UpstreamError):
    kind = ErrorKind.CRASHED
    status = 502
    code = "backend_crashed"


class BackendUnavailable(UpstreamError):
    kind = ErrorKind.UNAVAILABLE
    status = 503
    anthropic_type = "overloaded_error"
    code = "backend_unavailable"


class StoreUnavailable(HybridgateError):
    """The store could not be read or written (locked, disk full, corrupt); nothing was half-written."""

    status = 503
    anthropic_type = "overloaded_error"
    code = "store_unavailable"


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """One failed attempt, as reported inside :class:`NoRouteAvailable`."""

    deployment: str
    kind: str
    message: str


class NoRouteAvailable(HybridgateError):
    """Every candidate failed, or none was acceptable. Carries why, per candidate."""

    status = 503
    openai_type = "api_error"
    anthropic_type = "overloaded_error"
    code = "no_route_available"

    def __init__(
        self,
        message: str,
        *,
        attempts: Sequence[AttemptFailure] = (),
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.attempts = tuple(attempts)
        if status is not None:
            self.status = status
            self.openai_type, self.anthropic_type = _TYPES_BY_STATUS.get(status, ("api_error", "api_error"))
            if status == 429:
                self.code = "rate_limit_exceeded"


# What each status is called in each format, for errors whose status is only known at run time.
_TYPES_BY_STATUS = {
    429: ("rate_limit_error", "rate_limit_error"),
    502: ("api_error", "api_error"),
    503: ("api_error", "overloaded_error"),
    504: ("api_error", "timeout_error"),
}


# --------------------------------------------------------------------------- secret scrubbing

_SECRET_PATTERNS = re.compile(
    r"(?:sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{8,}"  # OpenAI / Anthropic style keys
    r"|Bearer\s+[A-Za-z0-9._\-]{8,}"  # bearer tokens
    r"|(?:api[_-]?key|x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._\-]{8,})",
    re.IGNORECASE,
)


def scrub_secrets(text: str, *, known: Sequence[str] = ()) -> str:
    """Remove credential-looking substrings (and any of ``known``) from ``text``.

    Used on every upstream error message before it can reach a client, a log line or a trace.
    """
    for secret in known:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return _SECRET_PATTERNS.sub("[REDACTED]", text)

"""Answers kept for later: the response cache and Idempotency-Key results.

Both are keyed by a fingerprint of the *normalised* request — model, every message, every
generation parameter, tools, response format — so two requests that would be answered alike
share an entry, whatever wire format or JSON key order they came in, and two that differ in any
parameter do not. Entries are scoped by tenant: one tenant never sees another's answers.

- :class:`ResponseCache`: fresh hits for classes with ``cache: true``; an expired entry may still
  be served, marked stale, when every candidate failed.
- :class:`IdempotencyStore`: a repeated ``Idempotency-Key`` (an agent retrying an action) gets the
  first result, or waits for the first request still in flight, instead of running it twice. The
  same key with a different request is a 422. A key whose first request failed is free again (its
  waiters get the failure); one whose first request was cancelled (its client went away) is free
  again too, and its waiters claim it anew: one of them runs the request.

Both are in-memory LRUs owned by the event loop (shared state across instances comes later).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from hybridgate.clock import Clock
from hybridgate.errors import UnprocessableEntity
from hybridgate.types import (
    Completion,
    ImagePart,
    InferenceRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)


def _message(m: Any) -> list[Any]:
    parts = [p.text if not isinstance(p, ImagePart) else [p.url, p.data, p.media_type] for p in m.content]
    calls = [[c.id, c.name, c.arguments] for c in m.tool_calls]
    return [m.role, parts, calls, m.tool_call_id, m.name, m.is_error]


def fingerprint(request: InferenceRequest, tenant: str) -> str:
    """A stable digest of everything that shapes the answer (not ``stream``: a cached answer can
    be replayed either way)."""
    canonical = [
        tenant,
        request.model,
        [_message(m) for m in request.messages],
        request.max_tokens,
        request.temperature,
        request.top_p,
        list(request.stop),
        [[t.name, t.description, t.parameters] for t in request.tools],
        [request.tool_choice.mode, request.tool_choice.name] if request.tool_choice else None,
        request.parallel_tool_calls,
        request.response_format,
        request.extra,
    ]
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def replay(completion: Completion) -> list[StreamEvent]:
    """A stored answer as stream events (for a streamed request served from memory)."""
    events: list[StreamEvent] = [TextDelta(completion.text)] if completion.text else []
    events += [ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(completion.tool_calls)]
    return [*events, StreamEnd(completion.finish_reason, completion.usage)]


class CompletionBuilder:
    """Assembles a streamed answer into one :class:`Completion` (to remember it): ``id``, ``model``
    and ``created`` are what the client was shown, so that a replay shows the same."""

    def __init__(self, id: str = "", model: str = "", created: int = 0) -> None:
        self._id, self._model, self._created = id, model, created
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self._end: StreamEnd | None = None

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self._calls.setdefault(event.index, ["", "", ""])
            call[0] = event.id or call[0]
            call[1] = event.name or call[1]
            call[2] += event.arguments
        else:
            self._end = event

    def build(self) -> Completion | None:
        if self._end is None:
            return None
        calls = tuple(ToolCall(i, n, a) for i, n, a in (self._calls[k] for k in sorted(self._calls)))
        return Completion(
            id=self._id,
            model=self._model,
            text="".join(self._text),
            tool_calls=calls,
            finish_reason=self._end.finish_reason,
            usage=self._end.usage,
            created=self._created,
        )


@dataclass(slots=True)
class Remembered:
    completion: Completion
    deployment: str
    stored_at: float


class ResponseCache:
    def __init__(self, max_entries: int, ttl_s: float, stale_ttl_s: float, clock: Clock) -> None:
        self._entries: OrderedDict[str, Remembered] = OrderedDict()
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.stale_ttl_s = stale_ttl_s
        self._clock = clock
        self.hits = self.misses = self.stale_served = 0

    def get(self, key: str, *, stale: bool = False) -> Remembered | None:
        """A fresh entry; with ``stale=True`` also an expired one still within its stale period."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += not stale
            return None
        age = self._clock.monotonic() - entry.stored_at
        if age <= self.ttl_s:
            self._entries.move_to_end(key)
            if stale:  # asked for after every candidate failed: served (and counted) as stale
                self.stale_served += 1
            else:
                self.hits += 1
            return entry
        if stale and age <= self.ttl_s + self.stale_ttl_s:
            self.stale_served += 1
            return entry
        if age > self.ttl_s + self.stale_ttl_s:
            del self._entries[key]
        self.misses += not stale
        return None

    def put(self, key: str, completion: Completion, deployment: str) -> None:
        if completion.finish_reason == "error":
            return
        self._entries[key] = Remembered(completion, deployment, self._clock.monotonic())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class IdempotencyOwnerGone(Exception):
    """Set on a key's future when its first request went away without an outcome (cancelled):
    the key is free, and whoever waited for it should claim it again."""


@dataclass(slots=True)
class _Pending:
    fingerprint: str
    done: asyncio.Future[Remembered]
    settled_at: float | None = None  # when the result arrived (the TTL counts from there)


class IdempotencyStore:
    """Keys and their first request's result, per tenant.

    Settled keys are kept ``ttl_s`` from their result, and the least recently claimed go first
    beyond ``max_entries``. Keys whose first request is still in flight are never evicted: that
    would let a retry run the action a second time, and their number is bounded by the requests
    in flight anyway.
    """

    def __init__(self, max_entries: int, ttl_s: float, clock: Clock) -> None:
        self._entries: OrderedDict[str, _Pending] = OrderedDict()
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self.replayed = 0

    def _scoped(self, tenant: str, key: str) -> str:
        return f"{tenant}\x00{key}"

    def claim(self, tenant: str, key: str, request_fingerprint: str) -> asyncio.Future[Remembered] | None:
        """None: this request owns the key (run it, then :meth:`complete`, :meth:`abandon` or
        :meth:`release`). Otherwise the future of the first request's result (already done or
        still in flight); it raises the first request's error, or :class:`IdempotencyOwnerGone`.
        Raises :class:`UnprocessableEntity` if the key was used with a different request."""
        scoped = self._scoped(tenant, key)
        now = self._clock.monotonic()
        entry = self._entries.get(scoped)
        if entry is not None and entry.settled_at is not None and now - entry.settled_at > self.ttl_s:
            del self._entries[scoped]
            entry = None
        if entry is not None:
            if entry.fingerprint != request_fingerprint:
                raise UnprocessableEntity(
                    "Idempotency-Key was already used with a different request", param="idempotency-key"
                )
            self._entries.move_to_end(scoped)
            self.replayed += 1
            return entry.done
        self._entries[scoped] = _Pending(request_fingerprint, asyncio.get_running_loop().create_future())
        self._evict()
        return None

    def _evict(self) -> None:
        excess = len(self._entries) - self.max_entries
        if excess <= 0:
            return
        victims: list[str] = []
        for scoped, entry in self._entries.items():  # least recently claimed first
            if entry.settled_at is not None:
                victims.append(scoped)
                if len(victims) == excess:
                    break
        for scoped in victims:
            del self._entries[scoped]

    def complete(self, tenant: str, key: str, result: Remembered) -> None:
        """The owner's result: kept for the key, and given to everyone waiting for it."""
        entry = self._entries.get(self._scoped(tenant, key))
        if entry is not None and not entry.done.done():
            entry.done.set_result(result)
            entry.settled_at = self._clock.monotonic()

    def abandon(self, tenant: str, key: str, error: BaseException) -> None:
        """The owner failed: waiters get its error, and the key is free for a new attempt."""
        self._drop(tenant, key, error)

    def release(self, tenant: str, key: str) -> None:
        """The owner went away without an outcome (cancelled): the key is free, and waiters claim
        it again (one of them runs the request)."""
        self._drop(tenant, key, IdempotencyOwnerGone())

    def _drop(self, tenant: str, key: str, error: BaseException) -> None:
        scoped = self._scoped(tenant, key)
        entry = self._entries.get(scoped)
        if entry is None or entry.done.done():
            return  # settled already: a late failure (e.g. while closing) does not undo the result
        del self._entries[scoped]
        entry.done.set_exception(error)
        entry.done.exception()  # retrieved: no "exception was never retrieved" if nobody waits

    def __len__(self) -> int:
        return len(self._entries)

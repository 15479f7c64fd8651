"""Answers kept for later (hybridgate.execution.memo): the request fingerprint, the response cache,
the Idempotency-Key store, and turning streams into completions and back.

Time is a ManualClock moved by hand; nothing here sleeps. The same features against real
processes are in tests/test_degradation_e2e.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hybridgate.clock import ManualClock
from hybridgate.errors import NoRouteAvailable, UnprocessableEntity
from hybridgate.execution.memo import (
    CompletionBuilder,
    IdempotencyOwnerGone,
    IdempotencyStore,
    Remembered,
    ResponseCache,
    fingerprint,
    replay,
)
from hybridgate.types import (
    Completion,
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
from hybridgate.wire import anthropic as anthropic_wire
from hybridgate.wire import openai as openai_wire

TOOL = Tool("lookup", "Look a word up", {"type": "object", "properties": {"word": {"type": "string"}}})
BASE = InferenceRequest(
    model="m",
    messages=(
        Message.of_text("system", "Be brief."),
        Message.of_text("user", "What is a gateway?"),
        Message("assistant", tool_calls=(ToolCall("call_1", "lookup", '{"word": "gateway"}'),)),
        Message(role="tool", content=(TextPart("a way in"),), tool_call_id="call_1"),
    ),
    max_tokens=64,
    temperature=0.5,
    top_p=0.9,
    stop=("END",),
    tools=(TOOL,),
    tool_choice=ToolChoice("auto"),
    parallel_tool_calls=True,
    response_format={"type": "text"},
    extra={"seed": 7},
)


def _with_message(index: int, **changes: Any) -> Callable[[InferenceRequest], InferenceRequest]:
    def change(r: InferenceRequest) -> InferenceRequest:
        messages = list(r.messages)
        messages[index] = dataclasses.replace(messages[index], **changes)
        return dataclasses.replace(r, messages=tuple(messages))

    return change


def _with(**changes: Any) -> Callable[[InferenceRequest], InferenceRequest]:
    return lambda r: dataclasses.replace(r, **changes)


# ---------------------------------------------------------------------------- fingerprint


def test_equivalent_requests_share_a_fingerprint() -> None:
    """Whatever the JSON key order, the spelling of a parameter, or whether it is streamed."""
    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 20,
        "temperature": 1,
        "seed": 3,
    }
    alike: list[dict[str, Any]] = [
        {"seed": 3, "temperature": 1.0, "max_tokens": 20, "messages": body["messages"], "model": "m"},
        {**body, "max_tokens": None, "max_completion_tokens": 20},
        {**body, "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]},
        {**body, "stream": True, "stream_options": {"include_usage": True}},
    ]
    expected = fingerprint(openai_wire.parse_chat_request(body), "t")
    for other in alike:
        assert fingerprint(openai_wire.parse_chat_request(other), "t") == expected, other
    # The same request in the other wire format shares its answers too.
    anthropic = anthropic_wire.parse_messages_request(
        {"model": "m", "max_tokens": 20, "temperature": 1, "messages": body["messages"], "seed": 3}
    )
    assert fingerprint(anthropic, "t") == expected
    # Neither does the class's priority (it is set after planning) change what the answer is.
    assert fingerprint(dataclasses.replace(BASE, priority=90), "t") == fingerprint(BASE, "t")


@pytest.mark.parametrize(
    "change",
    [
        _with(model="other"),
        _with_message(1, content=(TextPart("What is a gateway!"),)),
        _with_message(1, content=(TextPart("What is a "), TextPart("gateway?"))),
        _with_message(1, content=(TextPart("What is a gateway?"), ImagePart(url="https://x/y.png"))),
        _with_message(1, role="assistant"),
        _with_message(1, name="alice"),
        _with_message(2, tool_calls=(ToolCall("call_1", "lookup", '{"word": "gate"}'),)),
        _with_message(2, tool_calls=(ToolCall("call_2", "lookup", '{"word": "gateway"}'),)),
        _with_message(3, tool_call_id="call_2"),
        _with_message(3, is_error=True),
        _with(messages=BASE.messages[:-1]),
        _with(messages=(*BASE.messages, Message.of_text("user", "and?"))),
        _with(max_tokens=65),
        _with(max_tokens=None),
        _with(temperature=0.6),
        _with(temperature=None),
        _with(top_p=0.8),
        _with(stop=("STOP",)),
        _with(stop=()),
        _with(tools=()),
        _with(tools=(dataclasses.replace(TOOL, name="find"),)),
        _with(tools=(dataclasses.replace(TOOL, description="Find a word"),)),
        _with(tools=(dataclasses.replace(TOOL, parameters={"type": "object"}),)),
        _with(tool_choice=ToolChoice("required")),
        _with(tool_choice=ToolChoice("required", "lookup")),
        _with(tool_choice=None),
        _with(parallel_tool_calls=False),
        _with(response_format={"type": "json_object"}),
        _with(response_format=None),
        _with(extra={"seed": 8}),
        _with(extra={"seed": 7, "logprobs": True}),
    ],
)
def test_any_difference_in_the_request_changes_the_fingerprint(
    change: Callable[[InferenceRequest], InferenceRequest],
) -> None:
    changed = change(BASE)
    assert changed != BASE
    assert fingerprint(changed, "t") != fingerprint(BASE, "t")


def test_the_tenant_is_part_of_the_fingerprint() -> None:
    assert fingerprint(BASE, "a") != fingerprint(BASE, "b")
    assert fingerprint(BASE, "a") == fingerprint(BASE, "a")


# ---------------------------------------------------------------------------- response cache


def _answer(text: str = "an answer", finish: Any = "stop") -> Completion:
    return Completion(id=f"id-{text}", model="up", text=text, finish_reason=finish, usage=Usage(3, 2))


def test_cache_fresh_hit_then_expiry() -> None:
    clock = ManualClock()
    cache = ResponseCache(max_entries=10, ttl_s=10, stale_ttl_s=100, clock=clock)
    assert cache.get("k") is None
    cache.put("k", _answer(), "dep")
    clock.advance(10)  # exactly the TTL: still fresh
    hit = cache.get("k")
    assert hit is not None
    assert hit.completion.text == "an answer"
    assert hit.deployment == "dep"
    clock.advance(0.001)
    assert cache.get("k") is None, "expired: not a fresh hit"
    assert (cache.hits, cache.misses, cache.stale_served) == (1, 2, 0)


def test_cache_stale_window_only_when_asked_for() -> None:
    clock = ManualClock()
    cache = ResponseCache(max_entries=10, ttl_s=10, stale_ttl_s=100, clock=clock)
    cache.put("k", _answer(), "dep")
    clock.advance(50)
    assert cache.get("k") is None
    stale = cache.get("k", stale=True)
    assert stale is not None
    assert stale.completion.text == "an answer"
    assert len(cache) == 1, "an expired entry is kept through its stale window"
    clock.advance(60)  # 110 s old: the last moment of its stale window
    assert cache.get("k") is None
    assert cache.get("k", stale=True) is not None
    clock.advance(0.001)
    assert cache.get("k", stale=True) is None
    assert len(cache) == 0, "an entry past its stale window is dropped"
    assert (cache.hits, cache.misses, cache.stale_served) == (0, 2, 2)


def test_a_stale_lookup_of_a_fresh_entry_counts_as_stale() -> None:
    """The gateway looks for a stale answer only after every candidate failed; what it serves then
    is marked stale, and counted as such (a concurrent request may have refreshed the entry)."""
    clock = ManualClock()
    cache = ResponseCache(max_entries=10, ttl_s=10, stale_ttl_s=0, clock=clock)
    assert cache.get("k", stale=True) is None
    cache.put("k", _answer(), "dep")
    assert cache.get("k", stale=True) is not None
    assert (cache.hits, cache.misses, cache.stale_served) == (0, 0, 1)
    clock.advance(10.5)
    assert cache.get("k", stale=True) is None, "a stale window of 0: nothing beyond the TTL"


def test_cache_evicts_the_least_recently_used() -> None:
    clock = ManualClock()
    cache = ResponseCache(max_entries=2, ttl_s=10, stale_ttl_s=10, clock=clock)
    cache.put("a", _answer("a"), "dep")
    cache.put("b", _answer("b"), "dep")
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", _answer("c"), "dep")
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None


def test_a_new_answer_replaces_the_old_and_is_fresh_again() -> None:
    clock = ManualClock()
    cache = ResponseCache(max_entries=2, ttl_s=10, stale_ttl_s=10, clock=clock)
    cache.put("k", _answer("old"), "dep")
    clock.advance(8)
    cache.put("k", _answer("new"), "other")
    clock.advance(8)
    hit = cache.get("k")
    assert hit is not None
    assert (hit.completion.text, hit.deployment) == ("new", "other")
    assert len(cache) == 1


def test_error_completions_are_not_cached() -> None:
    cache = ResponseCache(max_entries=10, ttl_s=10, stale_ttl_s=10, clock=ManualClock())
    cache.put("k", _answer(finish="error"), "dep")
    assert len(cache) == 0
    assert cache.get("k", stale=True) is None
    cache.put("k", _answer(finish="length"), "dep")  # cut short is still an answer
    assert cache.get("k") is not None


# ---------------------------------------------------------------------------- idempotency


def _remembered(text: str = "first") -> Remembered:
    return Remembered(_answer(text), "dep", 0.0)


@pytest.fixture
async def no_unretrieved_exceptions() -> AsyncIterator[list[dict[str, Any]]]:
    """Collects what the event loop reports (e.g. "Future exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    reports: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reports.append(context))
    try:
        yield reports
    finally:
        loop.set_exception_handler(previous)


async def test_a_repeated_key_gets_the_first_result() -> None:
    store = IdempotencyStore(max_entries=10, ttl_s=60, clock=ManualClock())
    assert store.claim("t", "key", "fp") is None
    store.complete("t", "key", _remembered())
    later = store.claim("t", "key", "fp")
    assert later is not None
    assert later.done()
    assert (await later).completion.text == "first"
    store.complete("t", "key", _remembered("second"))  # a late second result changes nothing
    again = store.claim("t", "key", "fp")
    assert again is not None
    assert (await again).completion.text == "first"
    assert store.replayed == 2


async def test_a_concurrent_claim_waits_for_the_one_in_flight() -> None:
    store = IdempotencyStore(max_entries=10, ttl_s=60, clock=ManualClock())
    assert store.claim("t", "key", "fp") is None
    waiting = store.claim("t", "key", "fp")
    assert waiting is not None
    assert not waiting.done()
    waiter = asyncio.ensure_future(asyncio.shield(waiting))
    await asyncio.sleep(0)
    assert not waiter.done()
    store.complete("t", "key", _remembered())
    assert (await waiter).completion.text == "first"


async def test_the_same_key_with_another_request_is_unprocessable() -> None:
    store = IdempotencyStore(max_entries=10, ttl_s=60, clock=ManualClock())
    assert store.claim("t", "key", "fp") is None
    with pytest.raises(UnprocessableEntity) as caught:
        store.claim("t", "key", "other")  # while the first is in flight
    assert caught.value.status == 422
    assert caught.value.param == "idempotency-key"
    store.complete("t", "key", _remembered())
    with pytest.raises(UnprocessableEntity):
        store.claim("t", "key", "other")  # and once it has its result
    assert store.replayed == 0


async def test_abandon_gives_waiters_the_error_and_frees_the_key(
    no_unretrieved_exceptions: list[dict[str, Any]],
) -> None:
    store = IdempotencyStore(max_entries=10, ttl_s=60, clock=ManualClock())
    assert store.claim("t", "key", "fp") is None
    waiting = store.claim("t", "key", "fp")
    assert waiting is not None
    error = NoRouteAvailable("every deployment failed", status=502)
    store.abandon("t", "key", error)
    with pytest.raises(NoRouteAvailable) as caught:
        await waiting
    assert caught.value is error
    assert store.claim("t", "key", "fp") is None, "the key is free for a new attempt"
    assert len(store) == 1
    # Abandoned with nobody waiting: the loop does not complain about an unretrieved exception.
    assert store.claim("t", "other", "fp") is None
    store.abandon("t", "other", NoRouteAvailable("no"))
    gc.collect()
    await asyncio.sleep(0)
    assert no_unretrieved_exceptions == []


async def test_a_late_failure_does_not_undo_a_result() -> None:
    store = IdempotencyStore(max_entries=10, ttl_s=60, clock=ManualClock())
    assert store.claim("t", "key", "fp") is None
    store.complete("t", "key", _remembered())
    store.abandon("t", "key", NoRouteAvailable("closing failed"))
    store.release("t", "key")
    first = store.claim("t", "key", "fp")
    assert first is not None
    assert (await first).completion.text == "first"


async def test_release_tells_waiters_to_claim_again() -> None:
    """The first request went away (its client disconnected): a waiter takes the key over."""
    store = IdempotencyStore(max_entries=10, ttl_s=60, clock=ManualClock())
    assert store.claim("t", "key", "fp") is None
    waiting = store.claim("t", "key", "fp")
    assert waiting is not None
    store.release("t", "key")
    with pytest.raises(IdempotencyOwnerGone):
        await waiting
    assert store.claim("t", "key", "fp") is None
    assert store.claim("t", "key", "fp") is not None, "and is its owner now"


async def test_a_result_is_kept_ttl_from_when_it_arrived() -> None:
    clock = ManualClock()
    store = IdempotencyStore(max_entries=10, ttl_s=60, clock=clock)
    assert store.claim("t", "key", "fp") is None
    clock.advance(600)  # in flight for a long time: never expires meanwhile
    waiting = store.claim("t", "key", "fp")
    assert waiting is not None
    assert not waiting.done()
    store.complete("t", "key", _remembered())
    clock.advance(60)
    assert store.claim("t", "key", "fp") is not None, "kept ttl_s from its result"
    clock.advance(0.5)
    assert store.claim("t", "key", "other") is None, "expired: the key starts afresh, for any request"


async def test_keys_are_scoped_by_tenant() -> None:
    store = IdempotencyStore(max_entries=10, ttl_s=60, clock=ManualClock())
    assert store.claim("a", "key", "fp-a") is None
    store.complete("a", "key", _remembered("a's"))
    assert store.claim("b", "key", "fp-b") is None, "another tenant's key of the same name is its own"
    store.complete("b", "key", _remembered("b's"))
    a, b = store.claim("a", "key", "fp-a"), store.claim("b", "key", "fp-b")
    assert a is not None
    assert b is not None
    assert ((await a).completion.text, (await b).completion.text) == ("a's", "b's")


async def test_eviction_drops_settled_keys_never_ones_in_flight() -> None:
    store = IdempotencyStore(max_entries=2, ttl_s=60, clock=ManualClock())
    for key in ("a", "b", "c"):
        assert store.claim("t", key, "fp") is None
    assert len(store) == 3, "keys in flight are kept beyond max_entries"
    store.complete("t", "b", _remembered("b"))
    assert store.claim("t", "d", "fp") is None
    assert len(store) == 3, "the settled one went first"
    in_flight = store.claim("t", "a", "fp")
    assert in_flight is not None
    assert not in_flight.done(), "the oldest key, still in flight, still waits for its request"
    assert store.claim("t", "b", "fp") is None, "b was evicted: it starts afresh"
    store.complete("t", "a", _remembered("a"))
    assert (await in_flight).completion.text == "a"


async def test_eviction_takes_the_least_recently_claimed() -> None:
    store = IdempotencyStore(max_entries=2, ttl_s=60, clock=ManualClock())
    for key in ("a", "b"):
        assert store.claim("t", key, "fp") is None
        store.complete("t", key, _remembered(key))
    assert store.claim("t", "a", "fp") is not None  # a was replayed: b is now the oldest
    assert store.claim("t", "c", "fp") is None
    assert store.claim("t", "a", "fp") is not None
    assert store.claim("t", "b", "fp") is None


# ---------------------------------------------------------------------------- streams


def test_a_completion_replays_and_rebuilds_identically() -> None:
    original = Completion(
        id="resp-1",
        model="up",
        text="Let me look.",
        tool_calls=(ToolCall("c1", "lookup", '{"word": "a"}'), ToolCall("c2", "lookup", '{"word": "b"}')),
        finish_reason="tool_calls",
        usage=Usage(10, 7),
        created=1_700_000_000,
    )
    events = replay(original)
    assert events == [
        TextDelta("Let me look."),
        ToolCallDelta(0, "c1", "lookup", '{"word": "a"}'),
        ToolCallDelta(1, "c2", "lookup", '{"word": "b"}'),
        StreamEnd("tool_calls", Usage(10, 7)),
    ]
    builder = CompletionBuilder("resp-1", "up", 1_700_000_000)
    for event in events:
        builder.add(event)
    assert builder.build() == original


def test_tool_call_deltas_are_assembled_by_index() -> None:
    pieces: list[StreamEvent] = [
        TextDelta("Two "),
        TextDelta("calls."),
        ToolCallDelta(1, "c2", "second", '{"n"'),
        ToolCallDelta(0, "c1", "first", "{"),
        ToolCallDelta(1, None, None, ": 2}"),
        ToolCallDelta(0, arguments="}"),
        StreamEnd("tool_calls", Usage(4, 9)),
    ]
    builder = CompletionBuilder("id-7")
    for event in pieces:
        builder.add(event)
    built = builder.build()
    assert built is not None
    assert built.id == "id-7"
    assert built.text == "Two calls."
    assert built.tool_calls == (ToolCall("c1", "first", "{}"), ToolCall("c2", "second", '{"n": 2}'))
    assert built.finish_reason == "tool_calls"
    assert built.usage == Usage(4, 9)
    # And back: one delta per call, in index order.
    assert replay(built)[1:3] == [
        ToolCallDelta(0, "c1", "first", "{}"),
        ToolCallDelta(1, "c2", "second", '{"n": 2}'),
    ]


def test_a_stream_without_its_end_builds_nothing() -> None:
    builder = CompletionBuilder()
    builder.add(TextDelta("cut sh"))
    assert builder.build() is None


def test_replay_of_answers_without_text() -> None:
    assert replay(Completion(id="x", model="m", text="", usage=Usage(1, 0))) == [
        StreamEnd("stop", Usage(1, 0))
    ]
    only_tool = Completion(id="x", model="m", text="", tool_calls=(ToolCall("c", "f", "{}"),))
    assert [type(e) for e in replay(only_tool)] == [ToolCallDelta, StreamEnd]

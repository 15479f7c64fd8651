"""Synthetic content of the SANDBOX: readable pseudo-English, tool calls, embeddings, token counts.

Nothing here is a model. An answer is derived from the server seed and the request's
fingerprint (its messages), so the same prompt always gets the same answer, whatever else the
server is doing at the time.
"""

from __future__ import annotations

import hashlib
import math
import random
from array import array
from collections.abc import Mapping
from typing import Any

import orjson

from hybridgate.sandbox.base import Answer, ChatJob, Finish, ToolCallOut, ToolSpec
from hybridgate.sandbox.profile import Profile

# The word classes of a one-pattern grammar: determiner, adjective, noun, verb, preposition, adverb.
_WORD_CLASSES = """
the a every each this that our one
quiet small bright careful local remote steady quick patient simple clear early late gentle busy modest warm
gateway request model river garden window signal engine harbor letter market lantern bridge meadow server
routes carries finds builds watches answers follows measures keeps sends reads writes opens crosses holds
to from with over near into across behind for through
slowly quietly often gladly rarely firmly soon gently
"""
_DET, _ADJ, _NOUN, _VERB, _PREP, _ADV = (tuple(line.split()) for line in _WORD_CLASSES.strip().splitlines())


def estimate_tokens(chars: int) -> int:
    """About four characters per token, as the providers' rules of thumb say."""
    return (chars + 3) // 4


_SKIP_KEYS = frozenset({"type", "role", "id", "tool_call_id", "tool_use_id", "cache_control", "data", "url"})


def text_chars(value: Any) -> int:
    """Characters of the text inside a JSON value (keys, ids and image data left out)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(text_chars(v) for v in value)
    if isinstance(value, dict):
        return sum(text_chars(v) for k, v in value.items() if k not in _SKIP_KEYS)
    return 0


def _sentence(rng: random.Random) -> list[str]:
    words = [rng.choice(_DET)]
    if rng.random() < 0.6:
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(_NOUN))
    if rng.random() < 0.25:
        words.append(rng.choice(_ADV))
    words += [rng.choice(_VERB), rng.choice(_DET)]
    if rng.random() < 0.5:
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(_NOUN))
    if rng.random() < 0.5:
        words += [rng.choice(_PREP), rng.choice(_DET), rng.choice(_NOUN)]
    words[0] = words[0].capitalize()
    words[-1] += "."
    return words


def _cut_at_stop(pieces: list[str], stop: tuple[str, ...]) -> tuple[list[str], str] | None:
    """The pieces before the earliest stop sequence, and that sequence; None when none occurs."""
    text = "".join(pieces)
    hits = [(i, s) for s in stop if s and (i := text.find(s)) >= 0]
    if not hits:
        return None
    cut, seq = min(hits)
    kept: list[str] = []
    pos = 0
    for piece in pieces:
        if pos + len(piece) > cut:
            if cut > pos:
                kept.append(piece[: cut - pos])
            break
        kept.append(piece)
        pos += len(piece)
    return kept, seq


def _value(schema: Any, rng: random.Random, depth: int) -> Any:
    """A plausible value for a JSON-schema node."""
    if not isinstance(schema, Mapping):
        return rng.choice(_NOUN)
    if schema.get("enum"):
        return rng.choice(list(schema["enum"]))
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        return [] if depth > 3 else [_value(schema.get("items"), rng, depth + 1)]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if not isinstance(props, Mapping) or depth > 3:
            return {}
        return {str(k): _value(v, rng, depth + 1) for k, v in props.items()}
    return f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"


def _tool_call(tool: ToolSpec, rng: random.Random) -> ToolCallOut:
    arguments = orjson.dumps(_value(tool.parameters or {"type": "object"}, rng, 0)).decode()
    return ToolCallOut(tool.name, arguments)


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _wants_tool(job: ChatJob, rng: random.Random, profile: Profile) -> ToolSpec | None:
    if not job.tools:
        return None
    # Drawn whatever the tool choice, so forcing the tool the model would pick changes nothing else.
    draw, pick = rng.random(), rng.choice(job.tools)
    if job.tool_choice == "none":
        return None
    if job.forced_tool is not None:
        return next((t for t in job.tools if t.name == job.forced_tool), None)
    if job.tool_choice == "required" or draw < profile.tool_call_probability:
        return pick
    return None


class Synthesizer:
    """The synthetic content of one server: a seeded pool of sentences, and answers drawn from it.

    An answer's random source is keyed by the seed and the request's fingerprint, so the same
    prompt gets the same answer whenever it comes. Answers are whole sentences of the pool (cut at
    the token budget): one random draw per sentence keeps a long answer cheap to make.
    """

    def __init__(self, seed: int, profile: Profile, pool_size: int = 1024) -> None:
        self.seed = seed
        self.profile = profile
        self._key = seed.to_bytes(16, "big", signed=True)
        rng = random.Random(seed)
        self._sentences = tuple(tuple(" " + w for w in _sentence(rng)) for _ in range(pool_size))

    def _rng(self, fingerprint: bytes) -> random.Random:
        digest = hashlib.blake2b(fingerprint, digest_size=8, key=self._key).digest()
        return random.Random(int.from_bytes(digest, "big"))

    def words(self, rng: random.Random, n: int) -> list[str]:
        """``n`` tokens of readable pseudo-English: one word each, with its leading space."""
        pool = self._sentences
        out: list[str] = []
        while len(out) < n:
            out += pool[rng.randrange(len(pool))]
        del out[n:]
        if out:
            out[0] = out[0][1:]
        return out

    def compose(self, job: ChatJob) -> Answer:
        """The answer to ``job``: text of the profile's natural length, or a tool call."""
        rng = self._rng(job.fingerprint)
        natural = self.profile.draw_output_tokens(rng)
        limit = job.max_tokens
        tool = _wants_tool(job, rng, self.profile)
        if tool is not None:
            call = _tool_call(tool, rng)
            pieces = _chunks(call.arguments, 6)
            if limit is not None and len(pieces) > limit:
                pieces = pieces[:limit]
                return Answer(tuple(pieces), "length", tool=ToolCallOut(call.name, "".join(pieces)))
            return Answer(tuple(pieces), "tool_calls", tool=call)
        n = natural if limit is None else min(natural, limit)
        finish: Finish = "length" if limit is not None and natural > limit else "stop"
        pieces = self.words(rng, n)
        cut = _cut_at_stop(pieces, job.stop) if job.stop else None
        if cut is not None:
            return Answer(tuple(cut[0]), "stop", stop_sequence=cut[1])
        return Answer(tuple(pieces), finish)

    def embed(self, text: str, dims: int) -> list[float]:
        """A deterministic unit vector: the sum of one hashed vector per word (shared words, closer)."""
        total = [0.0] * dims
        for word in text.lower().split()[:512] or [""]:
            raw = array("h", hashlib.shake_256(self._key + word.encode()).digest(2 * dims))
            for i, x in enumerate(raw):
                total[i] += x
        norm = math.sqrt(sum(x * x for x in total)) or 1.0
        return [x / norm for x in total]

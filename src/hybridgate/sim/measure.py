"""Measuring the embedded llama.cpp runtime as the gateway runs it, for ``hybridgate bench local``.

Everything goes through :class:`~hybridgate.backends.llamacpp.LlamaCppBackend`, the supervised
worker process the gateway itself uses (same frames, same queue, same stream of deltas), so what
is measured is what a request to a ``llamacpp`` deployment costs, minus the HTTP in front:

1. **cold starts**: ``cold_starts`` times, start a worker and wait for its model (what a request
   waits when the worker must be started), then close it; the last one stays up;
2. ``warmup`` discarded requests (the first inferences after a load are slower); with
   ``worker_cpus``, the worker is pinned to those CPUs first (all its threads), so that it runs
   as it will beside a gateway kept off its core;
3. **short prompt**: ``repeats`` requests of ``short_tokens`` words, two output tokens: TTFT;
4. **prefill**: ``repeats`` requests at each of ``prompt_lengths`` (words), two output tokens,
   the lengths interleaved;
5. **decode**: ``repeats`` requests of ``decode_tokens`` output tokens, their prompts cycling
   through the prompt lengths (decoding slows as the context grows).

TTFT is the time from submitting the request to the first text delta; the token counts are the
worker's own (``usage``), so the fit uses real prompt tokens, chat template included. Every
prompt starts with a different word from the one before: llama-cpp-python reuses the longest
prefix it evaluated last, and a repeated prompt would measure that cache, not prefill.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hybridgate.backends.llamacpp import LlamaCppBackend
from hybridgate.backends.registry import BackendContext
from hybridgate.config.schema import LlamaCppDeployment
from hybridgate.errors import HybridgateError
from hybridgate.sim.calibrate import Measurement, Sample
from hybridgate.types import InferenceRequest, Message, StreamEnd, TextDelta, Timeouts

# Words of three letters that are single tokens of the generated tiny model's vocabulary (and
# common words for any other): with a space, four characters per token, as the gateway's prompt
# estimate assumes.
WORDS = (
    "the",
    "and",
    "you",
    "was",
    "for",
    "are",
    "his",
    "one",
    "had",
    "hot",
    "but",
    "can",
    "out",
    "use",
    "how",
    "all",
    "she",
    "any",
    "may",
    "day",
    "get",
    "has",
    "him",
    "too",
    "new",
    "now",
    "old",
    "see",
    "two",
    "way",
    "who",
    "boy",
    "did",
    "man",
    "end",
    "put",
    "big",
    "men",
    "air",
)
_TIMEOUTS = Timeouts(connect=30.0, first_token=120.0, idle=60.0, total=600.0)


def prompt_text(words: int, rng: random.Random, avoid_first: str = "") -> str:
    """``words`` random three-letter words, the first one not ``avoid_first``."""
    first = rng.choice([w for w in WORDS if w != avoid_first])
    return " ".join([first, *(rng.choice(WORDS) for _ in range(max(0, words - 1)))])


@dataclass(frozen=True, slots=True)
class Plan:
    """How much to measure (see the module docstring)."""

    repeats: int = 10
    cold_starts: int = 3
    warmup: int = 3
    short_tokens: int = 16
    prompt_lengths: tuple[int, ...] = (16, 256, 1024, 2048)
    decode_tokens: int = 256
    seed: int = 1
    worker_cpus: frozenset[int] | None = None  # pin the worker (all its threads) to these CPUs


class _Runner:
    def __init__(self, backend: LlamaCppBackend, rng: random.Random) -> None:
        self.backend = backend
        self.rng = rng
        self.last_first = ""

    async def run(self, words: int, max_tokens: int) -> Sample:
        text = prompt_text(words, self.rng, self.last_first)
        self.last_first = text.split(" ", 1)[0]
        request = InferenceRequest(
            model="bench", messages=(Message.of_text("user", text),), max_tokens=max_tokens
        )
        started = time.perf_counter()
        first: float | None = None
        end: StreamEnd | None = None
        async for event in self.backend.stream(request, _TIMEOUTS):
            if isinstance(event, TextDelta) and first is None:
                first = time.perf_counter()
            elif isinstance(event, StreamEnd):
                end = event
        finished = time.perf_counter()
        if end is None or end.usage is None or first is None:
            raise RuntimeError("the runtime answered no text")
        usage = end.usage
        return Sample(
            words, usage.prompt_tokens, usage.completion_tokens, first - started, finished - started
        )


class PinError(RuntimeError):
    """The worker could not be pinned to the CPUs asked for (e.g. outside this container's set)."""


def pin_worker(backend: LlamaCppBackend, cpus: frozenset[int] | None) -> None:
    """Pin every thread of the backend's worker process to ``cpus`` (Linux; None: leave it)."""
    pid = backend.stats.pid
    if cpus is None or pid is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
        except OSError as exc:
            raise PinError(f"cannot pin the worker to CPUs {sorted(cpus)}: {exc.strerror}") from exc


async def _start(config: LlamaCppDeployment) -> tuple[LlamaCppBackend, float, float]:
    backend = LlamaCppBackend("bench-local", config, BackendContext())
    started = time.perf_counter()
    await backend.start()
    start_s = time.perf_counter() - started
    return backend, start_s, backend.stats.load_time_s or 0.0


async def measure_local(
    config: LlamaCppDeployment, plan: Plan, progress: Callable[[str], None] | None = None
) -> Measurement:
    """Run the plan against a fresh worker; raises BackendUnavailable if the model does not load."""
    say = progress or (lambda _: None)
    m = Measurement()
    backend: LlamaCppBackend | None = None
    try:
        for i in range(plan.cold_starts):
            say(f"cold start {i + 1}/{plan.cold_starts}")
            if backend is not None:
                await backend.close()
                backend = None
            backend, start_s, load_s = await _start(config)
            m.start_s.append(start_s)
            m.load_s.append(load_s)
        assert backend is not None
        runner = _Runner(backend, random.Random(plan.seed))

        async def batch(label: str, sizes: Sequence[tuple[int, int]], into: list[Sample] | None) -> None:
            say(f"{label}: {len(sizes)} requests")
            for words, max_tokens in sizes:
                try:
                    sample = await runner.run(words, max_tokens)
                except (HybridgateError, RuntimeError):
                    if into is not None:  # a failed warm-up is not a measurement
                        m.errors += 1
                    continue
                if into is not None:
                    into.append(sample)

        pin_worker(backend, plan.worker_cpus)
        await batch("warm-up", [(plan.short_tokens, 2)] * plan.warmup, None)
        pin_worker(backend, plan.worker_cpus)  # again: the generation thread starts after the load
        await batch("short prompt", [(plan.short_tokens, 2)] * plan.repeats, m.short)
        lengths = plan.prompt_lengths
        # Interleaved, so that a spell of load on the machine falls on every length alike.
        await batch("prefill", [(n, 2) for _ in range(plan.repeats) for n in lengths], m.prefill)
        cycle = [(lengths[i % len(lengths)], plan.decode_tokens) for i in range(plan.repeats)]
        await batch("decode", cycle, m.decode)
    finally:
        if backend is not None:
            await backend.close()
    return m


def describe_machine() -> dict[str, object]:
    """CPU model, cores (all, and usable by this process), OS, Python and llama-cpp-python."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        llama = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        llama = "not installed"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "llama_cpp_python": llama,
    }

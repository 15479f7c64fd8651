"""Simulation vs reality: the same workload through a real gateway and through ``hybridgate simulate``.

One run, side by side:

1. **Local profile**: ``hybridgate bench local`` measures the embedded llama.cpp runtime of the
   generated configuration's ``local`` deployment (``models/tiny.gguf``, one slot, one thread) and
   writes the simulator profile the sim arm uses: same machine, minutes apart.
2. **Real arm**: ``hybridgate serve`` with that configuration: ``local`` (the real llama.cpp runtime in
   its supervised worker) and ``cloud``, a ``sandbox`` deployment serving
   ``bench/sim/validate-cloud.yaml``. The traffic is the simulator's own: the workload's classes
   drawn by :func:`hybridgate.sim.schedule.planned_requests` with the run's seed (the engine's
   arrival, shape and output streams), sent open loop at those times with the official ``openai``
   SDK (``AsyncOpenAI``, no client retries), each request with exactly the planned prompt size
   (three-letter words, so the gateway's estimate is the planned token count) and
   ``max_tokens`` = the planned output (both backends answer exactly that many tokens).
3. **Sim arm**: the simulator's engine (the policy router) on the same configuration, workload and
   seed, the local deployment modelled by the profile of step 1 and the cloud by the same sandbox
   profile file (``sandbox:`` backend: converted exactly, time scale applied).
4. **Comparison**, per class: p50 (of a class served from one placement), p95 (p99 shown, not
   judged: a handful of samples), the share answered locally, the SLO attainment and the local
   service ratio (real local service times over the profile's), with absolute and relative
   differences, judged against :data:`TOLERANCE` (docs/simulator.md says why these bounds). Then
   the **sensitivity check**: the sim arm again with the local profile 2x slower and 2x faster,
   which must *not* agree, or the tolerance would not tell a right model from a wrong one.
5. **Disturbance**: ``bench local`` again after the real arm, and the CPU other work used
   meanwhile, second by second: a run whose machine changed under it is reported as disturbed.

Usage::

    python bench/sim_vs_real.py            # 120 s of traffic, about 3 minutes
    python bench/sim_vs_real.py --quick    # 30 s of traffic, about 45 s

Exit status: 0 when the run completed and every request was answered validly (agreement is
reported, in the table and the JSON's ``agreement``, not turned into the exit status), 1 when a
request failed or an answer was invalid, 2 when a process did not start or ``bench local``
could not measure the runtime (three tries), 3 when ``--max-seconds`` ran out, 130 when
interrupted. Pinned with two or more cores (``--no-pin`` turns it off): the llama.cpp worker
alone on the last core, in ``bench local`` (``--worker-cpus``) and in the real arm alike,
everything else (bench local itself, the gateway's threads, the sandbox, this driver) on the
others; unpinned, one clean run in a dozen
had the runtime 1.7x slower than measured (most likely the worker placed beside the gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import math
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from openai import APIError, AsyncOpenAI
from rich.console import Console
from rich.table import Table

import _harness as h
from hybridgate.sandbox.profile import load_profile as load_sandbox_profile
from hybridgate.sim.calibrate import slowed
from hybridgate.sim.engine import Engine, Scenario
from hybridgate.sim.measure import prompt_text
from hybridgate.sim.models import BackendProfile, load_profile
from hybridgate.sim.results import ClassResult, quantile
from hybridgate.sim.scenario import load_scenario
from hybridgate.sim.schedule import PlannedRequest, planned_requests

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CLOUD_PROFILE = Path(__file__).resolve().parent / "sim" / "validate-cloud.yaml"
DEFAULT_MODEL = ROOT / "models" / "tiny.gguf"
GATEWAY_READY = re.compile(r"hybridgate: listening on http://127\.0\.0\.1:(\d+)")
SCHEMA = "hybridgate-bench-sim-vs-real/1"
MODEL = "m"
THREADS, MAX_QUEUE = 1, 16  # the local deployment: one llama.cpp thread, the default queue bound
CLIENT_TIMEOUT_S = 60.0
# bench local measures prefill and decode at these quantiles of the prompt sizes of the requests
# that may run locally (decode slows as the context grows: the profile then describes the mix).
CALIBRATION_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SENSITIVITY = (2.0, 0.5)  # the local model this many times slower, in the sensitivity check
# A run is *disturbed* (its comparison says little about the simulator) when other processes used
# more than this many cores on average while the local runtime was measured or the real arm ran
# bench local after the real arm finds the runtime this much slower or faster than before.
OTHER_CPU_MAX = 0.3
OTHER_BUSY, BUSY_SHARE_MAX = 0.5, 0.2  # ... or more than 0.5 cores in over a fifth of its seconds
DRIFT_MAX = 1.4  # as the local service ratio's bound: a smaller change the comparison absorbs
CALIBRATION_TRIES = 3  # bench local before the real arm, when the machine is too busy to fit
AFTER = "bench local after"

# (duration of traffic in seconds, bench local --repeats)
PRESETS: dict[str, tuple[float, int]] = {"full": (120.0, 20), "quick": (30.0, 10)}


@dataclass(frozen=True)
class Tolerance:
    """How close the sim arm must be to the real arm, per class (see docs/simulator.md)."""

    p50_ratio: float = 1.7  # sim / real p50 within [1 / x, x] (classes served from one placement)
    p95_ratio: float = 1.4  # sim / real p95 within [1 / x, x]
    local_share_abs: float = 0.15  # |sim - real| share answered locally
    slo_abs: float = 0.10  # |sim - real| SLO attainment
    service_ratio: float = 1.4  # real local service time / the profile's, median per class (< sqrt 2)
    single_placement: float = 0.9  # a class's p50 is judged when this share of it has one placement
    min_answered: int = 20  # a class with fewer answers in either arm is shown, not judged


TOLERANCE = Tolerance()

# The gateway's classes. Every class's answers have one length, its expected_output_tokens: the
# real client sends max_tokens (the runtime must stop there), which the planner then takes as the
# output estimate, whereas the simulator's requests carry no max_tokens and are planned on
# expected_output_tokens; fixed lengths make both plan alike. Both local classes have the same
# sizes by default: the simulator's local model has one decode rate, but llama.cpp decodes
# slower as the context grows, so classes of different sizes run at different rates
# (--batch-output 384 shows it; docs/simulator.md).
LOCAL_OUTPUT_TOKENS = 192
LOCAL_PROMPTS = {"median": 300, "p95": 1000, "min": 16, "max": 2000}


def gateway_classes(batch_output: int = LOCAL_OUTPUT_TOKENS) -> dict[str, dict[str, Any]]:
    return {
        "interactive": {
            "priority": 80,
            "placement": "local-first",
            "latency": {"p95_ms": 250, "p99_ms": 500, "ttft_ms": 250},
            "expected_output_tokens": LOCAL_OUTPUT_TOKENS,
        },
        "batch": {
            "priority": 20,
            "placement": "local-first",
            "latency": {"p95_ms": 3000, "p99_ms": 6000, "ttft_ms": 3000},
            "expected_output_tokens": batch_output,
        },
        "agent-cloud": {
            "priority": 50,
            "placement": "cloud-first",
            "latency": {"p95_ms": 1000, "p99_ms": 2000, "ttft_ms": 500},
            "expected_output_tokens": 96,
        },
    }


PLACEMENT = {name: c["placement"] for name, c in gateway_classes().items()}


def _fixed(tokens: int) -> dict[str, int]:
    return {"median": tokens, "min": tokens, "max": tokens}


def workload_classes(load: float, classes: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The workload: steady interactive traffic, batch bursts that fill the local queue (so
    interactive requests spill to the cloud), and a streamed cloud-first class."""
    return [
        {
            "class": "interactive",
            "rate_per_s": 6.0 * load,
            "prompt_tokens": LOCAL_PROMPTS,
            "output_tokens": _fixed(classes["interactive"]["expected_output_tokens"]),
        },
        {
            "class": "batch",
            "rate_per_s": 1.0 * load,
            "arrival": {"kind": "bursts", "every_s": 15, "length_s": 4, "factor": 8},
            "prompt_tokens": LOCAL_PROMPTS,
            "output_tokens": _fixed(classes["batch"]["expected_output_tokens"]),
        },
        {
            "class": "agent-cloud",
            "rate_per_s": 2.0 * load,
            "stream": True,
            "prompt_tokens": {"median": 300, "p95": 1200, "min": 16, "max": 2500},
            "output_tokens": _fixed(classes["agent-cloud"]["expected_output_tokens"]),
        },
    ]


@dataclass(frozen=True)
class Settings:
    """What to run; see :func:`parse_args`. The runtime is fixed (:data:`THREADS`,
    :data:`MAX_QUEUE`): the comparison is of one configuration."""

    preset: str
    duration_s: float
    repeats: int
    load: float
    batch_output: int
    seed: int
    time_scale: float | None
    model: Path
    pin: bool
    max_seconds: float
    json_path: Path | None
    results_dir: Path


def parse_args(argv: Sequence[str] | None) -> Settings:
    ap = argparse.ArgumentParser(
        prog="sim_vs_real.py", description="The same workload through a real gateway and the simulator."
    )
    ap.add_argument("--quick", action="store_true", help="30 s of traffic and 10 bench repeats (about 45 s)")
    ap.add_argument("--duration", type=float, help="seconds of traffic (default 120, --quick 30)")
    ap.add_argument("--repeats", type=int, help="bench local --repeats (default 20, --quick 10)")
    ap.add_argument("--load", type=float, default=1.0, help="multiply every class's rate (default 1)")
    ap.add_argument("--batch-output", type=int, default=LOCAL_OUTPUT_TOKENS, help="batch answers' tokens")
    ap.add_argument("--seed", type=int, default=1, help="seed of the workload and the sandbox (default 1)")
    ap.add_argument("--time-scale", type=float, help="the cloud profile's time scale (default: the file's)")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF model (default models/tiny.gguf)")
    ap.add_argument(
        "--no-pin", action="store_true", help="do not give the llama.cpp worker a core of its own"
    )
    ap.add_argument("--max-seconds", type=float, default=900.0, help="hard stop for the whole run")
    ap.add_argument("--json", type=Path, help="write the JSON results here (default bench/results/...)")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the default JSON goes")
    a = ap.parse_args(argv)
    preset = "quick" if a.quick else "full"
    duration, repeats = PRESETS[preset]
    duration = duration if a.duration is None else a.duration
    repeats = repeats if a.repeats is None else a.repeats
    if duration <= 0 or a.load <= 0 or repeats < 2 or not 1 <= a.batch_output <= 1024:
        ap.error("--duration and --load must be positive, --repeats >= 2, --batch-output 1..1024")
    if a.time_scale is not None and a.time_scale <= 0:
        ap.error("--time-scale must be positive (0 would have no timing to compare)")
    if not a.model.is_file():
        ap.error(f"model {a.model} not found (make models writes models/tiny.gguf)")
    given = {k: getattr(a, k) for k in ("load", "batch_output", "seed", "time_scale", "max_seconds")}
    model = a.model.resolve()
    out = {"json_path": a.json, "results_dir": a.results_dir}
    return Settings(preset, duration, repeats, model=model, pin=not a.no_pin, **out, **given)


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- files
def write_cloud_profile(work: Path, s: Settings) -> Path:
    """The sandbox profile both arms use (the shipped file, with ``--time-scale`` applied)."""
    data = yaml.safe_load(CLOUD_PROFILE.read_text())
    if s.time_scale is not None:
        data["time_scale"] = s.time_scale
    path = work / "cloud.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_sandbox_profile(str(path))  # it must validate before a gateway is started with it
    return path


def _priors(profile: BackendProfile) -> dict[str, float]:
    return {
        "ttft_ms": round(profile.ttft.median * 1000, 4),
        "tokens_per_s": round(profile.decode_tps.median, 2),
        "prefill_tokens_per_s": round(min(profile.prefill_tokens_per_s, 1e9), 1),
    }


def gateway_config(
    s: Settings, cloud: Path, local: BackendProfile | None, cloud_model: BackendProfile
) -> bytes:
    """The one configuration of both arms (JSON, which is valid YAML). The priors are the
    measured local profile's and the cloud profile's medians, so neither arm starts on guesses."""
    local_dep: dict[str, Any] = {
        "type": "llamacpp",
        "model_path": str(s.model),
        "n_threads": THREADS,
        "context_window": 4096,
        "max_queue": MAX_QUEUE,
    }
    if local is not None:
        local_dep["expected"] = _priors(local)
    config = {
        "version": 1,
        "server": {"host": "127.0.0.1", "port": 0, "auth": {"disabled": True}},
        "decision_log": {"path": "decisions.jsonl"},
        "classes": gateway_classes(s.batch_output),
        "default_class": "interactive",
        "deployments": {
            "local": local_dep,
            "cloud": {
                "type": "sandbox",
                "profile": str(cloud),
                "model": "sandbox-model",
                "seed": s.seed,
                "region": "us",
                "context_window": 128000,
                "expected": _priors(cloud_model),
                "price": {"input_per_mtok": 2.50, "output_per_mtok": 10.00},
            },
        },
        "models": {MODEL: {"deployments": ["local", "cloud"]}},
    }
    return orjson.dumps(config, option=orjson.OPT_INDENT_2)


def write_workload(work: Path, s: Settings, local_profile: str, cloud: Path) -> Path:
    workload = {
        "model": MODEL,
        "duration_s": s.duration_s,
        "queue_sample_s": 1.0,
        "backends": {"local": local_profile, "cloud": f"sandbox:{cloud}"},
        "classes": workload_classes(s.load, gateway_classes(s.batch_output)),
    }
    path = work / "workload.yaml"
    path.write_text(yaml.safe_dump(workload, sort_keys=False))
    return path


def calibration(planned: Sequence[PlannedRequest]) -> list[str]:
    """bench local's sizes: prompts at quantiles of the prompts that may run locally, in words (four
    tokens fewer: see :func:`prompts_for`), and answers of their median length."""
    local = [r for r in planned if PLACEMENT[r.workload_class].startswith("local")]
    prompts = sorted(r.prompt_tokens for r in local)
    words = {max(1, prompts[min(len(prompts) - 1, int(q * len(prompts)))] - 4) for q in CALIBRATION_QUANTILES}
    output = max(2, round(h.median(r.output_tokens for r in local)))
    return ["--prompt-lengths", ",".join(str(w) for w in sorted(words)), "--decode-tokens", str(output)]


_ROLES = ((b"llamacpp_worker", "llama.cpp worker"), (b"hybridgate.sandbox", "sandbox"), (b"serve", "gateway"))


@dataclass(frozen=True)
class Layout:
    """Where the processes run. Pinned (two or more cores): the llama.cpp worker alone on the last
    core, ``local``, in bench local (``--worker-cpus``) and in the real arm alike; bench local
    itself, the gateway, the sandbox and this driver on the others, ``rest``. Not pinned: both
    None."""

    local: set[int] | None = None
    rest: set[int] | None = None

    @classmethod
    def of(cls, pin: bool) -> Layout:
        cpus = os.sched_getaffinity(0)
        if not pin or len(cpus) < 2:
            return cls()
        return cls({max(cpus)}, cpus - {max(cpus)})

    def describe(self) -> str:
        if self.local is None or self.rest is None:
            return "not pinned"
        return (
            f"llama.cpp worker on CPU {min(self.local)}, gateway, sandbox and driver on {sorted(self.rest)}"
        )

    def apply(self, gateway_pid: int) -> dict[str, list[str]]:
        """Move every thread of the gateway's tree but the llama.cpp worker to ``rest``; returns
        each process's thread affinities (for the JSON)."""
        out: dict[str, list[str]] = {}
        for pid in h.process_tree([gateway_pid]):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
            worker = b"llamacpp_worker" in cmdline
            if self.rest is not None and not worker:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(int(tid), self.rest)
            name = next((n for key, n in _ROLES if key in cmdline), "other")
            out[f"{pid} {name}"] = h.thread_affinities(pid)
        return out


class CalibrationFailed(RuntimeError):
    """bench local could not fit a profile (exit status 1): the machine was too busy to measure."""


def bench_local(
    work: Path,
    config: Path,
    sizes: Sequence[str],
    repeats: int,
    layout: Layout,
    *,
    cold_starts: int = 3,
    tag: str = "before",
) -> tuple[Path, dict[str, Any]]:
    """``hybridgate bench local`` on the configuration's ``local`` deployment: the profile it wrote,
    and its JSON with the CPU the rest of the machine used meanwhile (``other_cpu``)."""
    out, report = work / f"local-profile-{tag}.yaml", work / f"bench-local-{tag}.json"
    pin = [] if layout.local is None else ["--worker-cpus", ",".join(map(str, sorted(layout.local)))]
    argv = hybridgate(
        *("bench", "local", "-c", str(config), "--deployment", "local", "--repeats", str(repeats)),
        *("--cold-starts", str(cold_starts), *sizes, *pin, "--out", str(out)),
        *("--json", str(report), "--no-progress"),
    )
    window = CpuWindow()
    with (
        h.affinity(layout.rest),  # bench local where the gateway runs; its worker where the gateway's does
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc,
    ):
        with OtherLoad(proc.pid) as load:
            stdout, _ = proc.communicate(timeout=600)
        load.series = load.series[:-1]  # the last second saw the process exit (its CPU then unread)
    cpu = {**window.stop(), "busy_share": load.busy_share(), "other_by_second": load.series}
    output = stdout[-4000:].strip()
    if proc.returncode == 1:
        raise CalibrationFailed(
            f"bench local ({tag}): {output} (other CPU {cpu['other']:.2f}, busy {cpu['busy_share']:.0%})"
        )
    if proc.returncode != 0:
        raise h.ChildError(f"bench local exited {proc.returncode}:\n{output}")
    data: dict[str, Any] = orjson.loads(report.read_bytes())
    data["cpu"] = cpu
    return out, data


def calibrate(
    work: Path, config: Path, sizes: Sequence[str], repeats: int, layout: Layout
) -> tuple[Path, dict[str, Any]]:
    """bench local before the real arm, tried up to :data:`CALIBRATION_TRIES` times."""
    for attempt in range(1, CALIBRATION_TRIES + 1):
        try:
            return bench_local(work, config, sizes, repeats, layout)
        except CalibrationFailed as exc:
            _progress(f"{exc}; try {attempt} of {CALIBRATION_TRIES}")
            if attempt == CALIBRATION_TRIES:
                raise h.ChildError(f"the local runtime could not be measured: {exc}") from exc
    raise AssertionError("unreachable")


def modelled_service_s(profile: BackendProfile, prompt_tokens: float, output_tokens: float) -> float:
    """How long the profile says a request of this size holds the slot (its medians)."""
    return (
        profile.ttft.median
        + prompt_tokens / profile.prefill_tokens_per_s
        + max(0.0, output_tokens - 1) / profile.decode_tps.median
    )


def typical_service_s(profile: BackendProfile, planned: Sequence[PlannedRequest]) -> float:
    """What the profile says the median local request takes (for comparing two measurements)."""
    local = [r for r in planned if PLACEMENT[r.workload_class].startswith("local")]
    return modelled_service_s(
        profile, h.median(r.prompt_tokens for r in local), h.median(r.output_tokens for r in local)
    )


def stability(
    before: BackendProfile,
    after: BackendProfile | None,
    planned: Sequence[PlannedRequest],
    cpu: Mapping[str, Mapping[str, Any]],
    failed: str = "",
) -> dict[str, Any]:
    """Whether the machine stayed as it was measured: little other load during bench local and the
    real arm, and bench local after the real arm within :data:`DRIFT_MAX` of the one before.

    The measurement after the real arm checks the runtime itself (its speed may change with no
    other load in sight); when other work disturbed that measurement, it says nothing either way
    and is only noted."""
    busy = {
        name: f"other processes used {c['other']:.2f} CPU during {name} (over {OTHER_BUSY:g} in "
        f"{c['busy_share']:.0%} of its seconds)"
        for name, c in cpu.items()
        if c["other"] > OTHER_CPU_MAX or c["busy_share"] > BUSY_SHARE_MAX
    }
    after_busy = busy.pop(AFTER, None)
    reasons, notes = list(busy.values()), [] if after_busy is None else [after_busy]
    drift = None
    if after is None:
        notes.append(f"bench local after the real arm failed: {failed}")
    else:
        drift = typical_service_s(after, planned) / typical_service_s(before, planned)
        if abs(math.log(drift)) > math.log(DRIFT_MAX):
            change = f"the local runtime's speed changed {drift:.2f}x between bench local before and after"
            (notes if after_busy else reasons).append(change)
    return {
        "drift": None if drift is None else round(drift, 3),
        "other_cpu": dict(cpu),
        "disturbed": bool(reasons),
        "reasons": reasons,
        "notes": notes,
    }


# --------------------------------------------------------------------------- the real arm
@dataclass(slots=True)
class Outcome:
    """One real request: what was planned, and what happened (seconds)."""

    i: int
    t: float
    workload_class: str
    prompt_tokens: int
    output_tokens: int
    stream: bool
    lateness: float = 0.0
    sent: float = 0.0  # when it was sent, seconds from the start of the replay
    status: int = 0
    deployment: str | None = None
    latency: float | None = None
    completion_tokens: int | None = None
    error: str | None = None


def prompts_for(planned: Sequence[PlannedRequest], seed: int) -> list[str]:
    """Each request's text: ``prompt_tokens - 4`` three-letter words, which the gateway's estimate
    (4 characters a token, 16 a message) reads as exactly ``prompt_tokens``; no two consecutive
    prompts start alike (the runtime's prefix cache would skip their prefill)."""
    rng = random.Random(f"{seed}:prompts")
    texts: list[str] = []
    first = ""
    for r in planned:
        text = prompt_text(max(1, r.prompt_tokens - 4), rng, first)
        first = text.split(" ", 1)[0]
        texts.append(text)
    return texts


async def _send(client: AsyncOpenAI, o: Outcome, text: str) -> None:
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": o.output_tokens,
        "extra_headers": {"X-Hybridgate-Class": o.workload_class},
    }
    started = time.perf_counter()
    try:
        if o.stream:
            raw = await client.chat.completions.with_raw_response.create(stream=True, **kwargs)
            o.status, o.deployment = raw.status_code, raw.headers.get("x-hybridgate-deployment")
            pieces, finished = 0, False
            async for chunk in raw.parse():
                for choice in chunk.choices:
                    pieces += bool(choice.delta.content)
                    finished = finished or choice.finish_reason is not None
            o.completion_tokens = pieces
            if not finished:
                o.error = "stream_without_finish"
        else:
            raw = await client.chat.completions.with_raw_response.create(**kwargs)
            o.status, o.deployment = raw.status_code, raw.headers.get("x-hybridgate-deployment")
            completion = raw.parse()
            o.completion_tokens = completion.usage.completion_tokens if completion.usage else None
            if o.completion_tokens != o.output_tokens:
                o.error = f"answer_of_{o.completion_tokens}_tokens"
    except APIError as exc:
        o.status = getattr(exc, "status_code", 0) or 0
        o.error = f"http_{o.status}" if o.status else type(exc).__name__
        return
    o.latency = time.perf_counter() - started
    if o.deployment not in ("local", "cloud"):
        o.error = o.error or "no_deployment_header"


async def replay(port: int, planned: Sequence[PlannedRequest], s: Settings) -> list[Outcome]:
    """Send every planned request at its time (open loop: nothing waits for an answer)."""
    texts = prompts_for(planned, s.seed)
    outcomes = [
        Outcome(i, r.t, r.workload_class, r.prompt_tokens, r.output_tokens, r.stream)
        for i, r in enumerate(planned)
    ]
    client = AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S
    )
    loop = asyncio.get_running_loop()

    async def one(i: int, due: float) -> None:
        o, now = outcomes[i], loop.time()
        o.lateness, o.sent = max(0.0, now - due), o.t + max(0.0, now - due)
        await _send(client, o, texts[i])

    try:
        await h.open_loop([o.t for o in outcomes], one, lead_s=0.1)
    finally:
        await client.close()
    return outcomes


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuWindow:
    """CPU over a stretch of the run, in cores: the process tree of ``root`` (the gateway: its
    llama.cpp worker and sandbox included), this driver, the children it waited for (``bench
    local``), and ``other``: busy core time none of them explains, i.e. other work on the machine."""

    def __init__(self, root: int | None = None) -> None:
        self.root = root
        self.t0, self.cores0 = h.perf(), h.core_times()
        self.cpu0 = (self._tree_cpu(), time.process_time(), _children_cpu())

    def _tree_cpu(self) -> float:
        """The tree as it is now: a process born since the window opened counts in full, one that
        ended counts in the ``cutime`` of the parent that waited for it."""
        return h.cpu_seconds(h.process_tree([self.root]), reaped=True) if self.root is not None else 0.0

    def stop(self) -> dict[str, float]:
        wall = max(h.perf() - self.t0, 1e-9)
        tree, driver, children = self.cpu0
        out = {
            "gateway_tree": (self._tree_cpu() - tree) / wall,
            "driver": (time.process_time() - driver) / wall,
            "children": (_children_cpu() - children) / wall,
        }
        out["other"] = max(0.0, h.busy_cores(self.cores0) - sum(out.values()))
        return {k: round(v, 3) for k, v in out.items()}


class OtherLoad:
    """``other`` CPU (see :class:`CpuWindow`) second by second, on a thread, while a block runs:
    a spell of other work shows even when the average over a whole phase hides it."""

    PERIOD_S = 1.0

    def __init__(self, root: int | None = None) -> None:
        self.root = root
        self.series: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="other-load", daemon=True)

    def _run(self) -> None:
        window = CpuWindow(self.root)
        while not self._stop.wait(self.PERIOD_S):
            self.series.append(window.stop()["other"])
            window = CpuWindow(self.root)

    def __enter__(self) -> OtherLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def busy_share(self) -> float:
        """The share of the seconds in which other work used more than :data:`OTHER_BUSY` cores."""
        return round(sum(x > OTHER_BUSY for x in self.series) / len(self.series), 3) if self.series else 0.0


def run_real(
    work: Path, config: Path, planned: Sequence[PlannedRequest], s: Settings, layout: Layout
) -> dict[str, Any]:
    """Start the gateway, replay the requests, stop it; outcomes, CPU, decision-log attempts."""
    serve = hybridgate("serve", "-c", str(config), "--port", "0", "--quiet")
    # Started on the local core, so that the worker it spawns is there; then everything else moves.
    gateway = h.Child("gateway", serve, work / "gateway.log", GATEWAY_READY, cpus=layout.local)
    with gateway:
        port = int(gateway.start(timeout=120).group(1))
        affinities = layout.apply(gateway.pid)
        window = CpuWindow(gateway.pid)
        with h.affinity(layout.rest), OtherLoad(gateway.pid) as load:
            outcomes = asyncio.Runner(loop_factory=h.loop_factory()).run(replay(port, planned, s))
        cpu = {**window.stop(), "busy_share": load.busy_share(), "other_by_second": load.series}
    log = gateway.log_tail(200_000)
    return {
        "layout": layout.describe(),
        "affinities": affinities,
        "outcomes": outcomes,
        "cpu": cpu,
        "attempts": decision_attempts(work / "decisions.jsonl"),
        "log_problems": h.log_problems(log),
        "pid": gateway.pid,
    }


def hybridgate(*args: str) -> list[str]:
    """The ``hybridgate`` command of this interpreter's environment, with ``args``."""
    script = Path(sys.executable).with_name("hybridgate")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "hybridgate.cli"]
    return [*base, *args]


def decision_attempts(path: Path) -> dict[str, dict[str, int]]:
    """Per class, the real gateway's attempts by outcome (``deployment:error`` or ``deployment:ok``)."""
    out: dict[str, Counter[str]] = {}
    if not path.exists():
        return {}
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        counts = out.setdefault(str(record.get("class")), Counter())
        for a in record.get("attempts") or []:
            counts[f"{a.get('deployment')}:{a.get('error') or 'ok'}"] += 1
    return {cls: dict(sorted(c.items())) for cls, c in sorted(out.items())}


# --------------------------------------------------------------------------- comparison
@dataclass(slots=True)
class ArmStats:
    """One arm's numbers for one class (latencies in seconds; nearest-rank quantiles for both)."""

    requests: int
    answered: int
    local: int
    within_budget: int
    latencies: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float | None]:
        ordered = sorted(self.latencies)
        return {
            "p50_s": quantile(ordered, 0.5),
            "p95_s": quantile(ordered, 0.95),
            "p99_s": quantile(ordered, 0.99),
            "local_share": self.local / self.answered if self.answered else None,
            "slo_attainment": self.within_budget / self.requests if self.requests else None,
        }


def real_stats(outcomes: Sequence[Outcome]) -> dict[str, ArmStats]:
    out: dict[str, ArmStats] = {}
    for cls in sorted({o.workload_class for o in outcomes}):
        rows = [o for o in outcomes if o.workload_class == cls]
        ok = [o for o in rows if o.error is None and o.latency is not None]
        budget = gateway_classes()[cls]["latency"]["p95_ms"] / 1000.0
        out[cls] = ArmStats(
            requests=len(rows),
            answered=len(ok),
            local=sum(o.deployment == "local" for o in ok),
            within_budget=sum(o.latency is not None and o.latency <= budget for o in ok),
            latencies=[o.latency for o in ok if o.latency is not None],
        )
    return out


def local_service(outcomes: Sequence[Outcome], profile: BackendProfile, tol: Tolerance) -> dict[str, Any]:
    """The profile against the real runtime, request by request: per class, the median of each
    local answer's service time over what the profile models for its size (medians:
    ``ttft + prompt / prefill + (output - 1) / decode``).

    One slot serves one request at a time, so in the order the answers came back each one's
    service began when it was sent or when the one before it ended, whichever was later; the
    gateway's and the client's own time (a few milliseconds) is part of it.
    """
    done = sorted(
        (o for o in outcomes if o.deployment == "local" and o.error is None and o.latency is not None),
        key=lambda o: o.sent + (o.latency or 0.0),
    )
    ratios: dict[str, list[float]] = {}
    previous = -math.inf
    for o in done:
        end = o.sent + (o.latency or 0.0)
        service, previous = end - max(o.sent, previous), end
        modelled = modelled_service_s(profile, o.prompt_tokens, o.output_tokens)
        ratios.setdefault(o.workload_class, []).append(service / modelled)
    out: dict[str, Any] = {}
    for cls, values in sorted(ratios.items()):
        ratio = h.median(values)
        ok = None if len(values) < tol.min_answered else abs(math.log(ratio)) <= math.log(tol.service_ratio)
        out[cls] = {
            "real": ratio,
            "sim": 1.0,
            "abs_diff": None,
            "rel_diff": None,
            "n": len(values),
            "tolerance": f"median within 1/{tol.service_ratio:g}..{tol.service_ratio:g}",
            "ok": ok,
        }
    return out


def sim_stats(classes: Mapping[str, ClassResult]) -> dict[str, ArmStats]:
    return {
        name: ArmStats(
            c.requests, len(c.latencies), c.by_placement["local"], c.within_budget, list(c.latencies)
        )
        for name, c in sorted(classes.items())
    }


def _judge(metric: str, real: float | None, sim: float | None, tol: Tolerance) -> dict[str, Any]:
    row: dict[str, Any] = {"real": real, "sim": sim, "abs_diff": None, "rel_diff": None}
    if real is None or sim is None:
        row["ok"] = None
        return row
    row["abs_diff"] = sim - real
    row["rel_diff"] = (sim - real) / real if real else None
    if metric in ("p50_s", "p95_s"):
        bound = tol.p50_ratio if metric == "p50_s" else tol.p95_ratio
        row["tolerance"] = f"ratio within 1/{bound:g}..{bound:g}"
        row["ok"] = real > 0 and sim > 0 and abs(math.log(sim / real)) <= math.log(bound)
    elif metric in ("local_share", "slo_attainment"):
        bound = tol.local_share_abs if metric == "local_share" else tol.slo_abs
        row["tolerance"] = f"|diff| <= {bound:g}"
        row["ok"] = abs(sim - real) <= bound + 1e-12
    else:
        row["ok"] = None  # shown, not judged
    return row


def _single_placement(stats: ArmStats, tol: Tolerance) -> bool:
    share = stats.local / stats.answered if stats.answered else 0.0
    return max(share, 1.0 - share) >= tol.single_placement


def compare(
    real: Mapping[str, ArmStats],
    sim: Mapping[str, ArmStats],
    service: Mapping[str, Mapping[str, Any]],
    tol: Tolerance,
) -> dict[str, Any]:
    """Per class and metric: both values, differences, verdict; ``ok`` when every judged one holds.

    A class's p50 is judged only when (nearly) all of it is served from one placement in both
    arms: the median of a mixed class sits between its local and its cloud mode and jumps with
    the split, which is judged directly. ``service`` is :func:`local_service`'s check."""
    classes: dict[str, Any] = {}
    verdicts: list[bool] = []
    for cls in sorted(real):
        r, m = real[cls], sim.get(cls)
        if m is None:
            continue
        judged = min(r.answered, m.answered) >= tol.min_answered
        rm, mm = r.metrics(), m.metrics()
        rows = {k: _judge(k, rm[k], mm[k], tol) for k in rm}
        if not (_single_placement(r, tol) and _single_placement(m, tol)):
            rows["p50_s"]["ok"], rows["p50_s"]["tolerance"] = None, "mixed placements: shown only"
        if not judged:
            for row in rows.values():
                row["ok"] = None
        if cls in service:
            rows["local_service_ratio"] = dict(service[cls])
        verdicts += [row["ok"] for row in rows.values() if row["ok"] is not None]
        classes[cls] = {
            "judged": judged,
            "requests": {"real": r.requests, "sim": m.requests},
            "answered": {"real": r.answered, "sim": m.answered},
            "metrics": rows,
        }
    real_all = sum(s.answered for s in real.values()), sum(s.local for s in real.values())
    sim_all = sum(s.answered for s in sim.values()), sum(s.local for s in sim.values())
    overall = _judge(
        "local_share",
        real_all[1] / real_all[0] if real_all[0] else None,
        sim_all[1] / sim_all[0] if sim_all[0] else None,
        tol,
    )
    if overall["ok"] is not None:
        verdicts.append(overall["ok"])
    return {
        "ok": bool(verdicts) and all(verdicts),
        "judged": len(verdicts),
        "classes": classes,
        "overall_local_share": overall,
    }


def run_sim(scenario: Scenario) -> tuple[dict[str, ArmStats], dict[str, Any]]:
    result = Engine(scenario, "policy").run()
    summary = result.to_dict()
    summary.pop("series", None)
    return sim_stats(result.classes), summary


# --------------------------------------------------------------------------- the run
def run_benchmark(s: Settings, deadline: float) -> dict[str, Any]:
    layout = Layout.of(s.pin)
    _progress(layout.describe())
    with tempfile.TemporaryDirectory(prefix="hybridgate-sim-vs-real-") as tmp:
        work = Path(tmp)
        cloud = write_cloud_profile(work, s)
        cloud_model = load_scenario_cloud(cloud)
        config = work / "gateway.yaml"
        config.write_bytes(gateway_config(s, cloud, None, cloud_model))
        # The requests depend on the workload and the seed only, not on the backend models: drawn
        # first (the cloud profile standing in for the local one) to calibrate on their prompts.
        workload = write_workload(work, s, f"sandbox:{cloud}", cloud)
        planned = planned_requests(load_scenario(config, workload, seed=s.seed))
        sizes = calibration(planned)
        _progress(f"bench local: measuring the local runtime ({' '.join(sizes)})")
        local_path, local_report = calibrate(work, config, sizes, s.repeats, layout)
        local = load_profile(local_path)
        config.write_bytes(gateway_config(s, cloud, local, cloud_model))
        workload = write_workload(work, s, str(local_path), cloud)
        scenario = load_scenario(config, workload, seed=s.seed)
        if planned_requests(scenario) != planned:
            raise RuntimeError("the planned requests changed with the backend profiles")
        if h.perf() + s.duration_s > deadline:
            raise TimeoutError
        _progress(f"real arm: {len(planned)} requests over {s.duration_s:g} s")
        real = run_real(work, config, planned, s, layout)
        _progress("bench local again: did the machine change?")
        cpu: dict[str, Mapping[str, Any]] = {"bench local": local_report["cpu"], "the real arm": real["cpu"]}
        try:
            after_path, after_report = bench_local(
                work, config, sizes, s.repeats, layout, cold_starts=1, tag="after"
            )
            cpu[AFTER] = after_report["cpu"]
            after = load_profile(after_path)
            stable = {**stability(local, after, planned, cpu), "profile_after": after.model_dump(mode="json")}
        except CalibrationFailed as exc:
            stable = stability(local, None, planned, cpu, failed=str(exc))
        _progress("sim arm")
        sim, sim_summary = run_sim(scenario)
        real_by_class = real_stats(real["outcomes"])
        outcomes = real["outcomes"]
        comparison = compare(real_by_class, sim, local_service(outcomes, local, TOLERANCE), TOLERANCE)
        sensitivity = {}
        for factor in SENSITIVITY:
            wrong = slowed(local, factor)
            distorted = dataclasses.replace(scenario, profiles={**scenario.profiles, "local": wrong})
            other, _ = run_sim(distorted)
            verdict = compare(real_by_class, other, local_service(outcomes, wrong, TOLERANCE), TOLERANCE)
            sensitivity[f"local_x{factor:g}"] = {"factor": factor, "ok": verdict["ok"], "comparison": verdict}
        return build_report(
            s,
            stable,
            real,
            sim_summary,
            comparison,
            sensitivity,
            local,
            local_report,
            cloud_model,
            planned,
            workload,
            config,
        )


def load_scenario_cloud(cloud: Path) -> BackendProfile:
    from hybridgate.sim.sandbox_profile import load_sandbox_backend

    return load_sandbox_backend(f"sandbox:{cloud}", cloud.parent)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def checks(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    errors = Counter(o.error for o in outcomes if o.error is not None)
    late = sorted(o.lateness for o in outcomes)
    return {
        "requests": len(outcomes),
        "errors": dict(errors),
        "errors_total": sum(errors.values()),
        "lateness_p99_ms": round(h.percentile(late, 99) * 1000, 2) if late else None,
        "lateness_max_ms": round(late[-1] * 1000, 2) if late else None,
        "ok": not errors,
    }


def build_report(
    s: Settings,
    stable: Mapping[str, Any],
    real: Mapping[str, Any],
    sim_summary: Mapping[str, Any],
    comparison: Mapping[str, Any],
    sensitivity: Mapping[str, Any],
    local: BackendProfile,
    local_report: Mapping[str, Any],
    cloud: BackendProfile,
    planned: Sequence[PlannedRequest],
    workload: Path,
    config: Path,
) -> dict[str, Any]:
    outcomes: list[Outcome] = real["outcomes"]
    warnings = [f"disturbed: {r}" for r in stable["reasons"]] + [f"note: {n}" for n in stable["notes"]]
    check = checks(outcomes)
    if (check["lateness_p99_ms"] or 0) > 20:
        warnings.append(f"the driver sent requests late (p99 {check['lateness_p99_ms']} ms)")
    detects = all(not v["ok"] for v in sensitivity.values())
    return {
        "meta": {
            "schema": SCHEMA,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(s).items()},
            "versions": {d: _version(d) for d in ("hybridgate", "llama-cpp-python", "openai", "httpx")},
            "python": sys.version.split()[0],
            "cpu": h.cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "load_average": h.load_average(),
            "gateway_log_problems": real["log_problems"],
            "config": orjson.loads(config.read_bytes()),
            "workload": yaml.safe_load(workload.read_text()),
        },
        "tolerance": dataclasses.asdict(TOLERANCE),
        "local_profile": local.model_dump(mode="json"),
        "cloud_profile": cloud.model_dump(mode="json"),
        "bench_local": {k: local_report[k] for k in ("machine", "model", "fit", "plan")},
        "agreement": {
            "ok": comparison["ok"],
            "sensitivity_detected": detects,
            "disturbed": stable["disturbed"],
            "reasons": stable["reasons"],
        },
        "stability": stable,
        "comparison": comparison,
        "sensitivity": sensitivity,
        "sim": sim_summary,
        "real": {
            "layout": real["layout"],
            "affinities": real["affinities"],
            "cpu": real["cpu"],
            "attempts_by_class": real["attempts"],
            "answered_by_class": {
                cls: dict(
                    Counter(o.deployment for o in outcomes if o.workload_class == cls and o.error is None)
                )
                for cls in sorted({o.workload_class for o in outcomes})
            },
        },
        "planned": {"requests": len(planned), "by_class": dict(Counter(p.workload_class for p in planned))},
        "checks": check,
        "requests": [dataclasses.asdict(o) for o in outcomes],
        "warnings": warnings,
    }


# --------------------------------------------------------------------------- printing
def _cell(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.endswith("_ratio"):
        return f"{value:.2f}"
    return f"{value * 1000:.1f} ms" if metric.endswith("_s") else f"{value:.1%}"


def _diff(metric: str, row: Mapping[str, Any]) -> str:
    if row["abs_diff"] is None:
        return "-"
    if metric.endswith("_s"):
        rel = f" ({row['rel_diff']:+.0%})" if row["rel_diff"] is not None else ""
        return f"{row['abs_diff'] * 1000:+.1f} ms{rel}"
    return f"{row['abs_diff'] * 100:+.1f} pts"


def comparison_table(report: Mapping[str, Any]) -> Table:
    table = Table(title="sim vs real, per class (same workload, seed, config)")
    for name, justify in (("class", "left"), ("metric", "left"), ("real", "right"), ("sim", "right"),
                          ("sim - real", "right"), ("tolerance", "left"), ("ok", "center")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for cls, entry in report["comparison"]["classes"].items():
        n = f"{cls} ({entry['answered']['real']}/{entry['answered']['sim']} answered)"
        for metric, row in entry["metrics"].items():
            ok = {True: "[green]yes[/]", False: "[red]NO[/]", None: "·"}[row["ok"]]
            cells = (_cell(metric, row["real"]), _cell(metric, row["sim"]), _diff(metric, row))
            table.add_row(n, metric, *cells, row.get("tolerance", "shown only"), ok)
            n = ""
    overall = report["comparison"]["overall_local_share"]
    ok = {True: "[green]yes[/]", False: "[red]NO[/]", None: "·"}[overall["ok"]]
    table.add_row("all", "local_share", _cell("share", overall["real"]), _cell("share", overall["sim"]),
                  _diff("share", overall), overall.get("tolerance", ""), ok)  # fmt: skip
    return table


def print_report(report: Mapping[str, Any], path: Path, console: Console) -> None:
    lp = report["local_profile"]
    console.print(
        f"local profile (bench local): TTFT {lp['ttft']['median'] * 1000:.2f} ms, prefill "
        f"{lp['prefill_tokens_per_s']:.0f} tok/s, decode {lp['decode_tps']['median']:.0f} tok/s; cloud: "
        f"{report['cloud_profile']['description']}"
    )
    console.print(comparison_table(report))
    agree = report["agreement"]
    console.print(
        f"agreement within tolerance: {'[green]yes[/]' if agree['ok'] else '[red]NO[/]'}; "
        + "; ".join(
            f"{name}: {'agrees (NOT detected)' if v['ok'] else 'rejected'}"
            for name, v in report["sensitivity"].items()
        )
    )
    st = report["stability"]
    others = ", ".join(
        f"{name} {c['other']:.2f} (busy {c['busy_share']:.0%})" for name, c in st["other_cpu"].items()
    )
    state = "[yellow]DISTURBED[/]" if st["disturbed"] else "[green]stable[/]"
    drift = "-" if st["drift"] is None else f"{st['drift']:.2f}x"
    console.print(f"machine: {state} (bench local after / before {drift}; other CPU: {others})")
    cpu = report["real"]["cpu"]
    console.print(
        f"real arm CPU (cores): gateway tree {cpu['gateway_tree']}, driver {cpu['driver']}, "
        f"other {cpu['other']}"
    )
    for w in report["warnings"]:
        console.print(f"[yellow]! {w}[/]")
    check = report["checks"]
    if not check["ok"]:
        console.print(f"[red]failed requests: {check['errors']}[/]")
    console.print(f"json: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_args(argv)
    h.sigterm_as_interrupt()
    console = Console(width=120)
    deadline = h.perf() + s.max_seconds
    try:
        report = run_benchmark(s, deadline)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130
    except TimeoutError:
        console.print(f"[red]--max-seconds {s.max_seconds:g} ran out[/]")
        return 3
    except (h.ChildError, subprocess.TimeoutExpired) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    path = h.write_results(report, s.json_path, s.results_dir, "sim-vs-real")
    print_report(report, path, console)
    return 0 if report["checks"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

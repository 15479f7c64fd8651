"""Privacy scan throughput: realistic agent prompts and adversarial input, side by side.

Every workload is scanned by the same :class:`hybridgate.privacy.Scanner` (all built-in
detectors, default config) in this process, alternating workloads in rounds so that machine
noise hits them alike. Reported per workload: bytes scanned (UTF-8), the median time of a
scan, and MB/s; adversarial workloads also as a ratio to the agent prompts.

* **agent prompts**: conversations from ``tests/privacy_corpus.py`` (system prompt, user and
  assistant turns, tool calls with JSON arguments, tool results; mostly prose, code and logs,
  some personal data, credentials and hard negatives), scanned with the cache off;
* **agent next turn (cache)**: the same conversations plus one new turn, with the cache warm
  from the previous turn, which is what an agent loop costs per request;
* **adversarial**: one text each, built to make a careless pattern backtrack or a validator
  run on every character: long digit runs, ``a@a@...``, near-miss addresses, nested dashes,
  huge base64 runs, Luhn-invalid card chains, ``+1 +1 ...``, ``DE00 DE00 ...``, and more.

Usage::

    python bench/scan.py [--size-kb 1024] [--rounds 5] [--tiny] [--json PATH]
"""

from __future__ import annotations

import argparse
import base64
import importlib
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

import _harness as h
from hybridgate.config.governance import DetectionConfig
from hybridgate.privacy import Scanner
from hybridgate.privacy.scanner import request_texts
from hybridgate.types import InferenceRequest, Message

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"


def agent_request(seed: int, target_bytes: int) -> InferenceRequest:
    """``tests.privacy_corpus.agent_request``: the corpus lives with the tests that check it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    corpus = importlib.import_module("tests.privacy_corpus")
    request: InferenceRequest = corpus.agent_request(seed, target_bytes)
    return request


def adversarial(size: int) -> dict[str, str]:
    """One text of ``size`` characters per pathological shape."""
    rng = random.Random(0)

    def fill(unit: str) -> str:
        return (unit * (size // len(unit) + 1))[:size]

    b64 = base64.b64encode(rng.randbytes(size)).decode()[:size]
    return {
        "digit run": fill("1234567890"),
        "a@a@a@...": fill("a@"),
        "aaaa... (no match)": "a" * size,
        "near-miss addresses": fill("a" * 63 + "@" + "b" * 60 + "."),
        "nested dashes": fill("1-"),
        "base64 run": b64,
        "eyJ + base64 run": "eyJ" + b64[: size - 3],
        "Luhn-invalid card chain": fill("4111 1111 1111 1112 "),
        "+1 +1 +1 ...": fill("+1 "),
        "(0(0(0 ...": fill("(0"),
        "DE00 DE00 ...": fill("DE00 "),
        "::1: hex colons": fill("::1:"),
        "1.1.1.1.1...": fill("1.1.1.1."),
        "255.255.255.255 ...": fill("255.255.255.255 "),
        "1 1 1 1 ...": fill("1 "),
        "sk- + long key body": "sk-" + fill("a1B")[: size - 3],
        "secret secret ...": fill("secret "),
        "escaped newlines \\n\\n": fill("\\n"),
        "BEGIN PRIVATE KEY, no END": fill("-----BEGIN PRIVATE KEY-----\n"),
        "a://a:a@ (URL passwords)": fill("a://a:a@"),
    }


def conversations(size: int) -> list[InferenceRequest]:
    """Agent conversations of 64 KiB each, about ``size`` bytes together."""
    return [agent_request(seed, 64 * 1024) for seed in range(max(1, size // (64 * 1024)))]


def utf8_size(request: InferenceRequest) -> int:
    return sum(len(text.encode("utf-8", "surrogatepass")) for _, text in request_texts(request))


def next_turn(request: InferenceRequest, i: int) -> InferenceRequest:
    extra = Message.of_text("user", f"Thanks. Now check order #{100 + i} and reply to the customer.")
    return replace(request, messages=(*request.messages, extra))


Workload = tuple[str, str, int, Callable[[], object]]  # (name, group, bytes, one scan)


def workloads(size: int) -> list[Workload]:
    cold = Scanner(DetectionConfig(), cache_entries=0)
    warm = Scanner(DetectionConfig())
    requests = conversations(size)
    followups = [next_turn(r, i) for i, r in enumerate(requests)]
    for request in requests:
        warm.scan(request)

    def scan_all(scanner: Scanner, batch: Sequence[InferenceRequest]) -> Callable[[], object]:
        return lambda: [scanner.scan(r) for r in batch]

    out: list[Workload] = [
        ("agent prompts", "realistic", sum(map(utf8_size, requests)), scan_all(cold, requests)),
        ("agent next turn (cache)", "realistic", sum(map(utf8_size, followups)), scan_all(warm, followups)),
    ]

    def scan_one(text: str) -> Callable[[], object]:
        return lambda: cold.scan_texts([text])

    for name, text in adversarial(size).items():
        out.append((name, "adversarial", len(text.encode()), scan_one(text)))
    return out


@dataclass(frozen=True, slots=True)
class Result:
    workload: str
    group: str
    bytes: int
    median_s: float
    min_s: float
    mb_per_s: float
    vs_agent_prompts: float  # time per byte, relative to the agent prompts


def run(size: int, rounds: int) -> list[Result]:
    chosen = workloads(size)
    samples: dict[str, list[float]] = {name: [] for name, *_ in chosen}
    for r in range(rounds):
        order = chosen if r % 2 == 0 else list(reversed(chosen))
        for name, _, _, scan in order:
            started = time.perf_counter()
            scan()
            samples[name].append(time.perf_counter() - started)
    name0, _, bytes0, _ = chosen[0]
    per_byte = statistics.median(samples[name0]) / bytes0
    results = []
    for name, group, size_bytes, _ in chosen:
        median = statistics.median(samples[name])
        results.append(
            Result(
                name, group, size_bytes, median, min(samples[name]), size_bytes / median / 1e6,
                median / size_bytes / per_byte,
            )
        )  # fmt: skip
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--size-kb", type=int, default=1024, help="size of each workload (KiB)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (the median is reported)")
    ap.add_argument("--tiny", action="store_true", help="64 KiB, one round: a smoke run")
    ap.add_argument("--json", type=Path, default=None, help="where to write the JSON results")
    args = ap.parse_args(argv)
    size, rounds = (64 * 1024, 1) if args.tiny else (args.size_kb * 1024, args.rounds)
    results = run(size, rounds)
    table = Table(title=f"privacy scan throughput (median of {rounds} rounds, all built-in detectors)")
    for column in ("workload", "group", "MB", "ms", "MB/s", "time/byte vs agent prompts"):
        table.add_column(column, justify="left" if column in ("workload", "group") else "right")
    for r in results:
        table.add_row(
            r.workload, r.group, f"{r.bytes / 1e6:.2f}", f"{r.median_s * 1e3:.1f}", f"{r.mb_per_s:.1f}",
            f"{r.vs_agent_prompts:.2f}x",
        )  # fmt: skip
    Console(width=120).print(table)
    worst = max((r for r in results if r.group == "adversarial"), key=lambda r: r.vs_agent_prompts)
    print(f"slowest adversarial input: {worst.workload} ({worst.vs_agent_prompts:.2f}x the time per byte)")
    out = args.json or RESULTS_DIR / f"scan-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "schema": "hybridgate-bench-scan/1",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": h.cpu_model(),
        "size_bytes": size,
        "rounds": rounds,
    }
    document = {"meta": meta, "results": [asdict(r) for r in results], "worst_adversarial": asdict(worst)}
    out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the performance report says about the machine and the software it measured."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import _harness as h

ROOT = Path(__file__).resolve().parents[1]
# The packages whose versions matter to the numbers (the server's stack, the local runtime, clients).
PACKAGES = (
    "hybridgate",
    "uvicorn",
    "uvloop",
    "httptools",
    "orjson",
    "pydantic",
    "ddsketch",
    "prometheus-client",
    "opentelemetry-sdk",
    "llama-cpp-python",
    "openai",
    "aiohttp",
)


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        return None
    return None


def _cpu_detail() -> str:
    """Family, model and clock of the first CPU (the model name alone is "AMD EPYC" on some VMs)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return platform.machine()
    mhz = fields.get("cpu MHz", "")
    clock = f", {float(mhz):.0f} MHz" if mhz.replace(".", "", 1).isdigit() else ""
    family, model = fields.get("cpu family", "?"), fields.get("model", "?")
    return f"{platform.machine()}, family {family} model {model}{clock}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def describe() -> dict[str, Any]:
    """The machine, the software and the moment, before the benchmarks run."""
    commit = _git("rev-parse", "--short=12", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "started_unix": round(time.time(), 1),
        "cpu_model": h.cpu_model(),
        "cpu_detail": _cpu_detail(),
        "cpus": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": sys.version.split()[0],
        "event_loop": h.loop_name(),
        "commit": (commit + ("+local changes" if dirty else "")) if commit else "unknown",
        "packages": {p: _version(p) for p in PACKAGES},
        "load_average_start": h.load_average(),
    }


def after() -> dict[str, Any]:
    """What changed while they ran (how long, and how busy the machine was at the end)."""
    return {"finished_unix": round(time.time(), 1), "load_average_end": h.load_average()}

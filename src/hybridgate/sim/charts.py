"""PNG charts of a simulation report (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _save(fig: Any, outdir: Path, name: str) -> str:
    file = f"{name}.png"
    fig.tight_layout()
    # A fixed date keeps the PNG bytes, and so the report, the same for the same seed.
    fig.savefig(outdir / file, dpi=90, metadata={"Software": None, "Creation Time": None})
    plt.close(fig)
    return file


def _latency(runs: Mapping[str, Any], outdir: Path) -> str:
    routers = list(runs)
    classes = sorted({c for r in runs.values() for c in r["classes"]})
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 3.6), squeeze=False)
    for ax, cls in zip(axes[0], classes, strict=True):
        for q, marker in (("p50_s", "o"), ("p95_s", "s"), ("p99_s", "^")):
            values = [runs[r]["classes"][cls][q] or 0.0 for r in routers]
            ax.plot(routers, values, marker=marker, linestyle="", label=q.removesuffix("_s"))
        budget = runs[routers[0]]["classes"][cls]["p95_budget_s"]
        ax.axhline(budget, color="red", linewidth=1, label="p95 budget")
        ax.set_yscale("log")
        ax.set_title(cls)
        ax.set_ylabel("seconds")
        ax.tick_params(axis="x", rotation=45)
    axes[0][0].legend(fontsize=8)
    return _save(fig, outdir, "latency")


def _slo(runs: Mapping[str, Any], outdir: Path) -> str:
    routers = list(runs)
    classes = sorted({c for r in runs.values() for c in r["classes"]})
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / max(1, len(classes))
    for k, cls in enumerate(classes):
        values = [100 * (runs[r]["classes"][cls]["slo_attainment"] or 0.0) for r in routers]
        ax.bar([i + k * width for i in range(len(routers))], values, width, label=cls)
    ax.axhline(95, color="red", linewidth=1)
    ax.set_xticks([i + width * (len(classes) - 1) / 2 for i in range(len(routers))], routers, rotation=30)
    ax.set_ylabel("% within p95 budget")
    ax.legend(fontsize=8)
    return _save(fig, outdir, "slo")


def _cost(runs: Mapping[str, Any], outdir: Path) -> str:
    routers = list(runs)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    local = [runs[r]["cost_usd"].get("local", 0.0) for r in routers]
    cloud = [runs[r]["cost_usd"].get("cloud", 0.0) for r in routers]
    ax.bar(routers, local, label="local")
    ax.bar(routers, cloud, bottom=local, label="cloud")
    ax.set_ylabel("USD")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    return _save(fig, outdir, "cost")


def _queues(runs: Mapping[str, Any], outdir: Path) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name, run in runs.items():
        series = run["series"]
        depths = series["queue_depth"].values()
        total = [sum(v) for v in zip(*depths, strict=True)] if depths else []
        if total:
            ax.plot(series["t_s"], total, label=name, linewidth=1)
    ax.set_xlabel("simulated seconds")
    ax.set_ylabel("waiting on local slots")
    ax.legend(fontsize=8)
    return _save(fig, outdir, "queues")


def _cloud_share(runs: Mapping[str, Any], outdir: Path) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name, run in runs.items():
        series = run["series"]
        local, cloud = series["answers_by_placement"]["local"], series["answers_by_placement"]["cloud"]
        share = [c / (c + n) if c + n else None for n, c in zip(local, cloud, strict=True)]
        ax.plot(series["t_s"], [s if s is not None else float("nan") for s in share], label=name, linewidth=1)
    ax.set_xlabel("simulated seconds")
    ax.set_ylabel("share answered by the cloud")
    ax.legend(fontsize=8)
    return _save(fig, outdir, "cloud_share")


def draw_all(runs: Mapping[str, Any], outdir: Path) -> dict[str, str]:
    return {
        "latency": _latency(runs, outdir),
        "slo": _slo(runs, outdir),
        "cost": _cost(runs, outdir),
        "queues": _queues(runs, outdir),
        "cloud_share": _cloud_share(runs, outdir),
    }

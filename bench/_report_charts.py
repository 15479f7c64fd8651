"""The performance report's charts (PNG, matplotlib), drawn from each benchmark's JSON.

Without matplotlib (``pip install 'hybridgate[sim]'``) the page is written without charts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from _report_sections import _get

if importlib.util.find_spec("matplotlib") is not None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    HAVE_MATPLOTLIB = True
else:  # pragma: no cover - matplotlib is a dev dependency
    HAVE_MATPLOTLIB = False

BLUE, ORANGE, GREY = "#3b6ea8", "#e08a2c", "#8a8a8a"


def _value(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else 0.0


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pairs(
    ax: Axes, labels: list[str], left: list[float], right: list[float], names: tuple[str, str]
) -> None:
    """Two bars per label (side by side), each with its value on top."""
    xs = range(len(labels))
    width = 0.38
    for offset, values, color, name in (
        (-width / 2, left, GREY, names[0]),
        (width / 2, right, BLUE, names[1]),
    ):
        bars = ax.bar([x + offset for x in xs], values, width, label=name, color=color)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.legend(fontsize=8)


def overhead(data: Mapping[str, Any], out: Path) -> list[Path]:
    labels, direct, gateway = [], [], []
    for label, mode, measure in (
        ("JSON p50", "non_stream", "total"),
        ("JSON p99", "non_stream", "total"),
        ("stream TTFT p50", "stream", "ttft"),
        ("stream total p50", "stream", "total"),
    ):
        q = "p99" if label.endswith("p99") else "p50"
        labels.append(label)
        direct.append(_value(_get(data, "c1", mode, "direct", measure, q)))
        gateway.append(_value(_get(data, "c1", mode, "gateway", measure, q)))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    _pairs(ax, labels, direct, gateway, ("straight to the upstream", "through the gateway"))
    ax.set_ylabel("ms (c=1)")
    ax.set_title("Gateway overhead: the same requests, alternating", fontsize=10)
    return [_save(fig, out / "overhead.png")]


def hedging(data: Mapping[str, Any], out: Path) -> list[Path]:
    modes = [(m, _get(data, "modes", m)) for m in ("stream", "json")]
    present = [(m, d) for m, d in modes if d is not None]
    if not present:
        return []
    fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3.2), squeeze=False)
    for ax, (mode, d) in zip(axes[0], present, strict=True):
        measure = d.get("headline", "ttft" if mode == "stream" else "total")
        qs = ["p50", "p95", "p99"]
        _pairs(
            ax,
            qs,
            [_value(_get(d, "latency_ms", measure, "unhedged", q)) for q in qs],
            [_value(_get(d, "latency_ms", measure, "hedged", q)) for q in qs],
            ("unhedged", "hedged"),
        )
        ax.set_ylabel("ms")
        ax.set_title(f"{'first token' if measure == 'ttft' else 'whole answer'} ({mode})", fontsize=10)
    return [_save(fig, out / "hedging.png")]


def spillover(data: Mapping[str, Any], out: Path) -> list[Path]:
    arms = list((data.get("by_phase") or {}).keys())
    if not arms:
        return []
    calm = [100 * _value(_get(data, "by_phase", a, "calm", "met_share")) for a in arms]
    burst = [100 * _value(_get(data, "by_phase", a, "burst", "met_share")) for a in arms]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    _pairs(ax, arms, calm, burst, ("calm", "burst"))
    ax.set_ylabel("% of requests within budget")
    ax.set_ylim(0, 110)
    ax.set_title("Spillover: requests meeting the budget, by arm", fontsize=10)
    return [_save(fig, out / "spillover.png")]


def simulator(data: Mapping[str, Any], out: Path) -> list[Path]:
    areas = sorted((data.get("time_by_area_percent") or {}).items(), key=lambda kv: kv[1])
    if not areas:
        return []
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bars = ax.barh([a for a, _ in areas], [_value(v) for _, v in areas], color=BLUE)
    ax.bar_label(bars, fmt="%.1f%%", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("% of the simulator's time (cProfile own time)")
    ax.set_title("Simulator: where the time per request goes", fontsize=10)
    return [_save(fig, out / "simulator.png")]


def scan(data: Mapping[str, Any], out: Path) -> list[Path]:
    results = data.get("results") or []
    if not results:
        return []
    ordered = sorted(results, key=lambda r: _value(r.get("mb_per_s")))
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(ordered) + 1.2))
    colors = [ORANGE if r.get("group") == "adversarial" else BLUE for r in ordered]
    ax.barh([r["workload"] for r in ordered], [_value(r.get("mb_per_s")) for r in ordered], color=colors)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("MB/s (blue: realistic, orange: adversarial)")
    ax.set_title("Content scan throughput", fontsize=10)
    return [_save(fig, out / "scan.png")]


def sim_vs_real(data: Mapping[str, Any], out: Path) -> list[Path]:
    labels, real, sim = [], [], []
    for cls, entry in (_get(data, "comparison", "classes") or {}).items():
        for metric in ("p50_s", "p95_s"):
            m = _get(entry, "metrics", metric)
            if m is not None:
                labels.append(f"{cls}\n{metric[:3]}")
                real.append(1000 * _value(m.get("real")))
                sim.append(1000 * _value(m.get("sim")))
    if not labels:
        return []
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    _pairs(ax, labels, real, sim, ("real gateway", "simulator"))
    ax.set_ylabel("ms")
    ax.set_title("Simulation vs reality: the same workload, seed and configuration", fontsize=10)
    return [_save(fig, out / "sim_vs_real.png")]


CHARTS: dict[str, Callable[[Mapping[str, Any], Path], list[Path]]] = {
    "overhead": overhead,
    "hedging": hedging,
    "spillover": spillover,
    "simulator": simulator,
    "scan": scan,
    "sim_vs_real": sim_vs_real,
}


def draw(name: str, data: Mapping[str, Any], out: Path) -> list[Path]:
    """The charts of benchmark ``name`` in ``out`` (none without matplotlib or a chart for it)."""
    chart = CHARTS.get(name)
    if chart is None or not HAVE_MATPLOTLIB:
        return []
    return chart(data, out)

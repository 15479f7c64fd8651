"""The performance report's Markdown: one section per benchmark, from that benchmark's own JSON.

Every renderer reads only what its benchmark wrote in this run, and returns its Markdown and the
targets it judged (for the summary table at the top of the page). A key that a benchmark did not
write is shown as "-", never invented.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hybridgate import markdown

# The shared yardstick's reference run (../shared/bench/overhead/README.md): the same harness on
# the same kind of machine, nginx and the LiteLLM proxy in place of the gateway. Context for the
# overhead section, not a measurement of this run.
YARDSTICK = "nginx 1.22.1 adds 0.12-0.13 ms at p50, the LiteLLM proxy 1.110.2 about 11.4 ms"


TITLES = {
    "overhead": "Gateway overhead",
    "telemetry": "Telemetry",
    "transport": "Transport",
    "planning": "Planning",
    "scan": "Content scan",
    "hedging": "Hedging",
    "spillover": "Spillover",
    "simulator": "Simulator",
    "sim_vs_real": "Simulation vs reality",
}


class Target(NamedTuple):
    benchmark: str
    target: str
    measured: str
    met: bool | None  # None: not judged (a missing value)


class Section(NamedTuple):
    name: str
    markdown: str
    targets: tuple[Target, ...] = ()


def _get(data: Any, *path: str | int) -> Any:
    """``data[path[0]][path[1]]...``, or None where any step is missing."""
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def num(value: Any, digits: int = 2, unit: str = "") -> str:
    """A number for a table cell ("-" when missing), thousands separated."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip() if unit else text


def pct(value: Any, digits: int = 1) -> str:
    """A share (0..1) as a percentage."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{100 * value:.{digits}f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table; ``align`` per column: l or r (default: first left, the rest right)."""
    return "\n".join(markdown.table(header, rows, align or "l" + "r" * (len(header) - 1)))


def met_word(met: bool | None) -> str:
    return "**met**" if met is True else "**missed**" if met is False else "not judged"


def _images(charts: Sequence[str]) -> str:
    return "\n\n".join(f"![{Path(c).stem}]({c})" for c in charts)


def _warnings(data: Mapping[str, Any]) -> str:
    warnings = data.get("warnings") or []
    if not warnings:
        return ""
    return "Warnings from the run:\n\n" + "\n".join(f"- {w}" for w in warnings)


def _spread(added: Any) -> str:
    """A difference's range over the rounds: [min..max]."""
    return f"[{num(_get(added, 'round_min_ms'), 3)}..{num(_get(added, 'round_max_ms'), 3)}]"


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


# --------------------------------------------------------------------------- sections


def overhead(data: Mapping[str, Any], charts: Sequence[str]) -> Section:
    rows = []
    for label, mode, measure in (
        ("non-streaming, total", "non_stream", "total"),
        ("streaming, first token", "stream", "ttft"),
        ("streaming, total (64 events)", "stream", "total"),
    ):
        phase = _get(data, "c1", mode)
        added = _get(phase, "added", measure)
        spread = _spread(added)
        rows.append(
            [
                label,
                num(_get(phase, "direct", measure, "p50"), 3),
                num(_get(phase, "gateway", measure, "p50"), 3),
                f"**{num(_get(added, 'p50_ms'), 3)}** {spread}",
                num(_get(added, "p90_ms"), 3),
                num(_get(added, "p99_ms"), 3),
                num(_get(phase, "gateway_cpu_ms_per_request"), 3) if measure == "total" else "",
            ]
        )
    c1 = table(
        [
            "c=1 (ms)",
            "direct p50",
            "gateway p50",
            "added p50 [round min..max]",
            "added p90",
            "added p99",
            "gateway CPU ms/req",
        ],
        rows,
    )
    sweep: dict[int, dict[str, Any]] = {}
    for level in data.get("sweep") or []:
        sweep.setdefault(level["concurrency"], {})[level["target"]] = level
    sweep_rows = []
    for c, pair in sorted(sweep.items()):
        direct, gw = pair.get("direct", {}), pair.get("gateway", {})
        sweep_rows.append(
            [
                f"c={c}",
                num(_get(direct, "rps"), 0),
                num(_get(gw, "rps"), 0),
                f"{num(_get(gw, 'latency_ms', 'p50'), 2)} / {num(_get(gw, 'latency_ms', 'p99'), 2)}",
                num(_get(gw, "gateway_cpu_ms_per_request"), 3),
                str(_get(gw, "errors") if _get(gw, "errors") is not None else "-"),
            ]
        )
    closed = table(
        [
            "closed loop",
            "direct req/s",
            "gateway req/s",
            "gateway p50 / p99 ms",
            "gateway CPU ms/req",
            "errors",
        ],
        sweep_rows,
    )
    checks = data.get("checks", {})
    memory = data.get("memory", {})
    once = "yes" if checks.get("ok") and _get(checks, "upstream", "match") else "no"
    facts = (
        f"Peak RSS of the gateway: {num(memory.get('peak_rss_mb'), 1)} MB. Every request valid and "
        f"seen by the mock exactly once: **{once}** "
        f"({num(_get(checks, 'upstream', 'seen'), 0)} upstream requests). Layout: "
        f"{_get(data, 'meta', 'layout', 'note') or '-'}. For scale, on the shared yardstick's reference run "
        f"{YARDSTICK} (not measured here; `../shared/bench/overhead/`)."
    )
    targets = tuple(
        Target(
            "overhead",
            f"c=1 added {what} < {num(_get(data, 'targets', key, 'limit'), 0)} ms",
            f"{num(_get(data, 'targets', key, 'value'), 3)} ms",
            _get(data, "targets", key, "met"),
        )
        for key, what in (("added_p50_ms", "p50"), ("added_p99_ms", "p99"))
    )
    text = _join(
        "## Gateway overhead",
        "`bench/overhead.py`: the same request sent straight to a mock upstream (no service time) and "
        "through the gateway, "
        "alternating pairs, rounds flipping the order; the gateway's full policy on every request "
        "(client key, context, content scan, plan, explanation headers, SLO metrics).",
        c1,
        closed,
        facts,
        _images(charts),
        _warnings(data),
    )
    return Section("overhead", text, targets)


def telemetry(data: Mapping[str, Any], charts: Sequence[str]) -> Section:
    rows = []
    for label, mode, measure in (
        ("non-streaming, total", "non_stream", "total"),
        ("streaming, first token", "stream", "ttft"),
        ("streaming, total", "stream", "total"),
    ):
        added = _get(data, mode, "added", measure)
        cpu = _get(data, mode, "cpu_ms_per_request")
        rows.append(
            [
                label,
                num(_get(data, mode, "latency_ms", measure, "off", "p50"), 3),
                num(_get(data, mode, "latency_ms", measure, "on", "p50"), 3),
                f"**{num(_get(added, 'p50_ms'), 3)}** {_spread(added)}",
                f"{num(_get(cpu, 'off'), 3)} / {num(_get(cpu, 'on'), 3)}" if measure == "total" else "",
            ]
        )
    checks = data.get("checks", {})
    target = data.get("target", {})
    targets = (
        Target(
            "telemetry",
            f"traces + decision log add < {num(target.get('added_p50_ms'), 1)} ms p50",
            f"{num(_get(data, 'non_stream', 'added', 'total', 'p50_ms'), 3)} ms",
            target.get("met"),
        ),
    )
    text = _join(
        "## Telemetry",
        "`bench/telemetry.py`: two gateways, identical but for tracing (every trace sampled, to the "
        "JSON-lines file exporter) and the decision log, "
        "driven side by side at c=1.",
        table(
            ["c=1 (ms)", "off p50", "on p50", "added p50 [round min..max]", "gateway CPU ms/req off / on"],
            rows,
        ),
        f"Every request logged and traced: **{'yes' if checks.get('ok') else 'no'}** "
        f"({num(checks.get('decision_records'), 0)} decision records, {num(checks.get('spans'), 0)} spans).",
        _images(charts),
        _warnings(data),
    )
    return Section("telemetry", text, targets)


def transport(data: Mapping[str, Any], charts: Sequence[str]) -> Section:
    results = data.get("results", {})
    rows = [
        [name, num(_get(r, "cpu_us_per_request"), 1), num(_get(r, "wall_us_per_request"), 1)]
        for name, r in results.items()
    ]
    ratio = data.get("cpu_ratio")
    text = _join(
        "## Transport",
        "`bench/transport.py`: hybridgate's own HTTP/1.1 upstream transport and aiohttp's client against "
        "the same upstream, "
        f"alternating rounds, on {data.get('loop', '-')}.",
        table(["client", "CPU µs per request", "wall µs per request"], rows),
        f"aiohttp needs **{num(ratio, 2)}x** the CPU per request.",
        _images(charts),
    )
    return Section("transport", text)


def planning(data: Mapping[str, Any], charts: Sequence[str]) -> Section:
    rows = []
    for key, label in (
        ("plan", "one plan"),
        ("plan_and_headers", "plan + explanation headers"),
        ("snapshot", "health snapshot"),
    ):
        r = data.get(key)
        if r is None:
            continue
        rows.append([label, *(num(r.get(q), 1) for q in ("p50_us", "p90_us", "p99_us", "max_us"))])
    limit = data.get("target_p99_us")
    p99 = _get(data, "plan", "p99_us")
    met = p99 < limit if isinstance(p99, int | float) and isinstance(limit, int | float) else None
    targets = (Target("planning", f"plan p99 < {num(limit, 0)} µs", f"{num(p99, 1)} µs", met),)
    text = _join(
        "## Planning",
        f"`bench/planning.py` on `examples/routing.yaml`: {data.get('deployments', '-')} deployments, "
        f"{data.get('classes', '-')} "
        f"classes; {num(data.get('plans'), 0)} plans of every class's requests against live-looking queues, "
        "clean and sensitive data mixed, each timed on its own (content scan excluded). The explanation's "
        "order and summary are built when first read; the second row adds them, as the server reads them "
        "for every response's headers.",
        table(["µs", "p50", "p90", "p99", "max"], rows),
        _images(charts),
    )
    return Section("planning", text, targets)


def scan(data: Mapping[str, Any], charts: Sequence[str]) -> Section:
    results = data.get("results") or []
    rows = [
        [r["workload"], r["group"], num(r.get("mb_per_s"), 1), f"{num(r.get('vs_agent_prompts'), 2)}x"]
        for r in results
    ]
    worst = data.get("worst_adversarial") or {}
    rate = worst.get("mb_per_s")
    per_mb = 1.0 / rate if isinstance(rate, int | float) and rate > 0 else None
    targets = (
        Target(
            "scan",
            "1 MB of adversarial input in < 1 s",
            f"{num(per_mb, 2)} s ({worst.get('workload', '-')})",
            per_mb < 1.0 if per_mb is not None else None,
        ),
    )
    size = _get(data, "meta", "size_bytes")
    text = _join(
        "## Content scan",
        f"`bench/scan.py`: inputs of {num(size / 1e6 if isinstance(size, int) else None, 2)} MB each, "
        "scanned in alternating "
        f"rounds ({_get(data, 'meta', 'rounds') or '-'}; the median is shown). The last column is the time "
        "per byte relative to realistic agent prompts: a linear scan keeps every adversarial input within "
        "a small factor.",
        table(["input", "kind", "MB/s", "time per byte vs agent prompts"], rows, "llrr"),
        _images(charts),
    )
    return Section("scan", text, targets)


def hedging(data: Mapping[str, Any], charts: Sequence[str]) -> Section:
    rows = []
    targets = []
    for mode, label in (("stream", "streamed (first token)"), ("json", "whole answers (total)")):
        m = _get(data, "modes", mode)
        if m is None:
            continue
        measure = m.get("headline", "ttft" if mode == "stream" else "total")
        lat = _get(m, "latency_ms", measure)
        ci = _get(lat, "p99_cut_95ci") or [None, None]
        extra = _get(m, "arms", "hedged", "extra_pct")
        rows.append(
            [
                label,
                num(_get(m, "pairs"), 0),
                num(_get(lat, "unhedged", "p50"), 0),
                num(_get(lat, "hedged", "p50"), 0),
                num(_get(lat, "unhedged", "p99"), 0),
                num(_get(lat, "hedged", "p99"), 0),
                f"**{pct(_get(lat, 'p99_cut'))}** [{pct(ci[0])}..{pct(ci[1])}]",
                f"**{num(extra, 2)}%**",
            ]
        )
        t = _get(data, "targets", mode) or {}
        targets.append(
            Target(
                "hedging",
                f"{label}: p99 cut >= 40% for <= 5% extra requests",
                f"{pct(t.get('p99_cut'))} for {num(t.get('extra_pct'), 2)}%",
                t.get("met"),
            )
        )
    text = _join(
        "## Hedging",
        "`bench/hedging.py`: two SANDBOX upstreams with the heavy-tailed `cloud-heavy-tail` profile; two "
        "gateways that differ "
        "only in the class's `hedge: true`, every request sent to both at the same moment; extra upstream "
        "requests counted in the sandboxes' own logs.",
        table(
            [
                "mode",
                "requests per arm",
                "p50 unhedged ms",
                "p50 hedged ms",
                "p99 unhedged ms",
                "p99 hedged ms",
                "p99 cut [95% CI]",
                "extra upstream requests",
            ],
            rows,
        ),
        _images(charts),
        _warnings(data),
    )
    return Section("hedging", text, tuple(targets))


def _calibration(data: Mapping[str, Any]) -> str:
    c = data.get("calibration") or {}
    rates = f"calm {num(c.get('calm_rate'), 1)}/s, bursts {num(c.get('burst_rate'), 1)}/s"
    if not c.get("capacity_per_s"):
        return f"Arrivals: {rates} (given)."
    return (
        f"Arrivals: {rates}, loads of the local runtime's capacity measured first "
        f"({num(c.get('capacity_per_s'), 1)} requests/s alone, p50 {num(c.get('local_alone_p50_ms'), 0)} ms)."
    )


def spillover(data: Mapping[str, Any], charts: Sequence[str]) -> Section:
    rows = []
    for arm, a in (data.get("arms") or {}).items():
        phases = _get(data, "by_phase", arm) or {}
        rows.append(
            [
                arm,
                num(a.get("requests"), 0),
                f"**{pct(a.get('met_share'))}**",
                num(_get(a, "latency_ms", "p95"), 0),
                pct(a.get("local_share")),
                num(a.get("refused"), 0),
                f"{pct(_get(phases, 'calm', 'met_share'))} / {pct(_get(phases, 'calm', 'local_share'))}",
                f"{pct(_get(phases, 'burst', 'met_share'))} / {pct(_get(phases, 'burst', 'local_share'))}",
            ]
        )
    ratio = _get(data, "ratios", "met_share")
    settings = _get(data, "meta", "settings") or {}
    targets = tuple(
        Target(
            "spillover",
            name.replace("_", " "),
            num(t.get("value"), 3) + f" (limit {num(t.get('limit'), 2)})",
            t.get("met"),
        )
        for name, t in (data.get("targets") or {}).items()
    )
    text = _join(
        "## Spillover",
        "`bench/spillover.py`: a bursty local-first workload against the real llama.cpp runtime (one slot) "
        "with the SANDBOX "
        f"cloud as the other candidate; budget p95 {num(settings.get('p95_ms'), 0)} ms, first token "
        f"{num(settings.get('ttft_ms'), 0)} ms; the same seeded trace replayed against three gateways that "
        f"differ only in the class's budget; {num(settings.get('rounds'), 0)} round(s), arms alternating. "
        + _calibration(data),
        table(
            [
                "arm",
                "requests",
                "met budget",
                "p95 ms",
                "served locally",
                "refused",
                "calm: met / local",
                "burst: met / local",
            ],
            rows,
        ),
        f"Spillover meets the budget for **{num(_get(ratio, 'round_median'), 2)}x** as many requests as "
        f"failover only (per-round median; range {num(_get(ratio, 'round_min'), 2)}-"
        f"{num(_get(ratio, 'round_max'), 2)}).",
        _images(charts),
        _warnings(data),
    )
    return Section("spillover", text, targets)


def simulator(data: Mapping[str, Any], charts: Sequence[str]) -> Section:
    run = data.get("run") or {}
    per_cpu_s, per_s = run.get("requests_per_cpu_s"), run.get("requests_per_s")

    def million(rate: Any) -> float | None:
        return 1_000_000 / rate if isinstance(rate, int | float) and rate > 0 else None

    rows = [
        [
            num(run.get("requests"), 0),
            num(run.get("simulated_s"), 0),
            num(run.get("cpu_s"), 1),
            num(run.get("wall_s"), 1),
            f"**{num(per_cpu_s, 0)}**",
            num(per_s, 0),
            num(run.get("us_per_request"), 1),
            f"**{num(million(per_cpu_s), 0, 's')}** ({num(million(per_s), 0, 's')} wall)",
        ]
    ]
    areas = data.get("time_by_area_percent") or {}
    area_rows = [[area, num(share, 1)] for area, share in sorted(areas.items(), key=lambda kv: -kv[1])]
    targets = (
        Target(
            "simulator",
            "1M simulated requests in < 60 s of one core",
            f"{num(million(per_cpu_s), 0)} s of CPU ({num(per_cpu_s, 0)} requests per CPU second)",
            data.get("target_met"),
        ),
    )
    header = ["requests", "simulated s", "CPU s", "wall s", "per CPU s", "per s (wall)", "µs CPU/request"]
    text = _join(
        "## Simulator",
        "`bench/simulator.py`: `hybridgate simulate`'s policy run (the real planner, live health, "
        "breakers, retry policy and budget, cost model on every simulated request) over "
        f"`bench/sim/workload-dense.yaml`, pinned to one core ({data.get('pinned', '-')}); judged on "
        "the simulator's own CPU time (wall time too, when nothing else shares the core).",
        table([*header, "1M requests in"], rows),
        (
            f"Where the time goes (cProfile own time, {num(data.get('profile_requests'), 0)} requests):\n\n"
            + table(["area", "% of time"], area_rows)
        )
        if area_rows
        else "",
        _images(charts),
        _warnings(data),
    )
    return Section("simulator", text, targets)


def _seconds_or_share(metric: str, value: Any) -> str:
    if metric.endswith("_s"):
        return num(value * 1000 if isinstance(value, int | float) else None, 1, "ms")
    if metric in ("local_share", "slo_attainment"):
        return pct(value)
    return num(value, 2)


def _difference(metric: str, m: Mapping[str, Any]) -> str:
    """sim - real: relative for times, in points for shares."""
    if metric in ("local_share", "slo_attainment"):
        diff = m.get("abs_diff")
        return f"{100 * diff:+.1f} pts" if isinstance(diff, int | float) else "-"
    rel = m.get("rel_diff")
    return f"{100 * rel:+.1f}%" if metric.endswith("_s") and isinstance(rel, int | float) else "-"


def sim_vs_real(data: Mapping[str, Any], charts: Sequence[str]) -> Section:
    rows = []
    for cls, entry in (_get(data, "comparison", "classes") or {}).items():
        for metric, m in (entry.get("metrics") or {}).items():
            ok = m.get("ok")
            rows.append(
                [
                    cls,
                    metric,
                    _seconds_or_share(metric, m.get("real")),
                    _seconds_or_share(metric, m.get("sim")),
                    _difference(metric, m),
                    str(m.get("tolerance") or "shown only"),
                    "yes" if ok is True else "**no**" if ok is False else "",
                ]
            )
    overall = _get(data, "comparison", "overall_local_share") or {}
    if overall:
        rows.append(
            [
                "all",
                "local_share",
                pct(overall.get("real")),
                pct(overall.get("sim")),
                _difference("local_share", overall),
                str(overall.get("tolerance") or ""),
                "yes" if overall.get("ok") is True else "**no**" if overall.get("ok") is False else "",
            ]
        )
    agreement = data.get("agreement") or {}
    sensitivity = data.get("sensitivity") or {}
    rejected = [name for name, v in sensitivity.items() if isinstance(v, Mapping) and v.get("ok") is False]
    settings = _get(data, "meta", "settings") or {}
    drift = _get(data, "stability", "drift")
    targets = (
        Target(
            "sim_vs_real",
            "simulated percentiles and split within the documented tolerance",
            "agree" if agreement.get("ok") else "disagree",
            agreement.get("ok"),
        ),
        Target(
            "sim_vs_real",
            "a local model 2x off (slower, faster) is rejected",
            f"{len(rejected)} of {len(sensitivity)} rejected",
            bool(sensitivity) and len(rejected) == len(sensitivity),
        ),
    )
    disturbed = agreement.get("disturbed")
    text = _join(
        "## Simulation vs reality",
        "`bench/sim_vs_real.py`: the simulator's own seeded workload "
        f"({num(settings.get('duration_s'), 0)} s, {num(_get(data, 'checks', 'requests'), 0)} requests) sent "
        "open loop with the official `openai` SDK to a real `hybridgate serve` (the real llama.cpp runtime "
        "and a SANDBOX cloud), and simulated with the same configuration and seed, the local runtime "
        "modelled by the profile `hybridgate bench local` measured minutes before and the cloud by the "
        "same SANDBOX profile file. The tolerance and why: "
        "[simulator.md](simulator.md#simulation-vs-reality).",
        table(["class", "metric", "real", "sim", "sim vs real", "tolerance", "agrees"], rows, "llrrrlr"),
        f"Agreement within tolerance: **{'yes' if agreement.get('ok') else 'no'}**; the same comparison with "
        f"the local profile made 2x slower and 2x faster: {', '.join(rejected) or 'none'} rejected. Machine "
        f"{'**disturbed** (' + '; '.join(agreement.get('reasons') or []) + ')' if disturbed else 'stable'}; "
        f"`bench local` after / before {num(drift, 2)}x.",
        _images(charts),
        _warnings(data),
    )
    return Section("sim_vs_real", text, targets)


def generic(name: str, data: Mapping[str, Any], charts: Sequence[str]) -> Section:
    """A benchmark without a renderer of its own: its targets and top-level numbers."""
    rows = [[k, num(v, 3)] for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    targets = tuple(
        Target(name, key.replace("_", " "), num(_get(t, "value"), 3), _get(t, "met"))
        for key, t in (data.get("targets") or {}).items()
        if isinstance(t, Mapping)
    )
    return Section(
        name,
        _join(f"## {TITLES.get(name, name)}", table(["value", ""], rows) if rows else "", _images(charts)),
        targets,
    )


RENDERERS: dict[str, Callable[[Mapping[str, Any], Sequence[str]], Section]] = {
    "overhead": overhead,
    "telemetry": telemetry,
    "transport": transport,
    "planning": planning,
    "scan": scan,
    "hedging": hedging,
    "spillover": spillover,
    "simulator": simulator,
    "sim_vs_real": sim_vs_real,
}


def render(name: str, data: Mapping[str, Any], charts: Sequence[str], note: str = "") -> Section:
    renderer = RENDERERS.get(name)
    section = renderer(data, charts) if renderer is not None else generic(name, data, charts)
    if note:
        section = section._replace(markdown=section.markdown + f"\n\n**This run did not pass:** {note}")
    return section


def not_run(name: str, why: str) -> Section:
    return Section(name, f"## {TITLES.get(name, name)}\n\nNot in this report: {why}.")


# --------------------------------------------------------------------------- the page


def machine_table(info: Mapping[str, Any]) -> str:
    packages = info.get("packages") or {}
    started, finished = info.get("started_unix"), info.get("finished_unix")
    took = (
        f"{(finished - started) / 60:.1f} minutes"
        if isinstance(started, float) and isinstance(finished, float)
        else "-"
    )
    rows = [
        ["date", str(info.get("date", "-"))],
        ["CPU", f"{info.get('cpu_model', '-')} ({info.get('cpu_detail', '-')})"],
        ["cores", f"{info.get('cpus', '-')} ({info.get('cpus_allowed', '-')} allowed)"],
        ["memory", f"{info.get('memory_gib', '-')} GiB"],
        ["OS, kernel", f"{info.get('os', '-')}, {info.get('kernel', '-')}"],
        ["Python, event loop", f"{info.get('python', '-')}, {info.get('event_loop', '-')}"],
        ["commit", f"`{info.get('commit', '-')}`"],
        ["packages", ", ".join(f"{p} {v}" for p, v in packages.items())],
        [
            "load average (1, 5, 15 min) at start / end",
            f"{info.get('load_average_start', '-')} / {info.get('load_average_end', '-')}",
        ],
        ["the whole run took", took],
    ]
    return table(["", ""], rows, "ll")


def summary_table(sections: Sequence[Section]) -> str:
    rows = [[t.benchmark, t.target, t.measured, met_word(t.met)] for s in sections for t in s.targets]
    return table(["benchmark", "target", "measured", ""], rows, "lllr")


def page(info: Mapping[str, Any], sections: Sequence[Section], preset: str, results: Path) -> str:
    preset_note = {
        "full": "full-size runs",
        "quick": "the benchmarks' quick presets: fewer samples, so tails are noisier than in a full run",
        "smoke": "smoke-sized runs: a check that everything runs, the numbers mean little",
    }[preset]
    head = _join(
        "# Performance",
        "<!-- Generated by `make bench` (bench/report.py). Do not edit by hand: run it again. -->",
        f"Every number on this page was measured in one run of `make bench` ({preset_note}), on the machine "
        "below; nothing is asserted in tests. Where a benchmark compares two things (a gateway against the "
        "upstream alone, one configuration against another), both were measured in the same run, side by "
        "side or alternating, and the page gives the difference or ratio: these machines are shared and "
        "noisy, so figures from different runs are not compared. How each benchmark works: "
        "[bench/README.md](../bench/README.md); earlier measurements and what it took to get here: "
        "[performance-history.md](performance-history.md).",
        "## Machine",
        machine_table(info),
        "## Targets",
        summary_table(sections),
    )
    body = "\n\n".join(s.markdown for s in sections)
    tail = _join(
        "## Reproducing",
        "```bash\nmake bench                                  # this page, full size (about 25 minutes)\n"
        ".venv/bin/python bench/report.py --quick     # quick presets (about 5 minutes)\n"
        ".venv/bin/python bench/report.py --only planning,scan --out /tmp/perf.md\n```",
        f"Each benchmark's JSON and output of this run were kept in `{_relative(results)}` (not committed).",
    )
    return head + "\n\n" + body + "\n\n" + tail + "\n"


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(path)

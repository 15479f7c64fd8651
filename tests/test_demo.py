"""``hybridgate demo``: the real thing end to end (three real gateways in turn, each with the
llama.cpp runtime and two SANDBOX clouds, driven by the official openai SDK), Ctrl-C, bad input,
and the seeded workload it replays.

Speed is never asserted: the numbers depend on the machine. What is asserted is that they are
real and agree with each other: every request sent is counted once by the client, once in the
gateway's decision log and once in the split; costs from the log equal the gateway's /metrics;
no sensitive value reached a cloud through the hybrid gateway while the cloud-only one sent some;
the outage shows; and no process is left behind.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from hybridgate.cli import app
from hybridgate.config.governance import DetectionConfig
from hybridgate.demo.workload import DemoRequest, make_schedule, make_trace
from hybridgate.privacy.scanner import Scanner
from tests.support.processes import ManagedProcess, eventually

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "demo.yaml"
# Seed 3 over 10 s puts cloud-first (planning) requests into an outage at 4-9 s: the hybrid arm
# must take them around the failing clouds to the local runtime (checked from the trace itself).
SEED, DURATION, OUTAGE = 3, 10, (4, 5)
RUN = [
    *("--duration", str(DURATION), "--seed", str(SEED)),
    *("--outage-start", str(OUTAGE[0]), "--outage-length", str(OUTAGE[1])),
]


def _demo(models_dir: Path, *args: str) -> list[str]:
    """The demo's command line, on examples/demo.yaml with the session's generated tiny model."""
    model = str(models_dir / "tiny.gguf")
    return [sys.executable, "-m", "hybridgate.cli", "demo", "-c", str(CONFIG), "--model", model, *args]


def _trace() -> tuple[DemoRequest, ...]:
    return make_trace(SEED, make_schedule(DURATION, *OUTAGE))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


@pytest.fixture(scope="module")
def demo_run(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        _demo(models_dir, *RUN, "--no-wait", "-o", str(out)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    return orjson.loads((out / "report.json").read_bytes()), out, output


def test_the_report_has_every_arm_and_the_numbers_add_up(demo_run: tuple[dict[str, Any], Path, str]) -> None:
    report, out, output = demo_run
    assert report["schema"] == "hybridgate-demo/1"
    assert list(report["arms"]) == ["hybrid", "local-only", "cloud-only"]
    assert report["meta"]["arms_run_in_order"] == ["local-only", "cloud-only", "hybrid"]
    sent = report["meta"]["requests"]
    trace = _trace()
    assert sent == len(trace) > 50
    for name, arm in report["arms"].items():
        k = arm["consistency"]
        # Every request sent: one client outcome, one decision-log record (joined by trace id).
        assert (
            k["sent"] == k["client_outcomes"] == k["decision_log_records"] == k["joined_records"] == sent
        ), name
        assert k["classes_match"], name
        assert arm["requests"] == sent
        assert arm["answered"] + sum(arm["errors"].values()) == sent, name
        assert sum(arm["split"].values()) == arm["answered"] == k["answered"], name
        assert k["answer_deployment_agrees_with_log"] == arm["answered"], name
        assert 0 < arm["within_budget"] <= arm["answered"], name
        assert arm["slo_attainment"] == round(arm["within_budget"] / sent, 4)
        classes = arm["classes"]
        assert set(classes) == {"perception", "actuation", "interactive", "planning", "records"}
        assert sum(c["requests"] for c in classes.values()) == sent
        for cls, c in classes.items():
            assert c["answered"] + c["failed"] + c["refused"] == c["requests"], (name, cls)
            assert sum(c["by_placement"].values()) == c["answered"], (name, cls)
            assert sum(c["errors"].values()) == c["failed"] + c["refused"], (name, cls)
            if c["answered"]:
                assert c["p50_s"] <= c["p95_s"] <= c["p99_s"], (name, cls)
        series = arm["series_per_s"]
        assert sum(series["local"]) + sum(series["cloud"]) == arm["answered"]
        assert sum(series["errors"]) == sent - arm["answered"]
        r = arm["resilience"]
        # Spills are answers of local-first classes by a cloud: never more than the cloud answered.
        assert r["spilled_planned"] + r["spilled_queue_full"] <= arm["split"].get("cloud", 0), name
        assert r["hedge_won"] <= r["hedge"], name
        cost = arm["cost_usd"]
        assert cost["total"] == pytest.approx(cost["local"] + cost["cloud"], abs=1e-5)
        assert cost["total"] == pytest.approx(k["metrics_cost_usd"], abs=1e-5), name
        assert sum(cost["by_class"].values()) == pytest.approx(cost["total"], abs=1e-5)
    local, cloud, hybrid = (report["arms"][n] for n in ("local-only", "cloud-only", "hybrid"))
    assert local["split"].get("cloud", 0) == 0
    assert local["cost_usd"]["cloud"] == 0
    assert local["cost_usd"]["local"] > 0  # local is priced too, never free
    assert cloud["split"].get("local", 0) == 0
    assert cloud["cost_usd"]["local"] == 0
    assert cloud["cost_usd"]["cloud"] > hybrid["cost_usd"]["cloud"] > 0
    assert hybrid["split"].get("local", 0) > 0
    markdown = (out / "report.md").read_text()
    for heading in ("## Conclusion", "## By class", "## Sensitive data", "## The cloud outage"):
        assert heading in markdown
    assert report["conclusion"]["verdict"] in markdown
    assert "Conclusion" in output  # the summary was printed too


def test_sensitive_data_never_reached_a_cloud_through_the_hybrid_gateway(
    demo_run: tuple[dict[str, Any], Path, str],
) -> None:
    report, _, _ = demo_run
    trace = _trace()
    planted = sum(1 for r in trace if r.planted)
    hybrid, cloud, local = (report["arms"][n]["sensitive"] for n in ("hybrid", "cloud-only", "local-only"))
    for s in (hybrid, cloud, local):
        assert s["requests"] == planted > 0
    assert hybrid["violations"] == 0
    assert local["violations"] == 0
    # The cloud-only arm sends prompts as they are: what its clouds received holds planted values.
    assert cloud["violations"] > 0
    assert set(cloud["violations_by_class"]) <= {"records", "interactive", "planning"}
    # The hybrid gateway found every planted value and acted on it (kept local or redacted).
    assert hybrid["gateway_actions"].get("none", 0) == 0
    assert hybrid["gateway_actions"].get("keep_local", 0) >= sum(
        1 for r in trace if r.workload_class == "records"
    )
    assert hybrid["clean_requests_flagged"] == 0


def test_the_outage_shows_as_failovers_or_offline_answers(demo_run: tuple[dict[str, Any], Path, str]) -> None:
    report, _, _ = demo_run
    trace = _trace()
    in_window = [r for r in trace if r.phase == "outage"]
    end = OUTAGE[0] + OUTAGE[1]
    # Cloud-first requests sent at least a second before the clouds come back (a later one may
    # be answered by a cloud's retry once they are back).
    cloud_first = [r for r in in_window if r.workload_class == "planning" and r.t < end - 1]
    assert len(cloud_first) >= 3  # the seed and window were chosen for this
    hybrid, cloud, local = (report["arms"][n]["outage"] for n in ("hybrid", "cloud-only", "local-only"))
    for o in (hybrid, cloud, local):
        assert o["window_s"] == [OUTAGE[0], end]
        assert o["requests"] == len(in_window)
    around = hybrid["failed_over"] + hybrid["planned_around_open_breakers"] + hybrid["planned_offline"]
    assert around >= len(cloud_first)
    assert hybrid["answered_local"] > hybrid["answered_cloud"]
    assert hybrid["answered"] > cloud["answered"]
    assert cloud["errors"]  # every cloud was answering 503
    events = [e["event"] for e in hybrid["timeline"]]
    assert events[0] == "outage injected"
    assert "outage over" in events
    assert local["answered_cloud"] == 0


def test_no_process_is_left_behind(demo_run: tuple[dict[str, Any], Path, str]) -> None:
    report, _, _ = demo_run
    for name, arm in report["arms"].items():
        processes = arm["processes"]
        assert {"gateway", "local", "cloud-us", "cloud-eu"} <= set(processes), name
        for what, pids in processes.items():
            assert pids, (name, what)
            assert not any(_alive(p) for p in pids), (name, what, pids)


def test_ctrl_c_stops_every_child_process(models_dir: Path, tmp_path: Path) -> None:
    demo = ManagedProcess(
        _demo(models_dir, "--duration", "60", "--baselines", "none", "-o", str(tmp_path)),
        ready=r"replaying \d+ requests",
        name="demo",
    )
    demo.start(timeout=120)
    try:
        config = str(tmp_path / "hybrid" / "gateway.yaml")
        gateways = [
            int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and config in _cmdline(p)
        ]
        assert len(gateways) == 1, demo.output
        children = _children(gateways[0])
        assert len(children) == 3  # the llama.cpp worker and the two sandboxes
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:  # the local runtime gets the last CPU, every thread of it; the rest the others
            (worker,) = [c for c in children if "llamacpp_worker" in _cmdline(Path(f"/proc/{c}"))]
            assert eventually(lambda: _thread_cpus(worker) == {cpus[-1]}, timeout=30), _thread_cpus(worker)
            assert os.sched_getaffinity(gateways[0]) == set(cpus[:-1])
        assert demo.proc is not None
        demo.proc.send_signal(signal.SIGINT)
        try:
            status = demo.proc.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not stop within 60 s of SIGINT; output:\n{demo.output[-4000:]}")
        assert status == 130, demo.output
    finally:
        demo.stop()
    assert "interrupted" in demo.output
    assert "Traceback" not in demo.output
    assert not any(_alive(p) for p in [*gateways, *children])


def _thread_cpus(pid: int) -> set[int]:
    """The CPUs any thread of ``pid`` may run on."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out |= os.sched_getaffinity(int(task.name))
        except OSError:
            continue
    return out


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--baselines", "local-only,nope"], "unknown baseline(s) nope"),
        (["--model", "/nonexistent/tiny.gguf"], "does not exist"),
        (["-c", "/nonexistent/demo.yaml"], "cannot read"),
        (["--duration", "10", "--outage-start", "12"], "--outage-start"),
        (["--outage-length", "-1"], "must not be negative"),
        (["--duration", "1"], "--duration"),
        (["--rate-scale", "many"], "--rate-scale"),
    ],
)
def test_bad_input_is_a_clear_error_and_exit_status_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["demo", "-c", str(CONFIG), *args, "--no-wait"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_config_without_the_demo_classes_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "version: 1\nserver: {auth: {disabled: true}}\n"
        "deployments: {s: {type: sandbox}}\nmodels: {m: {deployments: [s]}}\n"
    )
    result = CliRunner().invoke(app, ["demo", "-c", str(config), "--no-wait"])
    assert result.exit_code == 2, result.output
    assert "needs a llamacpp deployment" in result.output
    assert "needs the classes perception" in result.output


def test_the_workload_is_seeded_and_its_bursts_and_outage_are_where_the_schedule_says() -> None:
    schedule = make_schedule(60, None, None)
    assert schedule.outage == (24.0, 39.0)
    assert schedule.bursts == ((7.2, 11.4), (18.0, 22.2), (45.0, 49.2))
    a, b = make_trace(7, schedule), make_trace(7, schedule)
    assert a == b
    assert a != make_trace(8, schedule)
    assert [r.index for r in a] == list(range(len(a)))
    assert all(x.t <= y.t for x, y in itertools.pairwise(a))
    assert {r.phase for r in a} == {"calm", "burst", "outage"}
    for r in a:
        assert r.phase == schedule.phase(r.t)
    burst_rate = sum(1 for r in a if r.phase == "burst") / sum(hi - lo for lo, hi in schedule.bursts)
    calm_rate = sum(1 for r in a if r.phase == "calm") / (60 - 15 - 12.6)
    assert burst_rate > 2 * calm_rate
    assert make_schedule(60, 10, 0).outage is None


def test_every_planted_value_is_found_by_the_gateways_scanner_and_nothing_else_is() -> None:
    scanner = Scanner(DetectionConfig())
    trace = make_trace(1, make_schedule(60, None, None))
    planted = [r for r in trace if r.planted]
    assert {r.workload_class for r in planted} == {"records", "interactive", "planning"}
    values = [p.value for r in planted for p in r.planted]
    assert len(values) == len(set(values))  # unique: finding one names its request
    for r in trace:
        found = scanner.scan_texts([content for _, content in r.messages])
        assert found.kinds == {p.kind for p in r.planted}, (r.index, r.workload_class)

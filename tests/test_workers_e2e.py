"""`hybridgate serve --workers 2` as real processes: counts summed over workers, a second instance
on the same host, a worker killed with SIGKILL, a clean stop.

Requests go to a SANDBOX over fresh connections (the kernel hands each new connection to
whichever worker accepts first), and /metrics is scraped over fresh connections too, so the
worker that answers a scrape varies; every scrape must report every worker.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import ManagedProcess, eventually, start_gateway, start_sandbox

pytestmark = pytest.mark.slow

KEY = "workers-test-key"
HEADERS = {"authorization": f"Bearer {KEY}"}
BODY: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}


def send(url: str, n: int) -> None:
    """``n`` requests, each on a connection of its own; every one must succeed."""
    for _ in range(n):
        reply = httpx.post(f"{url}/v1/chat/completions", json=BODY, headers=HEADERS, timeout=30)
        assert reply.status_code == 200, reply.text


def scrape(url: str) -> tuple[dict[str, float], dict[str, float]]:
    """Requests served by each worker (``outcome="ok"``), and each worker's ``hybridgate_worker_up``."""
    reply = httpx.get(f"{url}/metrics", headers=HEADERS, timeout=30)
    assert reply.status_code == 200, reply.text
    served: dict[str, float] = {}
    up: dict[str, float] = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            if s.name == "hybridgate_requests_total":
                assert s.labels["outcome"] == "ok", s
                served[s.labels["worker"]] = served.get(s.labels["worker"], 0.0) + s.value
            elif s.name == "hybridgate_worker_up":
                up[s.labels["worker"]] = s.value
    return served, up


def worker_pids(proc: ManagedProcess) -> dict[int, int]:
    """Each worker's latest pid, from the supervisor's log."""
    pids: dict[int, int] = {}
    for index, pid in re.findall(r"worker (\d+) \(pid (\d+)\) is serving", proc.output):
        pids[int(index)] = int(pid)
    return pids


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    sandbox, sandbox_url = start_sandbox("instant")
    folder = tmp_path_factory.mktemp("workers")
    config = folder / "gateway.yaml"
    config.write_text(
        f"""
version: 1
server:
  auth: {{api_keys: [{KEY}]}}
  workers: 2
deployments:
  cloud:
    type: openai
    base_url: {sandbox_url}/v1
    model: sandbox-model
    api_key: sandbox
models:
  chat: {{deployments: [cloud]}}
"""
    )
    # The gateways' private directories go here (short: Unix socket paths are limited), so the
    # test can see them made and removed.
    temp = Path(tempfile.mkdtemp(prefix="hgw-", dir="/tmp"))
    try:
        yield {"config": config, "env": {"TMPDIR": str(temp)}, "temp": temp}
    finally:
        sandbox.stop()
        shutil.rmtree(temp)


def instance_dirs(temp: Path) -> set[str]:
    return {p.name for p in temp.iterdir() if p.name.startswith("hybridgate-")}


def test_metrics_sum_over_workers_survive_another_instance_and_a_killed_worker(
    setting: dict[str, Any],
) -> None:
    first, url = start_gateway(setting["config"], env=setting["env"])
    try:
        [first_dir] = instance_dirs(setting["temp"])
        assert first_dir.startswith(f"hybridgate-{first.pid}-")
        assert set(worker_pids(first)) == {0, 1}

        # Enough requests for both workers to serve some (fresh connections: the kernel's choice).
        sent = 0
        while sent < 400:
            send(url, 10)
            sent += 10
            served, up = scrape(url)
            assert sum(served.values()) == sent, (served, sent)
            if len(served) == 2 and all(served.values()):
                break
        assert set(served) == {"0", "1"}
        assert all(served.values()), served
        assert up == {"0": 1.0, "1": 1.0}
        # Prometheus's own checker accepts the merged exposition (families whole, no duplicates).
        promtool = shutil.which("promtool")
        assert promtool is not None, "promtool is missing: install Debian's prometheus package (make sysdeps)"
        body = httpx.get(f"{url}/metrics", headers=HEADERS, timeout=30).content
        check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        assert b'hybridgate_requests_total{worker="' in body
        for _ in range(6):  # whichever worker answers, the totals are the same
            assert scrape(url) == (served, up)

        # A second instance on the same host: its own directory, its own counts; stopping it
        # (which removes its directory) changes nothing in the first.
        second, second_url = start_gateway(setting["config"], env=setting["env"])
        try:
            assert len(instance_dirs(setting["temp"])) == 2
            send(second_url, 3)
            assert sum(scrape(second_url)[0].values()) == 3
            assert scrape(url) == (served, up)
        finally:
            second.stop()
        assert second.proc is not None
        assert second.proc.returncode == 0, second.output[-3000:]
        assert instance_dirs(setting["temp"]) == {first_dir}
        assert scrape(url) == (served, up)

        # SIGKILL a worker: the supervisor starts another in its slot; its counts start at 0.
        old = worker_pids(first)[1]
        os.kill(old, signal.SIGKILL)
        assert eventually(lambda: worker_pids(first).get(1, old) != old, timeout=30), first.output[-3000:]
        assert re.search(r"worker 1 exited \(signal SIGKILL\)", first.output)
        after, up = scrape(url)
        assert up == {"0": 1.0, "1": 1.0}
        assert after.get("1", 0.0) == 0.0
        assert after["0"] == served["0"]
        send(url, 20)
        final, _ = scrape(url)
        assert sum(final.values()) == served["0"] + 20
    finally:
        first.stop()
    assert first.proc is not None
    assert first.proc.returncode == 0, first.output[-3000:]
    assert "stopping 2 workers" in first.output
    assert instance_dirs(setting["temp"]) == set(), "the private directory is removed at exit"


def test_a_dead_worker_is_reported_not_fatal(setting: dict[str, Any]) -> None:
    """A scrape while a worker is down still answers, with that worker's up at 0."""
    gateway, url = start_gateway(setting["config"], env=setting["env"], extra_args=["--workers", "3"])
    try:
        pids = worker_pids(gateway)
        assert set(pids) == {0, 1, 2}
        send(url, 5)
        # SIGSTOP: the worker is alive but answers nothing, as a worker stuck in a busy loop.
        os.kill(pids[2], signal.SIGSTOP)
        try:
            served, up = scrape(url)  # a stopped worker accepts nothing: the others answer
        finally:
            os.kill(pids[2], signal.SIGCONT)
        assert up["2"] == 0.0
        assert up["0"] == up["1"] == 1.0
        assert "2" not in served
        assert eventually(lambda: scrape(url)[1] == {"0": 1.0, "1": 1.0, "2": 1.0}, timeout=10)
        assert sum(scrape(url)[0].values()) == 5
    finally:
        gateway.stop()


def test_a_worker_that_cannot_start_stops_the_gateway(setting: dict[str, Any], tmp_path: Path) -> None:
    """Startup fails in every worker (its decision log cannot be created): `serve` exits with the
    worker's status, leaving no process and no directory behind."""
    config = tmp_path / "broken.yaml"
    config.write_text(
        setting["config"]
        .read_text()
        .replace("version: 1", "version: 1\ndecision_log: {path: /proc/nope/d.jsonl}")
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridgate.cli", "serve", "-c", str(config), "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **setting["env"]},
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=60)
        left_behind = _group_alive(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 3, output
    assert re.search(r"worker \d exited \(3\) before the gateway was ready", output), output
    assert "listening on" not in output
    assert not left_behind, "a worker outlived the supervisor"
    assert instance_dirs(setting["temp"]) == set()


def test_workers_do_not_outlive_a_killed_supervisor(setting: dict[str, Any]) -> None:
    gateway, url = start_gateway(setting["config"], env=setting["env"])
    try:
        send(url, 2)
        workers = worker_pids(gateway).values()
        assert len(workers) == 2
        os.kill(gateway.pid, signal.SIGKILL)  # no chance to stop its workers
        assert eventually(lambda: not any(map(_running, workers)), timeout=20), gateway.output[-3000:]
        assert "the supervisor process is gone: shutting down" in gateway.output
        assert instance_dirs(setting["temp"]) == set(), "the last worker out removes the directory"
    finally:
        gateway.stop()


def _group_alive(pgid: int) -> bool:
    """Whether any process is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (an unreaped zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

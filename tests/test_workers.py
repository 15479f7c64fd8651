"""Several server workers: merged expositions, the exchange over Unix sockets, `workers` config.

The processes themselves (supervisor, restarts, a second instance) are in test_workers_e2e.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from hybridgate.cli import app
from hybridgate.config import load_config_text
from hybridgate.errors import ConfigError
from hybridgate.serving.peers import ExpositionServer, WorkerExpositions, socket_path
from hybridgate.telemetry.merge import merge, with_worker


def exposition(requests: dict[str, float], offline: float, observed: list[float]) -> bytes:
    """A worker's exposition as prometheus_client renders it (a counter, a gauge, a histogram)."""
    registry = CollectorRegistry()
    counter = Counter("demo_requests", "Requests", ["outcome"], registry=registry)
    for outcome, n in requests.items():
        counter.labels(outcome).inc(n)
    Gauge("demo_offline", "Offline", registry=registry).set(offline)
    histogram = Histogram("demo_seconds", "Latency", buckets=(0.1, 1.0), registry=registry)
    for value in observed:
        histogram.observe(value)
    return generate_latest(registry)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``text``, parsed by prometheus_client's own parser."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def summed(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """``sum without (worker)`` of the samples of ``name`` with ``labels``."""
    return sum(
        value
        for (sample, key), value in parsed.items()
        if sample == name and all((k, v) in key for k, v in labels.items())
    )


def test_with_worker_adds_the_label_to_any_sample_line() -> None:
    assert with_worker('a_total{x="1 2"} 3.0', 4) == 'a_total{worker="4",x="1 2"} 3.0'
    assert with_worker("a 1.0", 0) == 'a{worker="0"} 1.0'
    assert with_worker("a{} 1.0", 2) == 'a{worker="2"} 1.0'


def test_merge_labels_every_sample_and_keeps_one_header_per_family() -> None:
    parts = [
        exposition({"ok": 3, "error": 1}, 0.0, [0.05, 0.5]),
        exposition({"ok": 4}, 1.0, [2.0]),
        None,  # worker 2 did not answer
    ]
    merged = merge(parts)
    text = merged.decode()
    for family in ("demo_requests_total", "demo_offline", "demo_seconds", "hybridgate_worker_up"):
        assert text.count(f"# HELP {family} ") == 1, family
        assert text.count(f"# TYPE {family} ") == 1, family
    parsed = samples(merged)  # the parser also refuses a family split in two
    assert summed(parsed, "demo_requests_total", outcome="ok") == 7
    assert summed(parsed, "demo_requests_total", outcome="error") == 1
    assert parsed[("demo_requests_total", (("outcome", "ok"), ("worker", "1")))] == 4
    assert summed(parsed, "demo_seconds_count") == 3
    assert summed(parsed, "demo_seconds_bucket", le="0.1") == 1
    assert summed(parsed, "demo_seconds_bucket", le="1.0") == 2
    assert parsed[("demo_offline", (("worker", "1"),))] == 1.0
    assert all(dict(key).get("worker") in {"0", "1", "2"} for _, key in parsed)
    up = {dict(key)["worker"]: v for (name, key), v in parsed.items() if name == "hybridgate_worker_up"}
    assert up == {"0": 1.0, "1": 1.0, "2": 0.0}


@pytest.fixture
def short_dir(tmp_path: Path) -> Path:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path is usually short enough.
    assert len(str(socket_path(tmp_path, 9))) < 100
    return tmp_path


async def test_a_scrape_gathers_every_worker_and_reports_the_missing(short_dir: Path) -> None:
    served = {0: exposition({"ok": 2}, 0.0, []), 2: exposition({"ok": 5}, 0.0, [])}

    def render(index: int) -> Callable[[], bytes]:
        return lambda: served[index]

    servers = [ExpositionServer(socket_path(short_dir, i), render(i)) for i in served]
    for server in servers:
        await server.start()
    try:
        # Worker 1 answers the scrape; worker 3 is dead (no socket), worker 4's socket is stale.
        socket_path(short_dir, 4).touch()
        own = exposition({"ok": 1}, 0.0, [])
        everyone = WorkerExpositions(1, 5, short_dir, lambda: own, timeout_s=1.0)
        parsed = samples(await everyone.render())
    finally:
        for server in servers:
            await server.close()
    assert summed(parsed, "demo_requests_total", outcome="ok") == 8
    for worker, count in (("0", 2), ("1", 1), ("2", 5)):
        assert parsed[("demo_requests_total", (("outcome", "ok"), ("worker", worker)))] == count
    up = {dict(key)["worker"]: v for (name, key), v in parsed.items() if name == "hybridgate_worker_up"}
    assert up == {"0": 1.0, "1": 1.0, "2": 1.0, "3": 0.0, "4": 0.0}
    assert not socket_path(short_dir, 0).exists(), "a closed server removes its socket"


async def test_a_worker_that_does_not_answer_costs_the_timeout_not_the_scrape(short_dir: Path) -> None:
    release = asyncio.Event()

    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_unix_server(stuck, path=str(socket_path(short_dir, 1)))
    try:
        everyone = WorkerExpositions(0, 2, short_dir, lambda: exposition({"ok": 1}, 0.0, []), timeout_s=0.3)
        started = time.monotonic()
        parsed = samples(await everyone.render())
        elapsed = time.monotonic() - started
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert 0.3 <= elapsed < 2.0
    assert summed(parsed, "demo_requests_total") == 1
    assert parsed[("hybridgate_worker_up", (("worker", "1"),))] == 0.0


async def test_a_restarted_worker_takes_over_its_stale_socket(short_dir: Path) -> None:
    path = socket_path(short_dir, 0)
    path.touch()  # what a killed worker leaves behind
    server = ExpositionServer(path, lambda: exposition({"ok": 9}, 0.0, []))
    await server.start()
    try:
        parsed = samples(await WorkerExpositions(1, 2, short_dir, lambda: b"").render())
    finally:
        await server.close()
    assert parsed[("demo_requests_total", (("outcome", "ok"), ("worker", "0")))] == 9


CLOUD_ONLY = """
version: 1
server: {workers: WORKERS}
deployments:
  gpt: {type: openai, api_key: k, model: gpt-4o-mini}
models:
  chat: {deployments: [gpt]}
"""

WITH_LOCAL = """
version: 1
server:
  workers: 3
deployments:
  gpt: {type: openai, api_key: k, model: gpt-4o-mini}
  local: {type: llamacpp, model_path: models/tiny.gguf}
models:
  chat: {deployments: [local, gpt]}
"""


def test_workers_config() -> None:
    assert load_config_text(CLOUD_ONLY.replace("WORKERS", "4"), env={}).config.server.workers == 4
    assert (
        load_config_text(CLOUD_ONLY.replace("server: {workers: WORKERS}\n", ""), env={}).config.server.workers
        == 1
    )
    for bad, fragment in (
        ("0", "greater than or equal to 1"),
        ("many", "valid integer"),
        ("1000", "less than"),
    ):
        with pytest.raises(ConfigError) as info:
            load_config_text(CLOUD_ONLY.replace("WORKERS", bad), env={})
        [(where, message)] = info.value.problems
        assert where == "server.workers (line 3)"
        assert fragment in message


def test_workers_with_an_embedded_local_model_must_be_meant() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(WITH_LOCAL, env={})
    [(where, message)] = info.value.problems
    assert where == "server.workers (line 4)"
    assert "3 workers would each load every embedded llamacpp model (local)" in message
    assert "local_models_per_worker" in message
    allowed = WITH_LOCAL.replace("workers: 3", "workers: 3\n  local_models_per_worker: true")
    assert load_config_text(allowed, env={}).config.server.workers == 3
    assert load_config_text(WITH_LOCAL.replace("workers: 3", "workers: 1"), env={}).config.server.workers == 1


def test_workers_with_budgets_or_rate_limits_are_refused() -> None:
    """Budgets and rate limits are enforced per process: several workers would multiply them."""
    for tenancy in (
        "tenancy: {budgets: [{name: b, tenant: t, usd: 1.0}]}",
        "tenancy: {rate_limits: {rpm: 60}}",
        "tenancy: {store: hybridgate.db}",
    ):
        text = CLOUD_ONLY.replace("WORKERS", "2") + tenancy + "\n"
        with pytest.raises(ConfigError) as info:
            load_config_text(text, env={})
        [(where, message)] = info.value.problems
        assert where == "server.workers (line 3)"
        assert "could each spend a whole budget" in message
        assert load_config_text(text.replace("workers: 2", "workers: 1"), env={}).config.server.workers == 1


def test_check_and_serve_refuse_bad_workers(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text(CLOUD_ONLY.replace("WORKERS", "0"))
    result = runner.invoke(app, ["check", str(bad)])
    assert result.exit_code == 2
    assert "server.workers (line 3)" in result.output
    local = tmp_path / "local.yaml"
    local.write_text(WITH_LOCAL.replace("workers: 3", "workers: 1"))
    assert runner.invoke(app, ["check", str(local)]).exit_code == 0
    # --workers overrides the file, and is checked the same way (before anything starts).
    serve = runner.invoke(app, ["serve", "-c", str(local), "--port", "0", "--workers", "2"])
    assert serve.exit_code == 2
    assert "--workers: 2 workers would each load every embedded llamacpp model" in serve.output
    zero = runner.invoke(app, ["serve", "-c", str(local), "--port", "0", "--workers", "0"])
    assert zero.exit_code == 2
    assert "--workers" in zero.output


def test_auth_is_never_off_by_omission(tmp_path: Path) -> None:
    """No keys and no store: `serve` refuses (anywhere, loopback too) unless server.auth.disabled
    says it is meant; `check` warns."""
    runner = CliRunner()
    config = tmp_path / "open.yaml"
    config.write_text(CLOUD_ONLY.replace("WORKERS", "1"))
    for host in ("127.0.0.1", "0.0.0.0", "::1"):
        result = runner.invoke(app, ["serve", "-c", str(config), "--host", host, "--port", "0"])
        assert result.exit_code == 2, host
        assert "server.auth: no client keys" in result.output
        assert "server.auth.disabled: true" in result.output
        assert "Traceback" not in result.output
    checked = runner.invoke(app, ["check", str(config)])
    assert checked.exit_code == 0
    assert "`serve` will refuse" in checked.output

"""A real Prometheus server scrapes a real gateway under load, with the generated SLO rules.

The gateway serves two classes from a SANDBOX: ``healthy`` (generous budgets) and ``tight``,
whose model's first token the sandbox delays past the class's budgets (but not past the attempt
deadlines the budgets set, so the answers still succeed). Prometheus (Debian's ``prometheus``
package; ``make sysdeps``) scrapes /metrics every second with the client key and evaluates
`hybridgate slo rules`'s output; the test reads the recorded series and alerts back through its
HTTP API.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.processes import ManagedProcess, eventually, free_port, start_gateway, start_sandbox

KEY = "prometheus-test-key"
HEADERS = {"authorization": f"Bearer {KEY}"}
SLOW_S = 0.45  # past the tight class budgets (400 ms), well within its first-token deadline (800 ms)
BODY = {"model": "chat", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 16}


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert reply["status"] == "success", reply
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None while it has none."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def firing(self, alertname: str) -> list[dict[str, str]]:
        alerts = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [
            a["labels"] for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        ]


def _load(url: str, stop: threading.Event, sent: list[int]) -> None:
    """Requests of both classes, whole and streamed, one after another until ``stop``."""
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        while not stop.is_set():
            for cls, model in (("healthy", "chat"), ("tight", "slow")):
                headers = {"x-hybridgate-class": cls}
                body = {**BODY, "model": model}
                client.post("/v1/chat/completions", json=body, headers=headers).raise_for_status()
                with client.stream(
                    "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers
                ) as reply:
                    reply.raise_for_status()
                    for _ in reply.iter_bytes():
                        pass
                sent[0] += 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, list[int]]]:
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is missing: install Debian's prometheus package (make sysdeps)"
    folder = tmp_path_factory.mktemp("prometheus")
    procs: list[ManagedProcess] = []
    stop = threading.Event()
    loader: threading.Thread | None = None
    try:
        sandbox, sandbox_url = start_sandbox("instant")
        procs.append(sandbox)
        slow = {"kind": "slow_first_token", "delay_s": SLOW_S, "model": "sandbox-gpt"}
        httpx.post(f"{sandbox_url}/sandbox/faults", json=[slow]).raise_for_status()
        config = folder / "gateway.yaml"
        config.write_text(
            f"""
version: 1
server:
  auth: {{api_keys: [{KEY}]}}
classes:
  healthy:
    latency: {{p95_ms: 20000, p99_ms: 40000, ttft_ms: 10000}}
  tight:  # attempt deadlines: first token 2 x 400 ms, total 2 x the predicted p95
    latency: {{p95_ms: 200, p99_ms: 400, ttft_ms: 400}}
  default:
    latency: {{p95_ms: 20000, p99_ms: 40000, ttft_ms: 10000}}
deployments:
  cloud:
    type: openai
    base_url: {sandbox_url}/v1
    model: sandbox-model
    context_window: 128000
  slow:
    type: openai
    base_url: {sandbox_url}/v1
    model: sandbox-gpt
    context_window: 128000
    expected: {{ttft_ms: 600}}
models:
  chat: {{deployments: [cloud]}}
  slow: {{deployments: [slow]}}
"""
        )
        rules = folder / "rules.yaml"
        subprocess.run(
            [sys.executable, "-m", "hybridgate.cli", "slo", "rules", "-c", str(config), "-o", str(rules)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        gateway, url = start_gateway(config)
        procs.append(gateway)
        target = url.removeprefix("http://")
        (folder / "prometheus.yml").write_text(
            f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{rules}]
scrape_configs:
  - job_name: hybridgate
    authorization: {{credentials: {KEY}}}
    static_configs: [{{targets: ["{target}"]}}]
"""
        )
        port = free_port()
        prometheus = ManagedProcess(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            ready=r"Server is ready to receive web requests",
            name="prometheus",
        )
        prometheus.start(60)
        procs.append(prometheus)
        sent = [0]
        loader = threading.Thread(target=_load, args=(url, stop, sent), daemon=True)
        loader.start()
        yield Prometheus(f"http://127.0.0.1:{port}"), sent
    finally:
        stop.set()
        if loader is not None:
            loader.join(30)
        for proc in reversed(procs):
            proc.stop()


def settled(
    prom: Prometheus,
    expr: str,
    ready: Callable[[float], bool] = lambda v: not math.isnan(v),
    timeout: float = 60,
) -> float:
    """The value of ``expr`` once it is ``ready`` (default: a number, not the NaN of a ratio of
    no events yet): scrapes and rule evaluations take seconds, and load must have been seen."""
    values: list[float] = []

    def has_value() -> bool:
        value = prom.value(expr)
        if value is None:
            return False
        values.append(value)
        return ready(value)

    assert eventually(has_value, timeout=timeout, interval=0.5), f"{expr}: {values[-5:]}"
    return values[-1]


def test_the_scrape_succeeds_and_requests_are_counted(stack: tuple[Prometheus, list[int]]) -> None:
    prom, sent = stack
    assert settled(prom, 'up{job="hybridgate"}') == 1
    settled(prom, 'sum(rate(hybridgate_requests_total{outcome="ok"}[1m]))', lambda v: v > 0)
    assert sent[0] > 0
    tokens = 'sum(hybridgate_tokens_total{tenant="default", placement="cloud", direction="completion"})'
    settled(prom, tokens, lambda v: v > 0)
    settled(prom, 'sum(hybridgate_egress_bytes_total{tenant="default", placement="cloud"})', lambda v: v > 0)
    assert settled(prom, 'sum(rate(hybridgate_requests_total{outcome!="ok"}[1m])) or vector(0)') == 0
    quantile = "histogram_quantile(0.5, sum by (le) (rate(hybridgate_{}_bucket{}[1m])))"
    overhead = settled(prom, quantile.format("overhead_seconds", ""))
    assert 0 < overhead < 0.05  # seconds: the gateway's own time is well under a millisecond
    ttft = 'hybridgate_time_to_first_token_seconds_{}{{class="tight"}}'
    mean_ttft = settled(prom, f"{ttft.format('sum')} / {ttft.format('count')}")
    assert SLOW_S <= mean_ttft < 2 * SLOW_S


def test_a_healthy_class_records_no_errors_and_full_attainment(stack: tuple[Prometheus, list[int]]) -> None:
    prom, _ = stack
    for slo in ("availability", "latency_p95", "latency_p99", "ttft"):
        selector = f'{{class="healthy", slo="{slo}"}}'
        assert settled(prom, f"hybridgate:slo_error_ratio:rate5m{selector}") == 0
        assert settled(prom, f"hybridgate:slo_burn_rate:rate1h{selector}") == 0
        assert settled(prom, f"hybridgate:slo_attainment:ratio_rate1d{selector}") == 1
        assert settled(prom, f"hybridgate:slo_error_budget_remaining:ratio{selector}") == 1


def test_a_class_missing_its_budgets_burns_them_and_pages(stack: tuple[Prometheus, list[int]]) -> None:
    prom, _ = stack
    assert settled(prom, 'hybridgate:slo_error_ratio:rate5m{class="tight", slo="availability"}') == 0
    for slo, target in (("latency_p95", 0.95), ("latency_p99", 0.99), ("ttft", 0.95)):
        selector = f'{{class="tight", slo="{slo}"}}'
        assert settled(prom, f"hybridgate:slo_error_ratio:rate5m{selector}") == 1
        burn = settled(prom, f"hybridgate:slo_burn_rate:rate5m{selector}")
        assert abs(burn - 1 / (1 - target)) < 1e-6
        attainment = settled(prom, f"hybridgate:slo_attainment:ratio_rate1d{selector}")
        assert 0 <= attainment < 1

    def paged() -> bool:
        return {(a["class"], a["slo"]) for a in prom.firing("HybridgateErrorBudgetBurnFast")} == {
            ("tight", "latency_p95"),
            ("tight", "latency_p99"),
            ("tight", "ttft"),
        }

    assert eventually(paged, timeout=60, interval=0.5), prom.firing("HybridgateErrorBudgetBurnFast")
    assert all(a["severity"] == "page" for a in prom.firing("HybridgateErrorBudgetBurnFast"))

"""Budgets and secrets through a real ``hybridgate serve`` and SANDBOX clouds.

One gateway process; two SANDBOX processes, one configured as a cloud deployment and one as a
"local" one (placement: local), so the local-only fallback is observable without llama.cpp.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hybridgate.cli import app
from hybridgate.tenancy.budgets import period_key
from hybridgate.tenancy.store import SpendDelta, SQLiteStore
from tests.support.processes import ManagedProcess, start_gateway, start_sandbox

PROVIDER_KEY = "sk-provider-secret-do-not-leak-4242"
ADMIN = "sk-admin-config-key-0123456789"
ACME = "sk-acme-config-key-0123456789"
BETA = "sk-beta-config-key-0123456789"
GAMMA = "sk-gamma-config-key-0123456789"
DELTA = "sk-delta-config-key-0123456789"
EPSILON = "sk-epsilon-config-key-0123456789"
LIMIT_USD = 10.0
ALREADY_SPENT = 9.9  # nearly exhausted: room for a handful of requests
USD_PER_TOKEN = 0.001  # 1000 USD per million tokens, prompt and completion
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    procs: list[ManagedProcess] = []
    folder = tmp_path_factory.mktemp("tenancy")
    try:
        cloud, cloud_url = start_sandbox("instant", seed=1)
        procs.append(cloud)
        local, local_url = start_sandbox("instant", seed=2)
        procs.append(local)
        config = folder / "gw.yaml"
        config.write_text(
            f"""
version: 1
server:
  access_log: true
  auth:
    api_keys:
      - {{key: {ADMIN}, tenant: ops}}
      - {{key: {ACME}, tenant: acme, scopes: [use]}}
      - {{key: {BETA}, tenant: beta, scopes: [use]}}
      - {{key: {GAMMA}, tenant: gamma, scopes: [use]}}
      - {{key: {DELTA}, tenant: delta, scopes: [use], rpm: 2}}
      - {{key: {EPSILON}, tenant: epsilon, scopes: [use]}}
classes:
  default:
    latency: {{p95_ms: 20000, p99_ms: 30000, ttft_ms: 5000}}
    placement: cloud-first
decision_log: {{path: decisions.jsonl}}
tracing: {{enabled: true, exporter: file, path: spans.jsonl, record_content: true}}
deployments:
  cloud:
    type: openai
    base_url: {cloud_url}/v1
    api_key: {PROVIDER_KEY}
    model: sandbox-cloud
    region: us
    price: {{input_per_mtok: 1000, output_per_mtok: 1000}}
    context_window: 4096
  local:
    type: openai
    base_url: {local_url}/v1
    model: sandbox-local
    placement: local
    context_window: 4096
    local_cost: {{hardware_usd_per_hour: 0.0, watts: 0.0}}
models:
  m: {{deployments: [cloud]}}
  hybrid: {{deployments: [cloud, local]}}
tenancy:
  store: tenants.db
  audit: {{path: audit.jsonl, key: e2e-audit-key-0123456789}}
  budgets:
    - {{name: acme-day, tenant: acme, period: day, usd: {LIMIT_USD}}}
    - {{name: beta-day, tenant: beta, period: day, usd: 0, on_exhausted: local-only}}
    - {{name: gamma-month, tenant: gamma, period: month, tokens: 0}}
"""
        )
        store = SQLiteStore(folder / "tenants.db")
        store.record([SpendDelta("acme-day", period_key("day", time.time()), ALREADY_SPENT, 0, 0.0)], [])
        store.close()
        runner = CliRunner()
        assert runner.invoke(app, ["tenants", "create", "-c", str(config), "acme"]).exit_code == 0
        created = runner.invoke(app, ["keys", "create", "-c", str(config), "--tenant", "acme"])
        store_key = created.stdout.strip().splitlines()[-1]
        proc, base = start_gateway(config)
        procs.append(proc)
        yield {
            "base": base,
            "folder": folder,
            "proc": proc,
            "store_key": store_key,
            "seen": [],
            "local_url": local_url,
        }
    finally:
        for p in reversed(procs):
            p.stop()


def _chat(model: str = "m", max_tokens: int = 10) -> dict[str, Any]:
    return {"model": model, "messages": HI, "max_tokens": max_tokens}


async def _fire(base: str, key: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        headers = {"authorization": f"Bearer {key}"}
        return await asyncio.gather(
            *(client.post("/v1/chat/completions", json=_chat(), headers=headers) for _ in range(n))
        )


def test_a_thousand_concurrent_requests_cannot_overspend_a_budget(env: dict[str, Any]) -> None:
    responses = asyncio.run(_fire(env["base"], ACME, 1000))
    env["seen"] += [r.text for r in responses]
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}, sorted(set(statuses))
    served = statuses.count(200)
    assert served >= 1
    refused = [r.json()["error"] for r in responses if r.status_code == 402]
    assert refused
    assert all("budget 'acme-day'" in e["message"] for e in refused)
    assert refused[0]["type"] == "insufficient_quota"
    one_reservation = (2 * 5 + 10) * USD_PER_TOKEN  # twice the prompt estimate + max_tokens
    budgets = httpx.get(f"{env['base']}/admin/budgets", headers={"authorization": f"Bearer {ADMIN}"}).json()
    acme = next(b for b in budgets["data"] if b["name"] == "acme-day")
    assert acme["reserved_usd"] == pytest.approx(0.0, abs=1e-9)
    assert ALREADY_SPENT < acme["usd"] <= LIMIT_USD + one_reservation
    # Each served request cost its tokens: the spend is exactly what was served.
    assert served <= (LIMIT_USD + one_reservation - ALREADY_SPENT) / (7 * USD_PER_TOKEN)


def test_exhausted_budget_routes_local_only(env: dict[str, Any]) -> None:
    headers = {"authorization": f"Bearer {BETA}"}
    response = httpx.post(
        f"{env['base']}/v1/chat/completions", json=_chat("hybrid"), headers=headers, timeout=30
    )
    env["seen"].append(response.text)
    assert response.status_code == 200, response.text
    assert response.headers["x-hybridgate-deployment"] == "local"
    only_cloud = httpx.post(
        f"{env['base']}/v1/chat/completions", json=_chat("m"), headers=headers, timeout=30
    )
    assert only_cloud.status_code == 503  # no local deployment for this model: nothing may leave


def test_token_budget_refuses_in_the_clients_format(env: dict[str, Any]) -> None:
    response = httpx.post(
        f"{env['base']}/v1/messages",
        json={"model": "m", "max_tokens": 10, "messages": HI},
        headers={"x-api-key": GAMMA, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    env["seen"].append(response.text)
    assert response.status_code == 402
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "billing_error"
    assert "budget 'gamma-month'" in body["error"]["message"]


def test_rate_limit_is_429_with_retry_after_in_the_clients_format(env: dict[str, Any]) -> None:
    url = f"{env['base']}/v1/chat/completions"
    headers = {"authorization": f"Bearer {DELTA}"}
    for _ in range(2):
        assert httpx.post(url, json=_chat(), headers=headers, timeout=30).status_code == 200
    limited = httpx.post(url, json=_chat(), headers=headers, timeout=30)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 30
    assert limited.json()["error"]["type"] == "rate_limit_error"
    anthropic = httpx.post(
        f"{env['base']}/v1/messages",
        json={"model": "m", "max_tokens": 10, "messages": HI},
        headers={"x-api-key": DELTA, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert anthropic.status_code == 429
    assert anthropic.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" in anthropic.headers
    metrics = httpx.get(f"{env['base']}/metrics", headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
    refused = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.text.splitlines()
        if line.startswith("hybridgate_admission_refused_total{") and 'reason="rate_limited"' in line
    ]
    assert sum(refused) == 2, "both refusals counted"


def test_a_request_cannot_choose_its_upstream_or_credentials(env: dict[str, Any]) -> None:
    """No SSRF: URLs and credentials in the body or headers do not redirect the call."""
    elsewhere = env["local_url"]
    before = len(httpx.get(f"{elsewhere}/sandbox/stats").json()["requests"])
    body = {
        **_chat("m"),
        "base_url": f"{elsewhere}/v1",
        "api_base": f"{elsewhere}/v1",
        "api_key": "sk-attacker-chosen-key",
    }
    headers = {
        "authorization": f"Bearer {EPSILON}",
        "x-hybridgate-base-url": elsewhere,
        "x-hybridgate-deployment": "local",
        "openai-base-url": elsewhere,
    }
    response = httpx.post(f"{env['base']}/v1/chat/completions", json=body, headers=headers, timeout=30)
    env["seen"].append(response.text)
    assert response.status_code == 200, response.text
    assert response.headers["x-hybridgate-deployment"] == "cloud"
    assert len(httpx.get(f"{elsewhere}/sandbox/stats").json()["requests"]) == before


def test_store_keys_serve_inference(env: dict[str, Any]) -> None:
    response = httpx.get(
        f"{env['base']}/v1/models", headers={"authorization": f"Bearer {env['store_key']}"}, timeout=30
    )
    assert response.status_code == 200


def test_no_secret_is_written_anywhere(env: dict[str, Any]) -> None:
    """The provider key and client keys never appear in responses, logs, the decision log, the
    traces (contents recorded), the audit trail or the store."""
    proc: ManagedProcess = env["proc"]
    proc.stop()  # flush the decision log and the audit trail
    folder: Path = env["folder"]
    store_secret = env["store_key"].split("_", 2)[2]
    places = {
        "responses": "\n".join(env["seen"]).encode(),
        "gateway log": proc.output.encode(),
        **{f.name: f.read_bytes() for f in folder.iterdir() if f.name != "gw.yaml"},
    }
    assert {"decisions.jsonl", "spans.jsonl", "audit.jsonl", "tenants.db"} <= set(places)
    assert b'"gen_ai.operation.name"' in places["spans.jsonl"], "requests were traced"
    for where, content in places.items():
        for secret in (PROVIDER_KEY, ADMIN, ACME, BETA, GAMMA, DELTA, EPSILON, store_secret):
            assert secret.encode() not in content, f"{secret[:8]}... found in {where}"
    store = SQLiteStore(folder / "tenants.db")  # the spend was persisted, within the limit
    spent = store.spend(lambda _: period_key("day", time.time()), ["acme-day"])["acme-day"].usd
    rows = store.usage()
    store.close()
    assert ALREADY_SPENT < spent <= LIMIT_USD + (2 * 5 + 10) * USD_PER_TOKEN
    assert {r.tenant for r in rows} == {"acme", "beta", "delta", "epsilon"}
    trail = places["audit.jsonl"].decode()
    assert '"event":"route"' in trail  # cloud answers were audited
    assert '"event":"budget_local_only"' in trail
    assert "hi" not in {line for line in trail.split('"')}  # no prompt content

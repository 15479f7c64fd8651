"""Authentication, scopes and the admin API, in process (the ASGI app on a manual clock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybridgate.api.app import GatewayApp, create_app
from hybridgate.clock import ManualClock
from hybridgate.config.loader import load_config
from hybridgate.gateway import Gateway
from hybridgate.privacy.guard import build_guard
from hybridgate.tenancy.keys import new_key
from hybridgate.tenancy.store import SQLiteStore

CONFIG_KEY = "sk-config-admin-0123456789"
ADMIN_ROUTES = [
    ("GET", "/admin/tenants", None),
    ("POST", "/admin/tenants", {"name": "x"}),
    ("GET", "/admin/keys", None),
    ("POST", "/admin/keys", {"tenant": "acme"}),
    ("POST", "/admin/keys/revoke", {"id": "hg_0123456789ab"}),
    ("GET", "/admin/budgets", None),
    ("POST", "/admin/budgets", {"name": "b", "tenant": "acme", "usd": 1}),
    ("POST", "/admin/budgets/delete", {"name": "b"}),
]


def _write_config(folder: Path, auth: str, tenancy: str = "store: tenants.db") -> Path:
    config = folder / "gw.yaml"
    config.write_text(
        f"""
version: 1
server:
  auth: {auth}
deployments:
  cloud: {{type: openai, base_url: "http://127.0.0.1:9/v1", model: gpt-4o-mini}}
models:
  m: {{deployments: [cloud]}}
  other: {{deployments: [cloud]}}
tenancy:
  {tenancy}
  key_cache_ttl_s: 5
  budgets:
    - {{name: from-config, tenant: nobody, usd: 1}}
  audit: {{path: audit.jsonl, key: test-audit-key-0123456789}}
"""
    )
    return config


class Harness:
    def __init__(self, app: GatewayApp, client: httpx.AsyncClient, clock: ManualClock, folder: Path) -> None:
        self.app = app
        self.client = client
        self.clock = clock
        self.folder = folder

    async def call(self, method: str, path: str, key: str | None, body: Any = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return await self.client.request(method, path, headers=headers, json=body)


async def _harness(folder: Path, auth: str) -> tuple[Harness, Gateway]:
    loaded = load_config(_write_config(folder, auth))
    clock = ManualClock()
    gateway = Gateway(loaded, guard=build_guard(loaded.config.governance.detection), clock=clock)
    app = create_app(gateway)
    await app.tenancy.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return Harness(app, client, clock, folder), gateway


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Harness]:
    harness, _ = await _harness(tmp_path, f"{{api_keys: [{{key: {CONFIG_KEY}, tenant: ops}}]}}")
    try:
        yield harness
    finally:
        await harness.client.aclose()
        await harness.app.tenancy.close()


async def _key(env: Harness, *scopes: str, tenant: str = "acme") -> dict[str, Any]:
    if (await env.call("POST", "/admin/tenants", CONFIG_KEY, {"name": tenant})).status_code not in (201, 400):
        raise AssertionError("tenant not created")
    created = await env.call("POST", "/admin/keys", CONFIG_KEY, {"tenant": tenant, "scopes": list(scopes)})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def test_every_admin_route_needs_an_admin_key(env: Harness) -> None:
    user = (await _key(env, "use", "read"))["key"]
    for method, path, body in ADMIN_ROUTES:
        missing = await env.call(method, path, None, body)
        assert missing.status_code == 401, (method, path)
        assert missing.json()["error"]["type"] == "authentication_error"
        wrong = await env.call(method, path, "hg_0123456789ab_" + "x" * 43, body)
        assert wrong.status_code == 401, (method, path)
        forbidden = await env.call(method, path, user, body)
        assert forbidden.status_code == 403, (method, path)
        assert "'admin' scope" in forbidden.json()["error"]["message"]


async def test_store_keys_authenticate_with_their_scopes(env: Harness) -> None:
    user = await _key(env, "use")
    reader = await _key(env, "read")
    assert (await env.call("GET", "/v1/models", user["key"])).status_code == 200
    assert (await env.call("GET", "/metrics", user["key"])).status_code == 403
    assert (await env.call("GET", "/dashboard/config.json", user["key"])).status_code == 403
    assert (await env.call("GET", "/metrics", reader["key"])).status_code == 200
    assert (await env.call("GET", "/v1/models", reader["key"])).status_code == 403
    # Anthropic clients get their own error format.
    denied = await env.client.post(
        "/v1/messages",
        headers={"x-api-key": reader["key"]},
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert denied.status_code == 403
    assert denied.json()["type"] == "error"
    assert denied.json()["error"]["type"] == "permission_error"
    # The config's keys still work.
    assert (await env.call("GET", "/metrics", CONFIG_KEY)).status_code == 200


async def test_revocation_is_immediate_here_and_within_the_cache_ttl_elsewhere(env: Harness) -> None:
    first = await _key(env, "use")
    second = await _key(env, "use")
    assert (await env.call("GET", "/v1/models", first["key"])).status_code == 200
    revoked = await env.call("POST", "/admin/keys/revoke", CONFIG_KEY, {"id": first["id"]})
    assert revoked.status_code == 200
    gone = await env.call("GET", "/v1/models", first["key"])
    assert gone.status_code == 401
    assert "revoked" in gone.json()["error"]["message"]
    # Revoked by another process (the CLI): honoured once the cached lookup expires.
    assert (await env.call("GET", "/v1/models", second["key"])).status_code == 200
    other = SQLiteStore(env.folder / "tenants.db")
    other.revoke_key(second["id"][3:], 0.0)
    other.close()
    assert (await env.call("GET", "/v1/models", second["key"])).status_code == 200
    env.clock.advance(5.1)
    assert (await env.call("GET", "/v1/models", second["key"])).status_code == 401


async def test_errors_never_echo_the_presented_key(env: Harness) -> None:
    forged = "hg_0123456789ab_" + "s" * 43
    for key in (forged, "sk-unknown-secret-value-123"):
        response = await env.call("GET", "/v1/models", key)
        assert response.status_code == 401
        assert key not in response.text
        assert key[-20:] not in response.text


async def test_malformed_admin_payloads_are_400_naming_the_field(env: Harness) -> None:
    await _key(env, "use")
    cases = [
        ({"tenant": "acme", "scopes": ["root"]}, "scopes[0]"),
        ({"tenant": "acme", "colour": "red"}, "colour"),
        ({"scopes": ["use"]}, "tenant"),
    ]
    for body, field in cases:
        response = await env.call("POST", "/admin/keys", CONFIG_KEY, body)
        assert response.status_code == 400, body
        assert field in response.json()["error"]["message"]
    not_json = await env.client.post(
        "/admin/tenants", headers={"authorization": f"Bearer {CONFIG_KEY}"}, content=b"{nope"
    )
    assert not_json.status_code == 400
    unknown = await env.call("POST", "/admin/keys", CONFIG_KEY, {"tenant": "ghost"})
    assert unknown.status_code == 404
    bad_id = await env.call("POST", "/admin/keys/revoke", CONFIG_KEY, {"id": "hg_zz"})
    assert bad_id.status_code == 400
    listed = await env.call("GET", "/admin/keys", CONFIG_KEY)
    assert all("key" not in k for k in listed.json()["data"])  # secrets are shown once only


async def test_admin_actions_are_audited(env: Harness) -> None:
    from hybridgate.tenancy.audit import verify

    created = await _key(env, "use")
    await env.call("POST", "/admin/keys/revoke", CONFIG_KEY, {"id": created["id"]})
    await env.app.tenancy.close()  # flushes the trail
    trail = (env.folder / "audit.jsonl").read_text()
    assert '"action":"key.create"' in trail
    assert '"action":"key.revoke"' in trail
    assert created["key"] not in trail
    assert CONFIG_KEY not in trail
    assert verify(env.folder / "audit.jsonl", b"test-audit-key-0123456789").ok


async def test_disabled_auth_is_explicit_and_loud(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="hybridgate.api"):
        harness, _ = await _harness(tmp_path, "{disabled: true}")
    assert "client authentication is OFF (server.auth.disabled is true)" in caplog.text
    try:
        ready = await harness.call("GET", "/readyz", None)
        assert "OFF" in ready.json()["auth"]["warning"]
        assert (await harness.call("GET", "/v1/models", None)).status_code == 200
    finally:
        await harness.client.aclose()
        await harness.app.tenancy.close()


async def test_readyz_reports_auth_on(env: Harness) -> None:
    ready = await env.call("GET", "/readyz", None)
    assert ready.json()["auth"] == {"enabled": True, "store": True}


async def test_a_key_may_use_only_its_models(env: Harness) -> None:
    await _key(env, "use")
    created = await env.call(
        "POST", "/admin/keys", CONFIG_KEY, {"tenant": "acme", "scopes": ["use"], "models": ["other"]}
    )
    key = created.json()["key"]
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    denied = await env.call("POST", "/v1/chat/completions", key, body)
    assert denied.status_code == 403
    assert "may not use model 'm'" in denied.json()["error"]["message"]
    assert _refused(await env.call("GET", "/metrics", CONFIG_KEY), "model_not_allowed") == 1


async def test_spend_is_kept_and_retried_when_the_store_is_locked(tmp_path: Path) -> None:
    import sqlite3

    from hybridgate.tenancy.governed import SpendRecorder
    from hybridgate.tenancy.store import AsyncStore, SpendDelta

    store = AsyncStore(SQLiteStore(tmp_path / "t.db", busy_timeout_s=0.05))
    recorder = SpendRecorder(store)
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    recorder.add([SpendDelta("b", "2026-11", 1.0, 5, 0.0)], None)
    await recorder.drain()
    assert recorder.failures >= 1
    other.execute("ROLLBACK")
    other.close()
    recorder.add([SpendDelta("b", "2026-11", 2.0, 5, 0.0)], None)
    await recorder.drain()
    spent = await store.call(store.sync.spend, lambda _: "2026-11", ["b"])
    assert spent["b"].usd == 3.0  # the failed batch was written with the next one
    await store.close()


async def test_budgets_managed_through_the_admin_api_apply_at_once(env: Harness) -> None:
    key = (await _key(env, "use"))["key"]
    chat = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    zero = {"name": "acme-zero", "tenant": "acme", "period": "day", "usd": 0}
    assert (await env.call("POST", "/admin/budgets", CONFIG_KEY, zero)).status_code == 201
    refused = await env.call("POST", "/v1/chat/completions", key, chat)
    assert refused.status_code == 402
    assert "budget 'acme-zero'" in refused.json()["error"]["message"]
    assert _refused(await env.call("GET", "/metrics", CONFIG_KEY), "budget") == 1
    listed = (await env.call("GET", "/admin/budgets", CONFIG_KEY)).json()["data"]
    assert {b["name"] for b in listed} == {"from-config", "acme-zero"}
    deleted = await env.call("POST", "/admin/budgets/delete", CONFIG_KEY, {"name": "acme-zero"})
    assert deleted.status_code == 200
    # No budget now: the request goes on to the (unreachable) upstream.
    assert (await env.call("POST", "/v1/chat/completions", key, chat)).status_code != 402
    clash = await env.call(
        "POST", "/admin/budgets", CONFIG_KEY, {"name": "from-config", "tenant": "a", "usd": 1}
    )
    assert clash.status_code == 400
    assert "defined in the configuration" in clash.json()["error"]["message"]
    both = await env.call(
        "POST", "/admin/budgets", CONFIG_KEY, {"name": "x", "tenant": "a", "key": "k", "usd": 1}
    )
    assert both.status_code == 400
    assert "exactly one of tenant or key" in both.json()["error"]["message"]
    missing = await env.call("POST", "/admin/budgets/delete", CONFIG_KEY, {"name": "nope"})
    assert missing.status_code == 404


async def test_budgets_set_elsewhere_are_picked_up_on_the_clock(env: Harness) -> None:
    from hybridgate.tenancy.service import BUDGET_RELOAD_S

    key = (await _key(env, "use"))["key"]
    chat = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    other = SQLiteStore(env.folder / "tenants.db")  # as the CLI does, from another process
    other.put_budget("acme-cli", {"name": "acme-cli", "tenant": "acme", "usd": 0}, 0.0)
    other.close()
    assert (await env.call("POST", "/v1/chat/completions", key, chat)).status_code != 402
    env.clock.advance(BUDGET_RELOAD_S)
    for _ in range(200):  # the reload reads the store on its thread
        if (await env.call("POST", "/v1/chat/completions", key, chat)).status_code == 402:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the budget set elsewhere was not picked up")


def _refused(metrics: httpx.Response, reason: str) -> float:
    """``hybridgate_admission_refused_total`` for ``reason``, summed over classes."""
    assert metrics.status_code == 200
    total = 0.0
    for line in metrics.text.splitlines():
        if line.startswith("hybridgate_admission_refused_total{") and f'reason="{reason}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_new_keys_are_unique() -> None:
    assert len({new_key().token for _ in range(100)}) == 100

"""Tenancy without a server: the store, keys, budgets on a manual clock, the audit trail, the CLI."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from hybridgate.cli import app
from hybridgate.clock import ManualClock
from hybridgate.config.tenancy import BudgetConfig
from hybridgate.errors import BudgetExhausted, InvalidRequest, NotFound, RateLimited, StoreUnavailable
from hybridgate.tenancy.audit import AuditWriter, verify
from hybridgate.tenancy.budgets import BudgetLedger, MaxCost
from hybridgate.tenancy.keys import KeyDefaults, new_key, parse_key, secret_matches
from hybridgate.tenancy.ratelimit import KeyRateLimiter
from hybridgate.tenancy.store import MIGRATIONS, SpendDelta, SQLiteStore, UsageRow

AUDIT_KEY = b"test-audit-key-0123456789"


# --------------------------------------------------------------------------- keys and store


def test_key_format_and_hash() -> None:
    key = new_key()
    parsed = parse_key(key.token)
    assert parsed is not None
    assert parsed[0] == key.key_id
    assert secret_matches(parsed[1], key.secret_sha256)
    assert not secret_matches(parsed[1][:-1] + ("A" if parsed[1][-1] != "A" else "B"), key.secret_sha256)
    assert parse_key("sk-config-key") is None
    assert parse_key(key.token + "x") is None


def test_store_migrates_and_stores_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    assert store.version == len(MIGRATIONS)
    store.create_tenant("acme", 1.0)
    key = new_key()
    record = store.create_key(
        key, "acme", name="ci", scopes=frozenset({"use"}), defaults=KeyDefaults(region="eu"), now=2.0
    )
    assert store.key(key.key_id) == record
    assert record.identity().tenant == "acme"
    assert record.identity().region == "eu"
    store.close()
    reopened = SQLiteStore(path)  # migrations are not applied twice
    assert reopened.version == len(MIGRATIONS)
    assert [r.key_id for r in reopened.keys("acme")] == [key.key_id]
    reopened.close()
    secret = key.token.split("_", 2)[2]
    for file in tmp_path.iterdir():
        assert secret.encode() not in file.read_bytes()


def test_store_errors_are_clear_and_nothing_is_half_written(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db", busy_timeout_s=0.05)
    with pytest.raises(NotFound, match="unknown tenant"):
        store.create_key(
            new_key(), "ghost", name="", scopes=frozenset({"use"}), defaults=KeyDefaults(), now=0
        )
    store.create_tenant("acme", 0)
    with pytest.raises(InvalidRequest, match="already exists"):
        store.create_tenant("acme", 0)
    with pytest.raises(NotFound):
        store.revoke_key("0123456789ab", 0)
    # Another process holds the write lock: the write fails whole, with a clear error.
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreUnavailable, match="locked"):
        store.record([SpendDelta("b", "2026-11", 1.0, 10, 0.0)], [])
    other.execute("ROLLBACK")
    other.close()
    assert store.spend(lambda _: "2026-11", ["b"])["b"].usd == 0.0
    store.record([SpendDelta("b", "2026-11", 1.0, 10, 0.0)] * 2, [])
    assert store.spend(lambda _: "2026-11", ["b"])["b"].usd == 2.0
    store.close()


def test_a_full_store_is_a_clear_error_and_nothing_is_half_written(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db", busy_timeout_s=0.05)
    store.record([SpendDelta("b", "2026-11", 1.0, 10, 0.0)], [])
    # Cap the file at its current size: the way to fill SQLite's "disk" without filling a disk
    # (the cap is the store connection's own setting, hence the private attribute).
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    many = [SpendDelta(f"budget-{i:05d}-{'x' * 200}", "2026-11", 1.0, 10, 0.0) for i in range(2000)]
    with pytest.raises(StoreUnavailable, match="the store's disk is full; nothing was written"):
        store.record([SpendDelta("b", "2026-11", 5.0, 10, 0.0), *many], [])
    assert store.spend(lambda _: "2026-11", ["b"])["b"].usd == 1.0, "the whole batch was rolled back"
    store._db.execute("PRAGMA max_page_count = 1073741823")
    store.record([SpendDelta("b", "2026-11", 5.0, 10, 0.0), *many], [])
    assert store.spend(lambda _: "2026-11", ["b"])["b"].usd == 6.0
    store.close()


# --------------------------------------------------------------------------- budgets


def _budget(**kw: object) -> BudgetConfig:
    base: dict[str, object] = {"name": "acme-daily", "tenant": "acme", "period": "day", "usd": 1.0}
    return BudgetConfig.model_validate({**base, **kw})


def test_reservations_are_held_until_settled_or_released() -> None:
    clock = ManualClock()
    ledger = BudgetLedger([_budget()], clock.wall)
    cost = MaxCost(usd=0.4, local_usd=0.01, tokens=100)
    first = ledger.reserve("acme", "k", cost, may_go_local=False)
    second = ledger.reserve("acme", "k", cost, may_go_local=False)
    with pytest.raises(BudgetExhausted, match=r"budget .acme-daily. \(day [0-9-]+\) is exhausted"):
        ledger.reserve("acme", "k", cost, may_go_local=False)
    ledger.release(first)
    third = ledger.reserve("acme", "k", cost, may_go_local=False)
    deltas = ledger.settle(second, 0.1, 50)
    assert [(d.usd, d.tokens) for d in deltas] == [(0.1, 50)]
    ledger.settle(third, 0.1, 50)
    assert ledger.settle(third, 0.1, 50) == []  # settled once only
    ledger.reserve("acme", "k", cost, may_go_local=False)  # 0.2 spent + 0.4 held fits in 1.0
    assert ledger.reserve("other-tenant", "k", cost, may_go_local=False).holds == []


def test_a_new_period_starts_from_zero() -> None:
    clock = ManualClock()
    ledger = BudgetLedger([_budget()], clock.wall)
    cost = MaxCost(usd=0.6, local_usd=0.0, tokens=1)
    ledger.settle(ledger.reserve("acme", "k", cost, may_go_local=False), 0.6, 1)
    with pytest.raises(BudgetExhausted):
        ledger.reserve("acme", "k", cost, may_go_local=False)
    clock.advance(86_400)
    ledger.reserve("acme", "k", cost, may_go_local=False)


def test_exhausted_budget_goes_local_only_then_refuses_past_the_local_allowance() -> None:
    clock = ManualClock()
    ledger = BudgetLedger([_budget(tokens=100, on_exhausted="local-only", local_usd=0.02)], clock.wall)
    ledger.settle(ledger.reserve("acme", "k", MaxCost(0.5, 0.0, 90), may_go_local=True), 0.5, 90)
    local = ledger.reserve("acme", "k", MaxCost(0.5, 0.01, 90), may_go_local=True)
    assert local.local_only is not None
    assert "acme-daily" in local.local_only
    with pytest.raises(BudgetExhausted):  # a cloud-only class has no local route
        ledger.reserve("acme", "k", MaxCost(0.5, 0.01, 90), may_go_local=False)
    ledger.settle(local, 0.015, 0)
    with pytest.raises(BudgetExhausted, match="local allowance"):
        ledger.reserve("acme", "k", MaxCost(0.5, 0.01, 90), may_go_local=True)


def test_budget_config_needs_one_subject_and_a_limit() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        BudgetConfig.model_validate({"name": "b", "usd": 1})
    with pytest.raises(ValueError, match="usd, tokens"):
        BudgetConfig.model_validate({"name": "b", "tenant": "t"})


# --------------------------------------------------------------------------- audit


def _trail(tmp_path: Path, n: int = 5) -> tuple[Path, list[bytes]]:
    path = tmp_path / "audit.jsonl"
    clock = ManualClock()
    writer = AuditWriter(path, AUDIT_KEY, clock.wall)
    for i in range(n):
        writer.append([{"event": "admin", "action": f"a{i}", "actor": "test"}])
    return path, path.read_bytes().splitlines(keepends=True)


def test_intact_trail_verifies(tmp_path: Path) -> None:
    path, lines = _trail(tmp_path)
    verdict = verify(path, AUDIT_KEY)
    assert verdict.ok
    assert verdict.entries == len(lines)
    assert not verify(path, b"another-key-0123456789").ok


def _tamper(path: Path, lines: list[bytes]) -> int | None:
    path.write_bytes(b"".join(lines))
    verdict = verify(path, AUDIT_KEY)
    assert not verdict.ok
    return verdict.bad_line


def test_each_kind_of_tampering_names_the_first_bad_entry(tmp_path: Path) -> None:
    path, lines = _trail(tmp_path)
    modified = orjson.loads(lines[2])
    modified["action"] = "nothing to see"
    assert _tamper(path, [*lines[:2], orjson.dumps(modified) + b"\n", *lines[3:]]) == 3
    assert _tamper(path, [*lines[:1], *lines[2:]]) == 2  # deletion
    forged = {**orjson.loads(lines[1]), "action": "forged"}
    assert _tamper(path, [*lines[:2], orjson.dumps(forged) + b"\n", *lines[2:]]) == 3  # insertion
    assert _tamper(path, [*lines[:2], lines[1], *lines[2:]]) == 3  # a replayed valid entry
    assert _tamper(path, [lines[0], lines[2], lines[1], *lines[3:]]) == 2  # reordering
    assert _tamper(path, lines[:-1]) == len(lines)  # the tail cut off: the head file knows
    assert _tamper(path, [*lines[:2], b"{not json\n", *lines[3:]]) == 3


def test_audit_verify_cli(tmp_path: Path) -> None:
    config = _config(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["tenants", "create", "-c", str(config), "acme"]).exit_code == 0
    result = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert result.exit_code == 0, result.output
    trail = tmp_path / "audit.jsonl"
    trail.write_bytes(trail.read_bytes().replace(b"acme", b"acne"))
    result = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert result.exit_code == 1
    assert "line 1" in result.output
    assert "MAC mismatch" in result.output


# --------------------------------------------------------------------------- CLI


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "gw.yaml"
    config.write_text(
        """
version: 1
deployments:
  cloud: {type: openai, base_url: "http://127.0.0.1:9/v1", model: gpt-4o-mini}
models:
  m: {deployments: [cloud]}
tenancy:
  store: tenants.db
  audit: {path: audit.jsonl, key: test-audit-key-0123456789}
"""
    )
    return config


def test_keys_and_tenants_cli(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    runner = CliRunner()
    assert runner.invoke(app, ["tenants", "create", "-c", config, "acme"]).exit_code == 0
    again = runner.invoke(app, ["tenants", "create", "-c", config, "acme"])
    assert again.exit_code == 1
    assert "already exists" in again.output
    created = runner.invoke(app, ["keys", "create", "-c", config, "--tenant", "acme", "--scope", "read"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    parsed = parse_key(token)
    assert parsed is not None
    listed = runner.invoke(app, ["keys", "list", "-c", config, "--json"])
    keys = orjson.loads(listed.stdout)
    assert [k["id"] for k in keys] == [f"hg_{parsed[0]}"]
    assert keys[0]["scopes"] == ["read"]
    assert parsed[1] not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", "-c", config, f"hg_{parsed[0]}"]).exit_code == 0
    twice = runner.invoke(app, ["keys", "revoke", "-c", config, f"hg_{parsed[0]}"])
    assert twice.exit_code == 1
    assert "already revoked" in twice.output
    bad = runner.invoke(app, ["keys", "create", "-c", config, "--tenant", "acme", "--scope", "root"])
    assert bad.exit_code == 1
    assert "scopes[0]" in bad.output
    tenants = orjson.loads(runner.invoke(app, ["tenants", "list", "-c", config, "--json"]).stdout)
    assert tenants[0]["name"] == "acme"
    assert tenants[0]["active_keys"] == 0
    assert verify(tmp_path / "audit.jsonl", AUDIT_KEY).entries == 3  # create tenant, key, revoke


def test_budgets_cli(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    runner = CliRunner()
    result = runner.invoke(
        app, ["budgets", "set", "-c", config, "acme-day", "--tenant", "acme", "--usd", "5"]
    )
    assert result.exit_code == 0, result.output
    listed = orjson.loads(runner.invoke(app, ["budgets", "list", "-c", config]).stdout)
    assert [(b["name"], b["usd"]) for b in listed] == [("acme-day", 5.0)]
    bad = runner.invoke(app, ["budgets", "set", "-c", config, "x", "--tenant", "a"])
    assert bad.exit_code == 1
    assert "set usd, tokens or both" in bad.output
    assert runner.invoke(app, ["budgets", "delete", "-c", config, "acme-day"]).exit_code == 0
    gone = runner.invoke(app, ["budgets", "delete", "-c", config, "acme-day"])
    assert gone.exit_code == 1
    assert "unknown budget" in gone.output


def test_cost_report_cli(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    store = SQLiteStore(tmp_path / "tenants.db")
    day = 1_795_000_000.0
    store.record(
        [],
        [
            UsageRow(day, "acme", "hg_x", "default", "cloud", "us", "cloud", 10, 5, 0.01),
            UsageRow(day + 1, "acme", "hg_x", "default", "local", "local", "tiny", 10, 5, 0.001),
            UsageRow(day + 2, "beta", "hg_y", "batch", "cloud", "us", "cloud", 20, 10, 0.02),
        ],
    )
    store.close()
    runner = CliRunner()
    result = runner.invoke(app, ["cost", "report", "-c", config, "--by", "tenant,placement", "--json"])
    assert result.exit_code == 0, result.output
    rows = orjson.loads(result.stdout)
    assert [(r["tenant"], r["placement"], r["requests"]) for r in rows] == [
        ("acme", "cloud", 1),
        ("acme", "local", 1),
        ("beta", "cloud", 1),
    ]
    bad = runner.invoke(app, ["cost", "report", "-c", config, "--by", "colour"])
    assert bad.exit_code == 1
    assert "unknown dimension" in bad.output


# --------------------------------------------------------------------------- rate limits


def test_requests_per_minute_refuse_with_the_wait_and_recover_on_the_clock() -> None:
    clock = ManualClock()
    limiter = KeyRateLimiter(clock)
    for _ in range(3):
        limiter.admit("k", 3, None, 10)
    with pytest.raises(RateLimited) as refused:
        limiter.admit("k", 3, None, 10)
    assert refused.value.status == 429
    assert refused.value.retry_after == pytest.approx(20.0)
    limiter.admit("other", 3, None, 10)  # keys are limited separately
    clock.advance(19.9)
    with pytest.raises(RateLimited):
        limiter.admit("k", 3, None, 10)
    clock.advance(0.1)
    limiter.admit("k", 3, None, 10)


def test_tokens_per_minute_are_corrected_by_actual_usage() -> None:
    clock = ManualClock()
    limiter = KeyRateLimiter(clock)
    first = limiter.admit("k", None, 1000, 600)
    with pytest.raises(RateLimited, match="1000 tokens per minute"):
        limiter.admit("k", None, 1000, 600)
    limiter.settle(first, 100)  # it used far fewer than estimated: the rest is given back
    limiter.admit("k", None, 1000, 600)
    with pytest.raises(RateLimited, match="exceed"):
        limiter.admit("k", None, 1000, 1001)
    # A refusal on tokens does not use up a request slot.
    with pytest.raises(RateLimited):
        limiter.admit("k", 1, 1000, 900)
    limiter.admit("k", 1, None, 0)


def test_a_corrupt_store_is_a_clear_error(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    (tmp_path / "tenants.db").write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(app, ["keys", "list", "-c", config])
    assert result.exit_code == 1
    assert "the store failed: file is not a database" in result.output
    assert "Traceback" not in result.output

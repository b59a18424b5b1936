"""The store: migrations, keys only as HMAC, an idempotent ledger with rollups, the audit log."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.gateway.keys import KeyLimits, hash_key, load_or_create_secret
from kimiflow.gateway.manage import create_key, secret_path, usage_report
from kimiflow.gateway.store import MIGRATIONS, LedgerRow, SQLiteStore, sqlite_path


def _row(request_id: str, key_id: str, *, ts: float = 1_796_000_000.0, model: str = "moonshot-v1-8k",
         cost: float = 0.5, status: int = 200) -> LedgerRow:
    return LedgerRow(request_id=request_id, ts=ts, key_id=key_id, model=model, status=status,
                     prompt_tokens=10, completion_tokens=20, cost_cny=cost)


def test_migrations_run_once_and_reopen(tmp_path: Path) -> None:
    """A second open applies nothing and keeps the data; user_version counts the migrations."""
    path = tmp_path / "g.sqlite"
    store = SQLiteStore(path)
    create_key(store, path, "crm", KeyLimits(rpm=5), actor="test")
    store.close()
    again = SQLiteStore(path)
    assert [r.name for r in again.list_keys()] == ["crm"]
    assert again._db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    again.close()


def test_key_is_stored_only_as_hmac(tmp_path: Path) -> None:
    """The database holds the keyed hash and prefix + last 4, never the key; the secret file is 0600."""
    path = tmp_path / "g.sqlite"
    store = SQLiteStore(path)
    key, record = create_key(store, path, "crm", KeyLimits(), actor="test")
    store.close()
    secret = load_or_create_secret(secret_path(path))
    assert record.key_hash == hash_key(secret, key)
    assert record.display.startswith(key[:8]) and record.display.endswith(key[-4:])
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("g.sqlite") and p.suffix != ".secret")
    assert key.encode() not in raw and key[8:-4].encode() not in raw
    assert stat.S_IMODE(secret_path(path).stat().st_mode) == 0o600


def test_duplicate_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    store = SQLiteStore(path)
    create_key(store, path, "crm", KeyLimits(), actor="test")
    with pytest.raises(InvalidArgumentError, match="already exists"):
        create_key(store, path, "crm", KeyLimits(), actor="test")
    store.close()


def test_ledger_is_idempotent_and_rollups_count_once(tmp_path: Path) -> None:
    """Writing the same batch twice (a retried commit, a restart) adds no row and no rollup."""
    store = SQLiteStore(tmp_path / "g.sqlite")
    rows = [_row("gw-1", "key_a"), _row("gw-2", "key_a", model="kimi-k2.5", cost=1.0), _row("gw-3", "key_b", status=429, cost=0.0)]
    assert store.write_ledger(rows) == 3
    assert store.write_ledger(rows) == 0
    assert len(store.ledger_rows()) == 3
    by_model = {r["model"]: r for r in store.usage(by="model")}
    assert by_model["moonshot-v1-8k"]["requests"] == 2 and by_model["moonshot-v1-8k"]["errors"] == 1
    assert by_model["kimi-k2.5"]["cost_cny"] == 1.0
    assert store.spend_since("key_a", "") == 1.5
    assert store.usage(by="day")[0]["requests"] == 3
    assert store.usage(since="2099-01-01") == []
    store.close()


def test_usage_by_key_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    store = SQLiteStore(path)
    _, record = create_key(store, path, "crm", KeyLimits(), actor="test")
    store.write_ledger([_row("gw-1", record.id)])
    assert usage_report(store, key_name="crm", since=None, by="key") == [
        {"key": record.id, "name": "crm", "requests": 1, "errors": 0, "prompt_tokens": 10, "cached_tokens": 0,
         "completion_tokens": 20, "cost_cny": 0.5}
    ]
    with pytest.raises(InvalidArgumentError, match="YYYY-MM-DD"):
        usage_report(store, key_name=None, since="yesterday", by="day")
    store.close()


def test_every_key_change_is_audited_and_bumps_the_version(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    store = SQLiteStore(path)
    v0 = store.keys_version()
    create_key(store, path, "crm", KeyLimits(), actor="cli")
    store.update_key("crm", KeyLimits(rpm=9), actor="http")
    store.revoke_key("crm", actor="cli")
    assert store.keys_version() == v0 + 3
    assert [(a["actor"], a["action"]) for a in store.audit_log()] == [
        ("cli", "keys.create"), ("http", "keys.update"), ("cli", "keys.revoke")]
    record = store.get_key("crm")
    assert record is not None and record.revoked is not None and record.limits.rpm == 9
    store.close()


def test_db_urls() -> None:
    assert sqlite_path("sqlite:///tmp/x.db") == Path("tmp/x.db")
    assert sqlite_path("sqlite:////tmp/x.db") == Path("/tmp/x.db")
    with pytest.raises(Exception, match="is not supported; use a file path, sqlite:///PATH or postgresql://"):
        sqlite_path("mysql://db/gateway")


def test_a_batch_holding_one_request_twice_counts_it_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.sqlite")
    store.write_ledger([_row("gw-1", "key_a")])
    batch = [_row("gw-1", "key_a"), _row("gw-2", "key_a"), _row("gw-2", "key_a"), *(_row(f"gw-x{n}", "key_b") for n in range(700))]
    assert store.write_ledger(batch) == 701
    assert store.usage(key_id="key_a", by="key")[0]["requests"] == 2
    assert store.usage(key_id="key_b", by="key")[0]["requests"] == 700
    store.close()

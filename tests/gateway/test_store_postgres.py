"""The PostgreSQL store on a real server: migrations, keys, a day-partitioned idempotent ledger with
rollups in the same transaction, retention by dropping partitions, files and audit, the URL factory."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from kimiflow.core.errors import ConfigError, InvalidArgumentError
from kimiflow.gateway.keys import KeyLimits
from kimiflow.gateway.manage import create_key
from kimiflow.gateway.store import LedgerRow, SQLiteStore, open_store, state_path, utc_day
from kimiflow.gateway.stores.postgres import MIGRATIONS, PostgresStore, split_url

DAY = 86_400.0
BASE = 1_796_000_000.0  # 2026-11-30 (UTC)


def _param(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


def _row(request_id: str, key_id: str, *, ts: float = BASE, model: str = "moonshot-v1-8k",
         cost: float = 0.5, status: int = 200, ended: str = "ok") -> LedgerRow:
    return LedgerRow(request_id=request_id, ts=ts, key_id=key_id, model=model, status=status,
                     prompt_tokens=10, cached_tokens=3, completion_tokens=20, cost_cny=cost, latency_ms=12.5,
                     ttft_ms=None if status >= 400 else 4.0, ended=ended)


def test_migrations_are_recorded_and_run_once(postgres_db: str, tmp_path: Path) -> None:
    store = PostgresStore(postgres_db)
    create_key(store, tmp_path / "state.db", "crm", KeyLimits(rpm=5), actor="test")
    store.close()
    again = PostgresStore(postgres_db)
    assert [r.name for r in again.list_keys()] == ["crm"]
    assert again.schema_version() == len(MIGRATIONS)
    with psycopg.connect(postgres_db) as db:
        assert db.execute("SELECT version FROM schema_migrations").fetchall() == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
        db.execute("INSERT INTO schema_migrations VALUES (%s, 0)", (len(MIGRATIONS) + 1,))
    again.close()
    with pytest.raises(ConfigError, match="newer kimiflow"):
        PostgresStore(postgres_db)


def test_keys_and_version_seen_by_another_replica(postgres_db: str, tmp_path: Path) -> None:
    """A key change through one connection is visible to a second one at once (keys_version bumps)."""
    one, two = PostgresStore(postgres_db), PostgresStore(postgres_db)
    state = tmp_path / "state.db"
    before = two.keys_version()
    create_key(one, state, "crm", KeyLimits(rpm=5, models=("kimi-k2.5",)), actor="cli")
    assert two.keys_version() == before + 1
    record = two.get_key("crm")
    assert record is not None and record.limits.rpm == 5 and record.limits.models == ("kimi-k2.5",)
    with pytest.raises(InvalidArgumentError, match="already exists"):
        create_key(two, state, "crm", KeyLimits(), actor="cli")
    assert one.keys_version() == before + 1  # the refused create bumped nothing
    updated = two.update_key("crm", KeyLimits(rpm=9), actor="http")
    assert one.get_key("crm") == updated and one.keys_version() == before + 2
    revoked = one.revoke_key("crm", actor="http")
    assert revoked.revoked is not None and two.list_keys(include_revoked=False) == []
    with pytest.raises(InvalidArgumentError, match="no key named 'nope'"):
        one.update_key("nope", KeyLimits(), actor="http")
    assert [e["action"] for e in two.audit_log()] == ["keys.create", "keys.update", "keys.revoke"]
    one.close()
    two.close()


def test_ledger_is_idempotent_and_rollups_count_once(postgres_db: str) -> None:
    store = PostgresStore(postgres_db)
    rows = [_row("gw-1", "key_a"), _row("gw-2", "key_a", model="kimi-k2.5", cost=1.0),
            _row("gw-3", "key_b", status=429, cost=0.0, ended="error"), _row("gw-1", "key_a")]
    assert store.write_ledger(rows) == 3  # the id twice in one batch goes in once
    assert store.write_ledger(rows) == 0
    assert store.write_ledger([*rows, _row("gw-4", "key_b", ts=BASE + DAY)]) == 1
    stored = store.ledger_rows()
    assert [r.request_id for r in stored] == ["gw-1", "gw-2", "gw-3", "gw-4"]
    assert stored[0] == rows[0]  # every column round-trips
    assert store.usage(by="model") == [
        {"model": "kimi-k2.5", "requests": 1, "errors": 0, "prompt_tokens": 10, "cached_tokens": 3,
         "completion_tokens": 20, "cost_cny": 1.0},
        {"model": "moonshot-v1-8k", "requests": 3, "errors": 1, "prompt_tokens": 30, "cached_tokens": 9,
         "completion_tokens": 60, "cost_cny": 1.0},
    ]
    assert store.spend_since("key_a", "") == pytest.approx(1.5)
    assert store.spend_since("key_b", utc_day(BASE + DAY)) == pytest.approx(0.5)
    assert [r.request_id for r in store.recent_problems()] == ["gw-3"]
    assert store.write_ledger([]) == 0
    store.close()


def test_usage_matches_sqlite_and_raw_rows(postgres_db: str, tmp_path: Path) -> None:
    """The same random rows give the same usage report on both stores, and it equals the raw sums."""
    rng = random.Random(5)
    rows = [_row(f"gw-{i}", rng.choice(["key_a", "key_b", "key_c"]), ts=BASE + rng.uniform(-3, 3) * DAY,
                 model=rng.choice(["kimi-k2.5", "moonshot-v1-8k"]), cost=round(rng.uniform(0, 2), 4),
                 status=rng.choice([200, 200, 200, 429, 500])) for i in range(600)]
    pg, lite = PostgresStore(postgres_db), SQLiteStore(tmp_path / "g.sqlite")
    for start in range(0, len(rows), 150):
        assert pg.write_ledger(rows[start : start + 150]) == lite.write_ledger(rows[start : start + 150]) == 150
    for by in ("day", "model", "key"):
        for since in (None, utc_day(BASE)):
            assert pg.usage(by=by, since=since) == lite.usage(by=by, since=since), (by, since)
        assert pg.usage(by=by, key_id="key_b") == lite.usage(by=by, key_id="key_b")
    by_day = {entry["day"]: entry["requests"] for entry in pg.usage(by="day")}
    raw: dict[str, int] = {}
    for r in rows:
        raw[utc_day(r.ts)] = raw.get(utc_day(r.ts), 0) + 1
    assert by_day == raw
    with pytest.raises(InvalidArgumentError, match="--by must be one of"):
        pg.usage(by="hour")
    with pytest.raises(InvalidArgumentError, match="--since must be a day"):
        pg.usage(since="yesterday")
    pg.close()
    lite.close()


def test_ledger_is_partitioned_by_day_and_retention_drops_partitions(postgres_db: str) -> None:
    today = datetime.now(timezone.utc).date()
    noon = datetime(today.year, today.month, today.day, 12, tzinfo=timezone.utc).timestamp()
    store = PostgresStore(_param(postgres_db, "retention_days=3"))
    assert store.retention_days == 3
    # Rows 0..5 days old; writing applies the retention at once: only today and the two days before stay.
    rows = [_row(f"gw-{age}", "key_a", ts=noon - age * DAY, cost=1.0) for age in range(6)]
    assert store.write_ledger(rows) == 6
    names = store.partitions()
    assert names == sorted(f"ledger_p{today - timedelta(days=age):%Y%m%d}" for age in (-1, 0, 1, 2))
    assert sorted(r.request_id for r in store.ledger_rows()) == ["gw-0", "gw-1", "gw-2"]
    # The rollups keep the history the raw rows no longer have.
    assert sum(e["requests"] for e in store.usage(by="day")) == 6
    # A later day drops more; re-writing a dropped day's row recreates its partition (the id is new there).
    assert store.apply_retention(today=today + timedelta(days=2)) == [
        f"ledger_p{today - timedelta(days=1):%Y%m%d}", f"ledger_p{today - timedelta(days=2):%Y%m%d}"][::-1]
    assert [r.request_id for r in store.ledger_rows()] == ["gw-0"]
    # Another replica dropped a partition this one had cached: the write recreates it instead of failing.
    with psycopg.connect(postgres_db, autocommit=True) as db:
        db.execute(f"DROP TABLE ledger_p{today:%Y%m%d}")
    assert store.write_ledger([_row("gw-new", "key_a", ts=noon)]) == 1
    assert [r.request_id for r in store.ledger_rows()] == ["gw-new"]
    with psycopg.connect(postgres_db) as db:
        (kind,) = db.execute("SELECT relkind FROM pg_class WHERE relname = 'ledger'").fetchone() or ("?",)
    assert kind == "p"  # a partitioned table
    store.close()
    plain = PostgresStore(postgres_db)
    assert plain.retention_days is None and plain.apply_retention() == []
    plain.close()


def test_files_ownership(postgres_db: str) -> None:
    store = PostgresStore(postgres_db)
    store.add_file("file-1", "key_a")
    store.add_file("file-2", "key_a")
    store.add_file("file-2", "key_b")  # re-upload under another key moves ownership
    assert store.file_owner("file-1") == "key_a" and store.file_owner("file-2") == "key_b"
    assert store.files_of("key_a") == {"file-1"}
    store.remove_file("file-1")
    assert store.file_owner("file-1") is None and store.files_of("key_a") == set()
    store.audit("http", "files.delete", "key_a", {"file": "file-1"})
    assert store.audit_log()[-1]["details"] == {"file": "file-1"}
    store.close()


def test_factory_and_bad_urls(postgres_db: str, tmp_path: Path) -> None:
    store = open_store(postgres_db)
    assert isinstance(store, PostgresStore)
    store.close()
    lite = open_store(str(tmp_path / "g.sqlite"))
    assert isinstance(lite, SQLiteStore)
    lite.close()
    assert split_url("postgresql://u@h/db?sslmode=disable&retention_days=7") == ("postgresql://u@h/db?sslmode=disable", 7)
    for bad in ("0", "x", "-2"):
        with pytest.raises(ConfigError, match="retention_days must be a whole number"):
            open_store(_param(postgres_db, f"retention_days={bad}"))
    with pytest.raises(ConfigError, match=r"cannot connect to the gateway database.*check the postgresql:// URL"):
        PostgresStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert state_path(str(tmp_path / "g.sqlite"), tmp_path) == tmp_path / "g.sqlite"
    pg_state = state_path("postgresql://u:secret@db.internal:6543/gw", tmp_path)
    assert pg_state == tmp_path / "gateway-pg-db.internal-6543-gw.db" and "secret" not in str(pg_state)
    assert date.fromisoformat(utc_day(BASE)) == date(2026, 11, 30)

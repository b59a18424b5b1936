"""``BatchStore``: the lock, path refusals, a failed commit taken back, journal migrations and damage."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from kimiflow.batch.journal import DONE, IN_FLIGHT, PENDING, SCHEMA_VERSION, DoneStats, Journal, JournalError
from kimiflow.batch.output import success_record
from kimiflow.batch.paths import BatchPaths, PathConflictError
from kimiflow.batch.store import BatchStore, BatchStoreError, reconcile

from .conftest import read_jsonl

STATS = DoneStats(attempts=1, prompt_tokens=10, completion_tokens=5, cost_cny=0.001, latency_ms=12.0)
IDS = [("a", 1), ("b", 2), ("c", 3)]


def open_store(tmp_path: Path, **kw: object) -> BatchStore:
    paths = BatchPaths.for_output(tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    return BatchStore.open(paths, fingerprint="sha256:abc", params={"model": "m"}, requests=lambda: IDS,
                           **kw)  # type: ignore[arg-type]


def record(cid: str) -> dict[str, object]:
    return success_record(cid, 200, "rid", {"id": "x", "usage": {"prompt_tokens": 10, "completion_tokens": 5}},
                          attempts=1, latency_ms=12.0, cost_cny=0.001)


def test_a_second_store_on_the_same_output_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with open_store(tmp_path):
        with pytest.raises(BatchStoreError) as caught:
            open_store(tmp_path)
        assert str(caught.value) == (
            f"another kimiflow batch (pid {os.getpid()}) is writing {tmp_path / 'out.jsonl'}; wait for it or stop it"
        )
    with open_store(tmp_path) as again:  # closing dropped the lock
        assert again.counts()[PENDING] == 3


def test_a_failed_commit_takes_the_line_back_and_the_store_goes_on(tmp_path: Path) -> None:
    store = open_store(tmp_path, busy_timeout=0.05)
    out = tmp_path / "out.jsonl"
    store.mark_sent("a")
    store.record_success(record("a"), STATS)
    size = out.stat().st_size
    store.mark_sent("b")
    other = sqlite3.connect(tmp_path / "out.journal.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the journal: the commit of b fails
    with pytest.raises(BatchStoreError, match=r"cannot record the result of 'b': the journal .* is locked.*"
                                              r"its output line was taken back"):
        store.record_success(record("b"), STATS)
    assert out.stat().st_size == size and store.journal.output_bytes == size
    assert store.journal.status("b") == IN_FLIGHT
    other.execute("ROLLBACK")
    other.close()
    store.record_success(record("b"), STATS)  # the journal is free again: nothing is stuck
    store.close()
    assert [r["custom_id"] for r in read_jsonl(out)] == ["a", "b"]


def test_a_failed_commit_whose_line_cannot_be_cut_back_stops_every_later_record(tmp_path: Path) -> None:
    store = open_store(tmp_path, busy_timeout=0.05)
    store.mark_sent("a")
    store.mark_sent("b")
    other = sqlite3.connect(tmp_path / "out.journal.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    os.close(store._out)
    store._out = os.open(tmp_path / "out.jsonl", os.O_RDONLY)  # writes and truncation now fail
    try:
        with pytest.raises(BatchStoreError):
            store.record_success(record("a"), STATS)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with pytest.raises(BatchStoreError, match="could not be cut back"):
        store.record_success(record("b"), STATS)
    store.close()


@pytest.mark.parametrize("errors_as", ["output", "journal", "summary", "input", "symlink", "hardlink"])
def test_an_errors_path_that_is_another_file_of_the_batch_is_refused(tmp_path: Path, errors_as: str) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("{}\n")
    out.write_text("kept\n")
    target = {"output": out, "journal": tmp_path / "out.journal.sqlite", "summary": tmp_path / "out.summary.json",
              "input": inp, "symlink": tmp_path / "link.jsonl", "hardlink": tmp_path / "hard.jsonl"}[errors_as]
    if errors_as == "symlink":
        target.symlink_to(out)
    if errors_as == "hardlink":
        os.link(out, target)
    with pytest.raises(PathConflictError, match=r"are the same file; every file of a batch must be its own"):
        BatchPaths.for_output(inp, out, target)
    assert out.read_text() == "kept\n"


def test_output_equal_to_input_is_refused_naming_both(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    with pytest.raises(PathConflictError, match=f"the input {inp} and output= {inp} are the same file"):
        BatchPaths.for_output(inp, inp)


@pytest.mark.parametrize("content", [b"this is not a database" * 200, b""])
def test_a_garbage_journal_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    journal = tmp_path / "out.journal.sqlite"
    journal.write_bytes(content or b"SQLite format 3\x00" + b"\xff" * 200)  # truncated header
    with pytest.raises(JournalError, match=r"is damaged or not a journal .*move it and the output away"):
        open_store(tmp_path)
    journal.unlink()  # the refused open dropped its lock: without the damaged journal it opens at once
    with open_store(tmp_path) as store:
        assert store.counts()[PENDING] == 3


# -- migrations ------------------------------------------------------------------------------

OLD_SCHEMA = [  # the journal schema as kimiflow wrote it before migrations were counted (user_version 0)
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS requests (
        custom_id TEXT PRIMARY KEY,
        line INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        updated REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost_cny REAL,
        latency_ms REAL,
        error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS requests_status ON requests (status)",
    """CREATE TABLE IF NOT EXISTS transitions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        custom_id TEXT NOT NULL,
        status TEXT NOT NULL,
        at REAL NOT NULL
    )""",
]


def old_journal(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in OLD_SCHEMA:
        db.execute(statement)
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("fingerprint", "sha256:abc"), ("params", '{"model": "m"}'),
                                                      ("registered", "1"), ("output_bytes", "0")])
    db.executemany("INSERT INTO requests (custom_id, line, status, prompt_tokens, completion_tokens, cost_cny, "
                   "latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [("a", 1, "done", 7, 3, 0.5, 10.0), ("b", 2, "pending", None, None, None, None)])
    db.executemany("INSERT INTO transitions (custom_id, status, at) VALUES (?, ?, 1.0)",
                   [("a", "in_flight"), ("a", "done")])
    db.close()


def test_a_journal_written_before_migrations_opens_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "out.journal.sqlite"
    old_journal(path)
    with Journal.open(path) as journal:
        assert journal._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert journal.status("a") == DONE and journal.status("b") == PENDING
        assert journal.totals()["prompt_tokens"] == 7 and journal.transitions("a") == [PENDING, IN_FLIGHT, DONE]
        assert journal.bind("sha256:abc", {"model": "m"}) is False
        assert journal.reset_done(["a"]) == 1
        assert journal.audit("a")[-1] == (PENDING, "result missing from the output")
    with Journal.open(path) as again:  # opening twice migrates once
        assert again._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_journal_from_a_newer_kimiflow_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.journal.sqlite"
    Journal.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(JournalError, match=r"written by a newer kimiflow .*upgrade kimiflow"):
        Journal.open(path)


def test_repair_of_a_shortened_output_audits_each_requeued_id(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for cid in "ab":
        store.mark_sent(cid)
        store.record_success(record(cid), STATS)
    store.close()
    out = tmp_path / "out.jsonl"
    out.write_bytes(out.read_bytes().split(b"\n")[0] + b"\n")
    with Journal.open(tmp_path / "out.journal.sqlite") as journal:
        report = reconcile(out, journal)
        assert report.lost == 1 and journal.status("b") == PENDING
        assert journal.audit("b")[-1] == (PENDING, "result missing from the output")
        assert journal.get_meta("full_repair") is None


def test_the_crash_seam_refuses_an_unknown_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIMIFLOW_BATCH_CRASH_AT", "after-lunch")
    with pytest.raises(BatchStoreError, match="KIMIFLOW_BATCH_CRASH_AT='after-lunch': expected one of"):
        open_store(tmp_path)
    assert json.dumps(sorted(os.listdir(tmp_path))) == "[]"  # refused before any file was made

"""The journal's state machine, its binding to input and parameters, and output reconciliation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimiflow.batch.journal import (
    DONE,
    FAILED,
    IN_FLIGHT,
    PENDING,
    DoneStats,
    Journal,
    JournalMismatchError,
    JournalStateError,
)
from kimiflow.batch.output import success_record
from kimiflow.batch.paths import BatchPaths
from kimiflow.batch.store import BatchStore, rebuild_errors, reconcile

from .conftest import read_jsonl

STATS = DoneStats(attempts=1, prompt_tokens=10, completion_tokens=5, cost_cny=0.001, latency_ms=12.0)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal.open(tmp_path / "out.journal.sqlite")
    j.bind("sha256:abc", {"model": "m"})
    j.register([("a", 1), ("b", 2), ("c", 3)])
    return j


def record(cid: str) -> dict[str, object]:
    return success_record(cid, 200, "rid", {"id": "x", "usage": {"prompt_tokens": 10, "completion_tokens": 5}},
                          attempts=1, latency_ms=12.0, cost_cny=0.001)


def test_the_journal_uses_wal(journal: Journal) -> None:
    assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_register_is_idempotent(journal: Journal) -> None:
    assert journal.register([("a", 1), ("d", 4)]) == 1
    assert journal.counts() == {PENDING: 4, IN_FLIGHT: 0, DONE: 0, FAILED: 0}


def test_state_machine_allows_only_the_documented_moves(journal: Journal) -> None:
    with pytest.raises(JournalStateError, match="'a' cannot move from pending to done"):
        journal.mark_done("a", STATS, 0)
    journal.mark_in_flight("a")
    journal.mark_done("a", STATS, 100)
    with pytest.raises(JournalStateError, match="from done to in_flight"):
        journal.mark_in_flight("a")
    with pytest.raises(JournalStateError, match="from done to pending"):
        journal.mark_pending("a")
    journal.mark_in_flight("b")
    journal.mark_failed("b", 3, {"custom_id": "b", "reason": "500"})
    with pytest.raises(JournalStateError):
        journal.mark_done("b", STATS, 0)
    with pytest.raises(JournalStateError, match="unknown"):
        journal.mark_in_flight("zzz")
    assert journal.transitions("a") == [PENDING, IN_FLIGHT, DONE]
    assert journal.transitions("b") == [PENDING, IN_FLIGHT, FAILED]
    assert journal.output_bytes == 100


def test_a_refused_move_leaves_nothing_behind(journal: Journal) -> None:
    with pytest.raises(JournalStateError):
        journal.mark_done("a", STATS, 999)
    assert journal.output_bytes == 0 and journal.status("a") == PENDING


def test_resume_resets_in_flight_and_retry_failed_resets_failures(journal: Journal) -> None:
    journal.mark_in_flight("a")
    journal.mark_in_flight("b")
    journal.mark_failed("b", 2, {"custom_id": "b"})
    assert journal.reset_in_flight() == 1
    assert journal.status("a") == PENDING and journal.status("b") == FAILED
    assert journal.reset_failed() == 1
    assert journal.counts()[PENDING] == 3
    assert journal.transitions("b")[-1] == PENDING


def test_the_totals_bill_answered_failures_and_keep_them_after_retry_failed(journal: Journal) -> None:
    """A line whose answers never matched the schema was still billed; sent again, both bills count."""
    journal.mark_in_flight("a")
    journal.mark_done("a", STATS, 100)
    journal.mark_in_flight("b")
    journal.mark_failed("b", 1, {"custom_id": "b", "usage": {"prompt_tokens": 30, "completion_tokens": 20},
                                 "cost_cny": 0.004})
    journal.mark_in_flight("c")
    journal.mark_failed("c", 3, {"custom_id": "c", "reason": "500"})  # never answered: nothing billed
    first = journal.totals()
    assert (first["prompt_tokens"], first["completion_tokens"], first["attempts"]) == (40, 25, 1)
    assert first["cost_cny"] == pytest.approx(0.005)
    assert journal.reset_failed() == 2
    assert journal.totals() == first  # the bills stay when the failures go back to pending
    journal.mark_in_flight("b")
    journal.mark_done("b", STATS, 200)
    after = journal.totals()
    assert (after["prompt_tokens"], after["completion_tokens"], after["attempts"]) == (50, 30, 2)
    assert after["cost_cny"] == pytest.approx(0.006)


def test_bind_refuses_another_input_or_other_parameters(tmp_path: Path, journal: Journal) -> None:
    assert journal.bind("sha256:abc", {"model": "m"}) is False
    with pytest.raises(JournalMismatchError, match="input file changed"):
        journal.bind("sha256:other", {"model": "m"})
    with pytest.raises(JournalMismatchError, match="model: 'm' -> 'n'"):
        journal.bind("sha256:abc", {"model": "n"})


def test_journal_survives_reopening(tmp_path: Path, journal: Journal) -> None:
    journal.mark_in_flight("a")
    journal.mark_done("a", STATS, 50)
    journal.close()
    again = Journal.open(tmp_path / "out.journal.sqlite")
    assert again.status("a") == DONE and again.output_bytes == 50
    assert again.totals()["prompt_tokens"] == 10


def test_latency_percentiles_are_nearest_rank(journal: Journal) -> None:
    for i, cid in enumerate("abc"):
        journal.mark_in_flight(cid)
        journal.mark_done(cid, DoneStats(1, 1, 1, 0.0, float(10 * (i + 1))), 0)
    assert journal.latency_percentiles(0.5, 0.95, 0.0) == [20.0, 30.0, 10.0]


# -- output writing and reconciliation -------------------------------------------------------


def writer(tmp_path: Path, journal: Journal) -> BatchStore:
    """The store over the fixture's journal (bound with the same fingerprint and parameters)."""
    paths = BatchPaths.for_output(tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    return BatchStore.open(paths, fingerprint="sha256:abc", params={"model": "m"}, requests=lambda: [])


def test_store_appends_then_commits_the_size(tmp_path: Path, journal: Journal) -> None:
    w = writer(tmp_path, journal)
    journal.mark_in_flight("a")
    w.record_success(record("a"), STATS)
    w.close()
    out = tmp_path / "out.jsonl"
    assert journal.status("a") == DONE and journal.output_bytes == out.stat().st_size
    assert read_jsonl(out)[0]["custom_id"] == "a"


def test_reconcile_adopts_a_line_written_before_the_crash_could_commit_it(tmp_path: Path, journal: Journal) -> None:
    w = writer(tmp_path, journal)
    journal.mark_in_flight("a")
    w.record_success(record("a"), STATS)
    journal.mark_in_flight("b")
    out = tmp_path / "out.jsonl"
    with out.open("ab") as f:  # kill -9 after the write, before the commit
        f.write(json.dumps(record("b")).encode() + b"\n")
    w.close()
    report = reconcile(out, journal)
    assert report.adopted == ["b"] and not report.torn_bytes
    assert journal.status("b") == DONE
    assert journal.output_bytes == out.stat().st_size
    assert [r["custom_id"] for r in read_jsonl(out)] == ["a", "b"]
    assert not reconcile(out, journal).changed  # a second pass finds nothing to do


def test_reconcile_truncates_a_torn_last_line(tmp_path: Path, journal: Journal) -> None:
    w = writer(tmp_path, journal)
    journal.mark_in_flight("a")
    w.record_success(record("a"), STATS)
    w.close()
    out = tmp_path / "out.jsonl"
    size = out.stat().st_size
    with out.open("ab") as f:
        f.write(json.dumps(record("b")).encode()[:30])
    report = reconcile(out, journal)
    assert report.torn_bytes == 30 and report.adopted == []
    assert out.stat().st_size == size and journal.status("b") == PENDING


def test_reconcile_drops_a_duplicate_of_a_committed_result(tmp_path: Path, journal: Journal) -> None:
    w = writer(tmp_path, journal)
    journal.mark_in_flight("a")
    w.record_success(record("a"), STATS)
    w.close()
    out = tmp_path / "out.jsonl"
    with out.open("ab") as f:
        f.write(json.dumps(record("a")).encode() + b"\n")
    report = reconcile(out, journal)
    assert report.dropped_duplicates == 1
    assert [r["custom_id"] for r in read_jsonl(out)] == ["a"]


def test_reconcile_requeues_results_missing_from_a_shortened_output(tmp_path: Path, journal: Journal) -> None:
    w = writer(tmp_path, journal)
    for cid in "ab":
        journal.mark_in_flight(cid)
        w.record_success(record(cid), STATS)
    w.close()
    out = tmp_path / "out.jsonl"
    first_line = out.read_bytes().split(b"\n")[0] + b"\n"
    out.write_bytes(first_line)  # b lost: the file was shortened by hand
    report = reconcile(out, journal)
    assert report.full_scan and report.lost == 1
    assert journal.status("b") == PENDING and journal.status("a") == DONE
    assert [r["custom_id"] for r in read_jsonl(out)] == ["a"]


def test_verify_finds_duplicates_anywhere_in_the_file(tmp_path: Path, journal: Journal) -> None:
    w = writer(tmp_path, journal)
    for cid in "ab":
        journal.mark_in_flight(cid)
        w.record_success(record(cid), STATS)
    w.close()
    out = tmp_path / "out.jsonl"
    first_line = out.read_bytes().split(b"\n")[0] + b"\n"
    out.write_bytes(first_line + first_line)  # same size as before, so only a full check sees it
    report = reconcile(out, journal, verify=True)
    assert report.dropped_duplicates == 1 and report.lost == 1
    assert [r["custom_id"] for r in read_jsonl(out)] == ["a"]
    assert journal.status("b") == PENDING


def test_errors_file_is_rebuilt_from_the_journal(tmp_path: Path, journal: Journal) -> None:
    w = writer(tmp_path, journal)
    journal.mark_in_flight("c")
    w.record_failure({"custom_id": "c", "reason": "boom"}, 3)
    w.close()
    errors = tmp_path / "out.errors.jsonl"
    errors.write_bytes(b'{"custom_id": "c", "rea')  # torn
    assert rebuild_errors(errors, journal) == 1
    assert read_jsonl(errors) == [{"custom_id": "c", "reason": "boom"}]

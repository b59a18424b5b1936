"""The ledger journal: what ``durable`` wrote survives the process; replay adds no duplicate; segments go away."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kimiflow.gateway import ledger
from kimiflow.gateway.ledger import LedgerWriter, journal_path
from kimiflow.gateway.store import LedgerRow, SQLiteStore


def _row(n: int) -> LedgerRow:
    return LedgerRow(request_id=f"gw-{n}", ts=1_796_000_000.0 + n, key_id="key_a", model="moonshot-v1-8k",
                     status=200, prompt_tokens=5, completion_tokens=7, cost_cny=0.01, ttft_ms=1.5)


def test_journaled_rows_are_recovered_once(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    store = SQLiteStore(db)

    async def crash() -> None:
        writer = LedgerWriter(store, journal_path(db))
        writer.start()
        for n in range(5):
            writer.durable(_row(n))  # journaled; the commit task never gets to run: the process "dies"
        assert writer._task is not None
        writer._task.cancel()
        os.close(writer._fd)  # type: ignore[arg-type]
        os.close(writer._lock_fd)  # type: ignore[arg-type]  # the kernel releases a dead process's lock
        writer._executor.shutdown()

    asyncio.run(crash())
    assert store.ledger_rows() == []
    with open(next(tmp_path.glob("g.sqlite.ledger-journal.*.0")), "ab") as journal:
        journal.write(b'{"request_id": "gw-torn", "ts": 1.0, "key')  # the line a kill cut short
    assert LedgerWriter(store, journal_path(db)).recover() == 5
    assert [r.request_id for r in store.ledger_rows()] == [f"gw-{n}" for n in range(5)]
    assert store.ledger_rows()[0] == _row(0)
    assert LedgerWriter(store, journal_path(db)).recover() == 0  # the journal is gone; nothing twice
    assert not list(tmp_path.glob("g.sqlite.ledger-journal*"))
    store.close()


def test_segments_rotate_and_are_removed_once_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "SEGMENT_BYTES", 2_000)
    db = tmp_path / "g.sqlite"
    store = SQLiteStore(db)

    async def run() -> int:
        writer = LedgerWriter(store, journal_path(db))
        writer.start()
        most = 0
        for n in range(300):
            writer.durable(_row(n))
            if n % 7 == 0:
                most = max(most, len(list(tmp_path.glob("g.sqlite.ledger-journal.*"))))
                await asyncio.sleep(0)
        for _ in range(500):
            if writer.pending == 0:
                break
            await asyncio.sleep(0.01)
        await writer.close()
        return most

    most = asyncio.run(run())
    assert most >= 2  # it did rotate
    assert len(store.ledger_rows()) == 300
    assert not list(tmp_path.glob("g.sqlite.ledger-journal*"))
    store.close()

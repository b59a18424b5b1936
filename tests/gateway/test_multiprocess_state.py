"""Several gateway processes on one state path (one SQLite file, or one PostgreSQL URL with one
``KIMIFLOW_HOME``): each journals into files of its own under a lock, a restarted process replays only
the journal of the one that died, and a live process's journal is never touched."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import msgspec
import pytest

from kimiflow.gateway import REQUEST_ID_HEADER, ledger
from kimiflow.gateway.ledger import LedgerWriter, journal_path
from kimiflow.gateway.store import LedgerRow, SQLiteStore, state_path
from kimiflow.sim import LatencyModel, Simulator
from tests.gateway.conftest import StoreBackend
from tests.gateway.test_serve import BODY, Served, _create_key, _env


def _row(n: int) -> LedgerRow:
    return LedgerRow(request_id=f"gw-{n}", ts=1_796_000_000.0 + n, key_id="key_a", model="moonshot-v1-8k",
                     status=200, prompt_tokens=5, completion_tokens=7, cost_cny=0.01)


def _line(row: LedgerRow) -> bytes:
    return msgspec.json.encode(row) + b"\n"


def _die(writer: LedgerWriter) -> None:
    """What ``kill -9`` leaves: the journal files as they are, the lock released by the kernel."""
    assert writer._task is not None and writer._fd is not None and writer._lock_fd is not None
    assert writer._adopter is not None
    writer._task.cancel()
    writer._adopter.cancel()
    os.close(writer._fd)
    os.close(writer._lock_fd)
    writer._executor.shutdown()


def test_recover_replays_dead_journals_and_leaves_a_live_one_alone(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    store = SQLiteStore(db)
    journal = journal_path(db)
    journal.with_name(journal.name + ".0").write_bytes(  # a journal of a kimiflow from before per-process files
        b"".join(_line(_row(n)) for n in (100, 101)))

    async def run() -> None:
        live, dead = LedgerWriter(store, journal), LedgerWriter(store, journal)
        live.start()
        dead.start()
        for n in range(5):
            live.durable(_row(n))  # journaled, not committed yet (the writer task has not run)
            dead.durable(_row(10 + n))
        _die(dead)
        live_files = {p: p.stat().st_ino for p in tmp_path.glob(f"g.sqlite.ledger-journal.{live._owner}.*")}
        assert len(live_files) == 2  # its lock and its segment
        restarted = LedgerWriter(store, journal)
        assert restarted.recover() == 7  # the dead one's five rows and the old journal's two
        assert {p: p.stat().st_ino for p in live_files} == live_files
        assert sorted(r.request_id for r in store.ledger_rows()) == sorted(
            [f"gw-{n}" for n in (10, 11, 12, 13, 14, 100, 101)])
        assert LedgerWriter(store, journal).recover() == 0  # nothing twice, the live one still alone
        for _ in range(200):
            if live.pending == 0:
                break
            await asyncio.sleep(0.01)
        await live.close()

    asyncio.run(run())
    assert len(store.ledger_rows()) == 12
    assert not list(tmp_path.glob("g.sqlite.ledger-journal*"))
    store.close()


def test_a_running_writer_adopts_the_journal_of_one_that_died_beside_it(tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No restart needed: the survivor commits a dead sibling's rows itself (and keeps its own journal)."""
    monkeypatch.setattr(ledger, "ADOPT_SECONDS", 0.05)
    db = tmp_path / "g.sqlite"
    store = SQLiteStore(db)
    journal = journal_path(db)

    async def run() -> None:
        survivor, dead = LedgerWriter(store, journal), LedgerWriter(store, journal)
        survivor.start()
        dead.start()
        for n in range(5):
            dead.durable(_row(n))
        _die(dead)
        survivor.durable(_row(50))
        for _ in range(200):
            if survivor.recovered_rows == 5 and survivor.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert survivor.recovered_rows == 5
        assert list(tmp_path.glob(f"g.sqlite.ledger-journal.{dead._owner}.*")) == []
        assert len(list(tmp_path.glob(f"g.sqlite.ledger-journal.{survivor._owner}.*"))) == 2
        await survivor.close()

    asyncio.run(run())
    assert sorted(r.request_id for r in store.ledger_rows()) == ["gw-0", "gw-1", "gw-2", "gw-3", "gw-4", "gw-50"]
    assert not list(tmp_path.glob("g.sqlite.ledger-journal*"))
    store.close()


def _own_files(home: Path, db: str, pid: int) -> dict[Path, int]:
    """The journal files (lock and segments) of the gateway process ``pid``, with their inodes."""
    journal = journal_path(state_path(db, home))
    return {p: p.stat().st_ino for p in journal.parent.glob(f"{journal.name}.{pid}-*")}


def test_two_processes_on_one_state_path_survive_kill_9(tmp_path: Path, sim_factory: Callable[..., Simulator],
        store_backend: StoreBackend) -> None:
    """A and B share one state path under load; B is killed -9 and restarted while A serves (A's journal
    untouched), then A is killed -9 and restarted: every answer a caller received has exactly one row."""
    sim = sim_factory(seed=9, latency=LatencyModel(ttft_s=0.02, tokens_per_second=400))
    env, db = _env(sim, tmp_path), store_backend.url("g")
    home = Path(env["KIMIFLOW_HOME"])
    key = _create_key(env, db, "load")
    a, b = Served(env, db, tmp_path), Served(env, db, tmp_path)
    everyone = [a, b]
    answered: list[str] = []
    started = time.monotonic()

    async def caller(http: aiohttp.ClientSession, url: str, n: int, stop: asyncio.Event) -> None:
        stream = n % 2 == 0
        while not stop.is_set() and time.monotonic() - started < 40:
            try:
                async with http.post(url + "/v1/chat/completions", json={**BODY, "stream": stream},
                                     headers={"Authorization": f"Bearer {key}"}) as r:
                    body = await r.read()
                    complete = body.endswith(b"data: [DONE]\n\n") if stream else b'"usage"' in body
                    if r.status == 200 and complete:
                        answered.append(r.headers[REQUEST_ID_HEADER])
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return  # that gateway is gone

    def load(http: aiohttp.ClientSession, served: Served) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
        stop = asyncio.Event()
        return stop, [asyncio.create_task(caller(http, served.url, n, stop)) for n in range(24)]

    async def until(count: int, limit: float) -> None:
        deadline = time.monotonic() + limit
        while len(answered) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def scenario() -> tuple[Served, Served]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as http:
            stop_a, on_a = load(http, a)
            _, on_b = load(http, b)
            await until(150, 6)
            os.kill(b.proc.pid, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*on_b), 15)
            a_files = _own_files(home, db, a.proc.pid)
            assert len(a_files) >= 2, a_files
            b_again = await asyncio.to_thread(Served, env, db, tmp_path)  # restarted while A is under load
            everyone.append(b_again)
            assert {p: p.stat().st_ino for p in a_files} == a_files, "the restart touched the live one's journal"
            stop_b, on_b_again = load(http, b_again)
            await until(len(answered) + 100, 6)
            os.kill(a.proc.pid, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*on_a), 15)
            stop_a.set()
            a_again = await asyncio.to_thread(Served, env, db, tmp_path)
            everyone.append(a_again)
            await until(len(answered) + 20, 4)
            stop_b.set()
            await asyncio.wait_for(asyncio.gather(*on_b_again), 15)
            return a_again, b_again

    try:
        a_again, b_again = asyncio.run(scenario())
    except BaseException:
        for served in everyone:  # no gateway outlives a failed test
            served.stop(signal.SIGKILL)
        raise
    assert a.stop(timeout=10) == -signal.SIGKILL and b.stop(timeout=10) == -signal.SIGKILL
    assert a_again.stop() == 0 and b_again.stop() == 0
    assert len(answered) >= 250, "the load did not get going"
    store = store_backend.open(db)
    ids = [r.request_id for r in store.ledger_rows()]
    store.close()
    assert len(ids) == len(set(ids)), "a row was written twice"
    missing = set(answered) - set(ids)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no ledger row"
    logs = "".join(p.read_text() for p in tmp_path.glob("serve.*.log"))
    assert "database is locked" not in logs and "commit of" not in logs, logs[-2000:]
    journal = journal_path(state_path(db, home))
    assert not list(journal.parent.glob(journal.name + "*")), "a journal was left behind"


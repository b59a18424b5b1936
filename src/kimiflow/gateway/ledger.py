"""The ledger writer: a write-ahead journal on the request path, batched SQLite commits off it.

The durability rule: **a request's ledger row is in the journal before the last bytes of its
answer are released to the caller.** For a JSON answer that is before the body is sent; for a
stream it is before the chunk that carries ``data: [DONE]`` is forwarded. Every other ending
(a refusal, a passed-through upstream error, a 502, a caller gone, a shutdown) is journaled the
same way before its response goes out: an error answer is an answer too. The journal is an
append-only file beside the database; one ``write()`` of one line per row puts it in the
operating system's page cache, which a ``kill -9`` of the process cannot lose. So a ``kill -9``
loses no row of a request whose answer the caller received. (A power cut could lose the last
rows, exactly as SQLite's WAL with ``synchronous=NORMAL`` can; an ``fsync`` per row would cost
milliseconds on the request path, and per batch it would still leave the last batch exposed.)

The rows are then committed to the store by one background task, in batches (everything queued
while the previous batch was written), on a worker thread: no database write on the request path.
A commit that fails (a locked SQLite file, a PostgreSQL connection lost) is tried again, with a
growing pause, until it succeeds: the rows stay journaled meanwhile and are never dropped.
The journal is truncated whenever every row written to it is committed.

Several processes may share one state path (two gateways on one SQLite file, or on one PostgreSQL
URL with one ``KIMIFLOW_HOME``). Each process journals into files of its own,
``<journal>.<owner>.<N>``, and holds an exclusive ``flock`` on ``<journal>.<owner>.lock`` for as
long as it runs. At start-up, and every ``ADOPT_SECONDS`` while it runs, ``recover()`` commits what
every other journal of that state path whose lock it can take still holds (a process that died:
the kernel released its lock), then removes those files; a live process's journal is never
touched. ``request_id`` is unique and rows are inserted idempotently, so replaying a row that was
already committed adds nothing. A line cut short by the kill (never one whose write returned) is
skipped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import msgspec

from kimiflow.gateway.store import GatewayStore, LedgerRow

log = logging.getLogger("kimiflow.gateway.ledger")

MAX_BATCH = 1000
LINGER_SECONDS = 0.05
"""How long the writer gathers rows before a commit. Durability comes from the journal, so waiting
costs no caller anything, and one commit per 50 ms keeps the worker thread (and its GIL hand-offs)
out of the event loop's way."""
ADOPT_SECONDS = 5.0
"""How often a running writer looks for journals left by processes that died beside it (same state
path) and commits them, so their rows need not wait for a restart."""
RETRY_MAX_SECONDS = 1.0
"""The longest pause between two attempts at a commit that keeps failing (it starts at 50 ms)."""
SEGMENT_BYTES = 4 * 1024 * 1024
"""Under steady load the journal is never all committed at one instant, so it moves on to a new
segment file at this size; a segment is deleted once all its rows are committed."""
_encode = msgspec.json.Encoder()
_decode_row = msgspec.json.Decoder(LedgerRow)


def journal_path(db_path: Path) -> Path:
    """``gateway.sqlite`` -> ``gateway.sqlite.ledger-journal``; each process adds ``.<owner>.N`` (segments)
    and ``.<owner>.lock`` to it."""
    return db_path.with_name(db_path.name + ".ledger-journal")


def _try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive ``flock``, or ``None`` if a live process holds it
    (or the file is gone)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class LedgerWriter:
    """Journals ledger rows at once and commits them through ``store`` in batches on one worker thread.

    >>> writer = LedgerWriter(store, journal); writer.recover(); writer.start()
    >>> writer.durable(row)     # journaled when this returns: survives kill -9
    >>> writer.submit(row)      # queued only; committed with the next batch
    """

    def __init__(self, store: GatewayStore, journal: Path | None = None, *,
                 on_committed: Callable[[list[LedgerRow]], None] | None = None) -> None:
        self.store = store
        self.journal = journal
        self._on_committed = on_committed
        self._queue: asyncio.Queue[tuple[LedgerRow, int] | None] = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kimiflow-ledger")
        self._task: asyncio.Task[None] | None = None
        self._adopter: asyncio.Task[None] | None = None
        self._fd: int | None = None
        self._owner: str | None = None
        self._lock_fd: int | None = None
        self._segment = 0
        self._segment_bytes = 0
        self._uncommitted: dict[int, int] = {}  # segment -> rows journaled there and not committed yet
        self._in_batch = 0
        self.committed_rows = 0
        self.commits = 0
        self.failed_commits = 0
        self.recovered_rows = 0

    def _segment_path(self, segment: int) -> Path:
        assert self.journal is not None and self._owner is not None
        return self.journal.with_name(f"{self.journal.name}.{self._owner}.{segment}")

    def _journals(self) -> dict[str, tuple[Path | None, list[Path]]]:
        """Every journal of this state path: owner -> (its lock file, its segments in order).

        ``""`` is a journal of a kimiflow from before per-process journals (``<journal>.N``, no lock)."""
        found: dict[str, tuple[Path | None, list[tuple[int, Path]]]] = {}
        if self.journal is None or not self.journal.parent.exists():
            return {}
        prefix = self.journal.name + "."
        for path in self.journal.parent.iterdir():
            if not path.name.startswith(prefix):
                continue
            rest = path.name[len(prefix):]
            owner, _, tail = rest.rpartition(".")
            if not owner and tail.isdigit():
                owner = ""
            elif not owner or "." in owner:
                continue
            segments = found.setdefault(owner, (None, []))[1]
            if tail == "lock":
                found[owner] = (path, segments)
            elif tail.isdigit():
                segments.append((int(tail), path))
        return {owner: (lock, [p for _, p in sorted(segments)]) for owner, (lock, segments) in found.items()}

    def recover(self) -> int:
        """Commit the rows processes that died left in their journals, then remove those journals.

        A journal whose lock is held belongs to a live process and is left alone. Returns rows new to the DB.
        """
        rows: list[LedgerRow] = []
        claimed: list[tuple[int | None, Path | None, list[Path]]] = []
        try:
            for owner, (lock, segments) in self._journals().items():
                if owner == self._owner:
                    continue
                fd = None
                if lock is not None:
                    fd = _try_lock(lock)
                    if fd is None:
                        continue  # a live process's journal
                    if not _same_file(lock, fd):  # removed by another recovering process meanwhile
                        os.close(fd)
                        continue
                    # Listed again under the lock: its owner may have opened a segment after the first listing.
                    segments = self._journals().get(owner, (lock, segments))[1]
                claimed.append((fd, lock, segments))
                for segment in segments:
                    try:
                        data = segment.read_bytes()
                    except FileNotFoundError:  # recovered and removed by another process meanwhile
                        continue
                    for line in data.splitlines():
                        try:
                            rows.append(_decode_row.decode(line))
                        except (msgspec.DecodeError, msgspec.ValidationError):
                            log.warning("ledger journal: skipped a line cut short by a crash")
            inserted = self.store.write_ledger(rows) if rows else 0
            for _, lock, segments in claimed:
                for segment in segments:
                    segment.unlink(missing_ok=True)
                if lock is not None:
                    lock.unlink(missing_ok=True)  # still under its lock: nobody else reads it now
        finally:
            for fd, _, _ in claimed:
                if fd is not None:
                    os.close(fd)
        self.recovered_rows += inserted
        if rows:
            log.info("ledger journal: %d rows recovered from %d journal(s) of stopped processes, %d of them not yet "
                     "in the database", len(rows), len(claimed), inserted)
        return inserted

    def _take_journal(self) -> None:
        """Pick an owner name of this process's own and hold the exclusive lock of its journal."""
        assert self.journal is not None
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        while True:
            owner = f"{os.getpid()}-{secrets.token_hex(4)}"
            lock = self.journal.with_name(f"{self.journal.name}.{owner}.lock")
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a recovering process took it between our create and our lock
                os.close(fd)
                continue
            # A recovering process that took it in that instant removed it (no segments): then start over.
            if _same_file(lock, fd):
                self._owner, self._lock_fd = owner, fd
                return
            os.close(fd)

    def _open_segment(self, segment: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._segment, self._segment_bytes = segment, 0
        self._fd = os.open(self._segment_path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def start(self) -> None:
        if self.journal is not None and self._fd is None:
            self._take_journal()
            self._open_segment(0)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kimiflow-ledger-writer")
        if self.journal is not None and self._adopter is None:
            self._adopter = asyncio.get_running_loop().create_task(self._adopt(), name="kimiflow-ledger-adopt")

    async def _adopt(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(ADOPT_SECONDS)
            try:
                await loop.run_in_executor(self._executor, self.recover)
            except Exception as exc:  # the database is away for a moment: the journal waits, try again later
                log.warning("ledger: committing the journal of a stopped process failed (tried again later): %s", exc)

    def submit(self, row: LedgerRow) -> None:
        """Queue ``row`` for the next batch commit."""
        self._queue.put_nowait((row, -1))

    def durable(self, row: LedgerRow) -> None:
        """Journal ``row`` (one ``write()``: safe from ``kill -9`` when this returns) and queue it."""
        segment = -1
        if self._fd is not None:
            if self._segment_bytes >= SEGMENT_BYTES:
                self._open_segment(self._segment + 1)
            line = _encode.encode(row) + b"\n"
            try:
                os.write(self._fd, line)
            except OSError as exc:  # a full disk: the row still goes to the database with the batch
                log.error("ledger journal write failed for %s: %s", row.request_id, exc)
            else:
                segment = self._segment
                self._segment_bytes += len(line)
                self._uncommitted[segment] = self._uncommitted.get(segment, 0) + 1
        self._queue.put_nowait((row, segment))

    @property
    def pending(self) -> int:
        """Rows not committed yet (queued or in the batch being written)."""
        return self._queue.qsize() + self._in_batch

    def _committed_batch(self, segments: list[int]) -> None:
        for segment in segments:
            if segment >= 0:
                self._uncommitted[segment] -= 1
        for segment in [s for s, n in self._uncommitted.items() if n == 0]:
            del self._uncommitted[segment]
            if segment == self._segment and self._fd is not None:
                os.ftruncate(self._fd, 0)  # every row in the live segment is committed: start it afresh
                self._segment_bytes = 0
            else:
                self._segment_path(segment).unlink(missing_ok=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        held: list[tuple[LedgerRow, int]] = []  # a batch whose commit failed: tried again, never dropped
        pause = 0.0
        failures = 0
        while True:
            if held:
                batch, held = held, []
            else:
                if stopping:
                    break
                item = await self._queue.get()
                if item is None:
                    break
                self._in_batch = 1  # taken from the queue, not committed: still pending
                if LINGER_SECONDS > 0:
                    await asyncio.sleep(LINGER_SECONDS)
                batch = [item]
            while len(batch) < MAX_BATCH and not stopping and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            rows = [row for row, _ in batch]
            self._in_batch = len(rows)
            try:
                await loop.run_in_executor(self._executor, self.store.write_ledger, rows)
            except Exception as exc:  # a locked file, a lost connection: the rows stay journaled, try again
                held = batch
                self.failed_commits += 1
                failures += 1
                pause = min(max(pause * 2, 0.05), RETRY_MAX_SECONDS)
                log.warning("ledger commit of %d rows failed (%d in a row; trying again in %.2f s): %s",
                            len(rows), failures, pause, exc)
                await asyncio.sleep(pause)
                continue
            if failures:
                log.warning("ledger: commits work again after %d failed attempts", failures)
            pause, failures = 0.0, 0
            self._in_batch = 0
            self.commits += 1
            self.committed_rows += len(rows)
            self._committed_batch([segment for _, segment in batch])
            if self._on_committed is not None:
                self._on_committed(rows)

    async def close(self, timeout: float = 10.0) -> None:
        """Commit everything queued, then stop (waits at most ``timeout`` seconds)."""
        if self._adopter is not None:
            self._adopter.cancel()
            try:
                await self._adopter
            except asyncio.CancelledError:
                pass
            self._adopter = None
        if self._task is not None:
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except asyncio.TimeoutError:
                log.error("ledger: %d rows still not committed at shutdown after %.1f s (journaled ones are "
                          "recovered at the next start)", self.pending, timeout)
                self._task.cancel()
            self._task = None
        self._executor.shutdown(wait=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if not self._uncommitted:
                self._segment_path(self._segment).unlink(missing_ok=True)
        if self._lock_fd is not None:
            assert self.journal is not None
            if not self._uncommitted:  # else the next recover() finds the rows, the lock file released
                self.journal.with_name(f"{self.journal.name}.{self._owner}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

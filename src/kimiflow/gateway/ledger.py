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

The rows are then committed to SQLite by one background task, in batches (everything queued
while the previous batch was written), on a worker thread: no database write on the request path.
The journal is truncated whenever every row written to it is committed. At start-up,
``recover()`` commits whatever the journal still holds; ``request_id`` is unique and rows are
inserted with ``INSERT OR IGNORE``, so replaying a row that was already committed adds nothing.
A line cut short by the kill (never one whose write returned) is skipped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
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
COMMIT_ATTEMPTS = 3
SEGMENT_BYTES = 4 * 1024 * 1024
"""Under steady load the journal is never all committed at one instant, so it moves on to a new
segment file at this size; a segment is deleted once all its rows are committed."""
_encode = msgspec.json.Encoder()
_decode_row = msgspec.json.Decoder(LedgerRow)


def journal_path(db_path: Path) -> Path:
    """``gateway.sqlite`` -> ``gateway.sqlite.ledger-journal`` (segments add ``.N``)."""
    return db_path.with_name(db_path.name + ".ledger-journal")


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
        self._fd: int | None = None
        self._segment = 0
        self._segment_bytes = 0
        self._uncommitted: dict[int, int] = {}  # segment -> rows journaled there and not committed yet
        self._in_batch = 0
        self.committed_rows = 0
        self.commits = 0
        self.failed_rows = 0
        self.recovered_rows = 0

    def _segment_path(self, segment: int) -> Path:
        assert self.journal is not None
        return self.journal.with_name(f"{self.journal.name}.{segment}")

    def _segments(self) -> list[Path]:
        if self.journal is None or not self.journal.parent.exists():
            return []
        prefix = self.journal.name + "."
        found = [p for p in self.journal.parent.iterdir() if p.name.startswith(prefix) and p.name[len(prefix):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(prefix):]))

    def recover(self) -> int:
        """Commit the rows a previous process left in the journal, then remove it. Returns rows new to the DB."""
        segments = self._segments()
        rows = []
        for segment in segments:
            for line in segment.read_bytes().splitlines():
                try:
                    rows.append(_decode_row.decode(line))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    log.warning("ledger journal: skipped a line cut short by a crash")
        inserted = self.store.write_ledger(rows) if rows else 0
        for segment in segments:
            segment.unlink()
        self.recovered_rows = inserted
        if rows:
            log.info("ledger journal: %d rows recovered, %d of them not yet in the database", len(rows), inserted)
        return inserted

    def _open_segment(self, segment: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._segment, self._segment_bytes = segment, 0
        self._fd = os.open(self._segment_path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def start(self) -> None:
        if self.journal is not None and self._fd is None:
            self._open_segment(0)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kimiflow-ledger-writer")

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
        while not stopping:
            item = await self._queue.get()
            if item is None:
                break
            self._in_batch = 1  # taken from the queue, not committed: still pending
            if LINGER_SECONDS > 0:
                await asyncio.sleep(LINGER_SECONDS)
            batch = [item]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            rows = [row for row, _ in batch]
            self._in_batch = len(rows)
            error: BaseException | None = None
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                try:
                    await loop.run_in_executor(self._executor, self.store.write_ledger, rows)
                except Exception as exc:  # a locked or full disk: try again, then report
                    error = exc
                    log.warning("ledger commit of %d rows failed (attempt %d): %s", len(rows), attempt, exc)
                    await asyncio.sleep(0.05 * attempt)
                else:
                    error = None
                    break
            self._in_batch = 0
            if error is not None:
                self.failed_rows += len(rows)
                log.error("ledger: %d rows could not be committed now (journaled ones are recovered at the next "
                          "start): %s", len(rows), error)
                continue
            self.commits += 1
            self.committed_rows += len(rows)
            self._committed_batch([segment for _, segment in batch])
            if self._on_committed is not None:
                self._on_committed(rows)

    async def close(self, timeout: float = 10.0) -> None:
        """Commit everything queued, then stop (waits at most ``timeout`` seconds)."""
        if self._task is not None:
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except asyncio.TimeoutError:
                log.error("ledger: %d rows still queued at shutdown after %.1f s (journaled ones are recovered "
                          "at the next start)", self._queue.qsize(), timeout)
                self._task.cancel()
            self._task = None
        self._executor.shutdown(wait=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if not self._uncommitted:
                self._segment_path(self._segment).unlink(missing_ok=True)

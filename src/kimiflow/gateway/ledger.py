"""The ledger writer: rows are committed in batches by one background task, off the event loop.

The durability rule: **a request's ledger row is committed before the last bytes of its answer
are released to the caller.** For a JSON answer that is before the body is sent; for a stream it
is before the chunk that carries ``data: [DONE]`` is forwarded. So a ``kill -9`` of the gateway
can lose no row of a request whose answer the caller received: the caller could only have
received it after the row was committed (WAL, see ``kimiflow.gateway.store``). Rows of requests
that ended otherwise (caller gone, upstream cut, rejected, shutdown) are queued without waiting.

Waiting costs one group commit, not one transaction per request: the writer takes every row
queued while the previous batch was being written and commits them together, so at 64 requests
in flight one commit serves many of them. Each row's ``request_id`` is unique and inserted with
``INSERT OR IGNORE``, so writing a batch twice (a retry after a failed commit) adds no duplicate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

from kimiflow.gateway.store import GatewayStore, LedgerRow

log = logging.getLogger("kimiflow.gateway.ledger")

MAX_BATCH = 1000
COMMIT_ATTEMPTS = 3


class LedgerWriter:
    """Group-commits ledger rows through ``store`` on one worker thread.

    >>> writer = LedgerWriter(store); writer.start()
    >>> await writer.durable(row)      # committed when this returns
    >>> writer.submit(row)             # queued; committed with the next batch
    """

    def __init__(self, store: GatewayStore, *, on_committed: Callable[[list[LedgerRow]], None] | None = None) -> None:
        self.store = store
        self._on_committed = on_committed
        self._queue: asyncio.Queue[tuple[LedgerRow, asyncio.Future[None]] | None] = asyncio.Queue()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kimiflow-ledger")
        self._task: asyncio.Task[None] | None = None
        self.committed_rows = 0
        self.commits = 0
        self.failed_rows = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kimiflow-ledger-writer")

    def submit(self, row: LedgerRow) -> asyncio.Future[None]:
        """Queue ``row``; the future resolves once it is committed (or fails with the store's error)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, future))
        return future

    async def durable(self, row: LedgerRow) -> None:
        """Queue ``row`` and wait until it is committed. Cancelling the caller does not drop the row."""
        await asyncio.shield(self.submit(row))

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            rows = [row for row, _ in batch]
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
            if error is None:
                self.commits += 1
                self.committed_rows += len(rows)
                if self._on_committed is not None:
                    self._on_committed(rows)
            else:
                self.failed_rows += len(rows)
                log.error("ledger: %d rows could not be written: %s", len(rows), error)
            for _, future in batch:
                if not future.done():
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
                        future.exception()  # marks it retrieved: callers that did not wait are fine

    async def close(self, timeout: float = 10.0) -> None:
        """Commit everything queued, then stop (waits at most ``timeout`` seconds)."""
        if self._task is not None:
            self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except asyncio.TimeoutError:
                log.error("ledger: %d rows still queued at shutdown after %.1f s", self._queue.qsize(), timeout)
                self._task.cancel()
            self._task = None
        self._executor.shutdown(wait=True)

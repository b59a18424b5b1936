"""A stand-in with exactly ``BatchStore``'s API (batch/store.py, written in parallel) over today's journal.

The runner codes against these method names so that swapping in ``BatchStore`` is one import; this
module then goes away. It adds nothing of its own beyond the old calls in their old order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kimiflow.batch.journal import DoneStats, Journal
from kimiflow.batch.output import ReconcileReport, ResultWriter, rebuild_errors, reconcile
from kimiflow.batch.paths import BatchPaths, refuse_files_of_another_run


class LegacyStore:
    """Journal + result writer of one run, behind ``BatchStore``'s methods."""

    def __init__(self, paths: BatchPaths, journal: Journal, repair: ReconcileReport) -> None:
        self.paths = paths
        self.journal = journal
        self.repair = repair
        self._writer = ResultWriter(paths.output, paths.errors, journal)

    @classmethod
    def open(cls, paths: BatchPaths, *, fingerprint: str, params: dict[str, Any],
             requests: Callable[[], Iterable[tuple[str, int]]], retry_failed: bool = False) -> LegacyStore:
        paths.output.parent.mkdir(parents=True, exist_ok=True)
        existed = paths.journal.exists()
        journal = Journal.open(paths.journal)
        try:
            if not journal.is_bound:
                refuse_files_of_another_run(paths, journal, created=not existed)
            journal.bind(fingerprint, params)
            if journal.get_meta("registered") != "1":
                journal.register(requests())
                journal.set_meta("registered", "1")
            journal.reset_in_flight()
            if retry_failed:
                journal.reset_failed()
            repair = reconcile(paths.output, journal)
            rebuild_errors(paths.errors, journal)
            return cls(paths, journal, repair)
        except BaseException:
            journal.close()
            raise

    def statuses(self, ids: list[str]) -> dict[str, str]:
        return self.journal.statuses(ids)

    def counts(self) -> dict[str, int]:
        return self.journal.counts()

    def totals(self) -> dict[str, float]:
        return self.journal.totals()

    def sent_since(self, since_wall: float) -> list[float]:
        return self.journal.sent_since(since_wall)

    def mark_sent(self, custom_id: str) -> None:
        self.journal.mark_in_flight(custom_id)

    def record_success(self, record: dict[str, Any], stats: DoneStats) -> None:
        self._writer.write_success(record, stats)

    def record_failure(self, record: dict[str, Any], attempts: int) -> None:
        self._writer.write_failure(record, attempts)

    def release(self, custom_id: str) -> None:
        self.journal.mark_pending(custom_id)

    def add_rate_limited(self, count: int) -> None:
        self.journal.add_rate_limited(count)

    def close(self) -> None:
        try:
            self._writer.close()
            rebuild_errors(self.paths.errors, self.journal)
        finally:
            self.journal.close()

"""The one owner of a batch's files: the output, the errors file and the journal, under one lock.

The runner only asks ``BatchStore`` to record outcomes; every rule about what is written and made
durable before what is committed lives here, and so does what recovery does with each state.

A result goes through these states (``committed`` is the journal's ``output_bytes``)::

      request sent ── mark_sent ──▶ [in_flight, no line]
                                        │ append the line past `committed`
                                        ▼
                                 [line written]        ─ kill ─▶ repair finds a whole line past `committed`
                                        │ fdatasync                 whose id is in flight: adopts it
                                        ▼
                                 [line durable]        ─ kill ─▶ (same: adopted, never paid twice)
                                        │ ONE transaction: done + committed = new size
                                        ▼                         (commit fails: cut the line back to
                                 [done, committed]                 `committed`, raise BatchStoreError)

    repair on open (only the bytes past `committed` can disagree after a kill):
      tail = whole lines past `committed` ──▶ drop torn/garbage bytes and ids already done
                                        │ rewrite the file to `committed` + kept lines, fsync
                                        ▼
                                 [file repaired]       ─ kill ─▶ the next repair reads the same kept
                                        │                         lines and does the same again
                                        │ ONE transaction: adopt every kept id + committed = size
                                        ▼
                                 [journal agrees]

      file shorter than `committed` (edited by hand) ─▶ mark "full repair" in the journal; write a
      deduplicated copy, fsync, replace the file ─ kill ─▶ the mark forces the full repair again;
      ONE transaction: adopt, re-queue done ids the file lacks, committed = size, clear the mark.

A failure is committed first and then appended to the errors file, a view of the journal's failed
rows that open and close rebuild whole (atomically); a torn errors line is therefore harmless.

Only one run may own these files: ``open`` takes an exclusive ``flock`` on ``OUT.journal.sqlite.lock``
(which holds the owner's pid) and refuses a second run at once, naming that pid. The kernel drops
the lock when the owner dies, so a killed run never blocks its resume; ``close`` removes the file.

Test seam: ``KIMIFLOW_BATCH_CRASH_AT=POINT`` (or ``POINT:N`` for its N-th occurrence), read once by
``open``, makes the process kill itself with SIGKILL at that point; ``CRASH_POINTS`` lists them.
Tests use it to crash at exact points of commit and repair; it is not meant for anything else.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from kimiflow.batch.journal import DONE, DoneStats, Journal, JournalError, OutputConflictError, describe_sqlite_error
from kimiflow.batch.output import (
    encode_line,
    line_number,
    parse_record,
    replace_durably,
    stats_from_record,
    truncate_durably,
    write_all,
    write_file_durably,
)
from kimiflow.batch.paths import BatchPaths, refuse_files_of_another_run
from kimiflow.core.errors import KimiflowError

CRASH_ENV = "KIMIFLOW_BATCH_CRASH_AT"
CRASH_POINTS = frozenset({
    "after-output-write", "after-output-fsync", "after-done-commit", "after-failure-commit",
    "repair-before-rewrite", "repair-after-rewrite", "repair-after-replace", "errors-before-replace",
    "remote-after-create", "remote-after-submit",
})
_FULL_REPAIR = "full_repair"
_P = ParamSpec("_P")
_T = TypeVar("_T")


class BatchStoreError(KimiflowError):
    """The batch's files cannot be used or a record cannot be made durable; the message says what to do.

    Raised after consistency is restored (e.g. a result line whose commit failed is cut back), so the
    run can stop and the same command resumes it.
    """


class _CrashSeam:
    """``KIMIFLOW_BATCH_CRASH_AT``: SIGKILL this process at a named point (tests only)."""

    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.remaining = 0
        if spec:
            point, _, nth = spec.partition(":")
            if point not in CRASH_POINTS or (nth and not nth.isdigit()):
                raise BatchStoreError(f"{CRASH_ENV}={spec!r}: expected one of {sorted(CRASH_POINTS)}, "
                                      "optionally followed by :N; unset it")
            self.point, self.remaining = point, int(nth or 1)

    def __call__(self, point: str) -> None:
        if point == self.point:
            self.remaining -= 1
            if self.remaining <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


def _no_crash(point: str) -> None:
    return None


class RunLock:
    """An exclusive ``flock`` on the batch's lock file, holding the owner's pid."""

    def __init__(self, fd: int, path: Path, created: bool) -> None:
        self._fd: int | None = fd
        self.path = path
        self.created = created

    @classmethod
    def acquire(cls, path: Path, output: Path) -> RunLock:
        for _ in range(10):  # the file may be replaced between open and flock (see below); bounded
            created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_pid(fd)
                os.close(fd)
                raise BatchStoreError(
                    f"another kimiflow batch (pid {holder}) is writing {output}; wait for it or stop it"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # A refused new batch unlinks its lock file: a lock on that old inode guards nothing.
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return cls(fd, path, created)
            os.close(fd)
        raise BatchStoreError(f"could not lock {path}: it keeps being replaced; stop the other program doing that")

    def release(self, *, remove: bool = False) -> None:
        if self._fd is None:
            return
        if remove:  # unlinked while still held, so nobody can lock the old inode unnoticed
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def _holder_pid(fd: int) -> str:
    # The holder writes its pid just after locking: give it a moment (bounded) before saying "unknown".
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


@dataclass
class ReconcileReport:
    """What repair changed in the output file when the store opened."""

    adopted: list[str] = field(default_factory=list)
    dropped_duplicates: int = 0
    torn_bytes: int = 0
    lost: int = 0
    full_scan: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.adopted or self.dropped_duplicates or self.torn_bytes or self.lost)


def reconcile(
    output: str | Path, journal: Journal, *, verify: bool = False, crash: Callable[[str], None] = _no_crash
) -> ReconcileReport:
    """Make the output file and the journal agree, in the order drawn in this module's docstring.

    Only the bytes past the journal's ``output_bytes`` are read, unless the file is shorter than that
    (edited or truncated by hand), an earlier full repair was interrupted, or ``verify`` is set: then
    the whole file is checked and results missing from it are queued to be produced again.
    """
    path = Path(output)
    report = ReconcileReport()
    if not path.exists():
        path.touch()
    size = path.stat().st_size
    committed = journal.output_bytes
    if size < committed or verify or journal.get_meta(_FULL_REPAIR):
        report.full_scan = True
        _full_repair(path, journal, report, crash)
        return report
    if size == committed:
        return report
    with path.open("rb") as f:
        f.seek(committed)
        tail = f.read()
    pieces = tail.split(b"\n")
    report.torn_bytes += len(pieces.pop())  # bytes after the last newline: a torn write
    kept: list[bytes] = []
    adopt: list[tuple[str, DoneStats]] = []
    seen: set[str] = set()
    prefix = True  # kept lines so far are exactly the tail's first lines: a cut is enough, no rewrite
    statuses = journal.statuses([r["custom_id"] for r in map(parse_record, pieces) if r is not None])
    for index, raw in enumerate(pieces):
        record = parse_record(raw)
        if record is None:
            report.torn_bytes += len(raw) + 1
            prefix = False
            continue
        cid = record["custom_id"]
        status = statuses.get(cid)
        if status is None:
            raise _foreign_id(path, journal, cid, line_number(path, committed) + index)
        if cid in seen or status == DONE:
            report.dropped_duplicates += 1
            prefix = False
            continue
        seen.add(cid)
        adopt.append((cid, stats_from_record(record)))
        kept.append(raw + b"\n")
    crash("repair-before-rewrite")
    new_size = committed + sum(len(raw) for raw in kept)
    with path.open("r+b") as f:
        if not prefix:
            f.truncate(committed)
            f.seek(committed)
            for raw in kept:
                f.write(raw)
            f.flush()
        f.truncate(new_size)
        os.fsync(f.fileno())
    crash("repair-after-rewrite")
    with journal.transaction():
        for cid, stats in adopt:
            journal.adopt_done(cid, stats)
        journal.set_output_bytes(new_size)
    report.adopted.extend(cid for cid, _ in adopt)
    return report


def _foreign_id(path: Path, journal: Journal, cid: str, line: int) -> OutputConflictError:
    return OutputConflictError(
        f"{path} line {line}: custom_id {cid!r} is not a request of this batch (journal {journal.path}); "
        "the file holds other results: choose a new output=, or delete that line"
    )


def _full_repair(path: Path, journal: Journal, report: ReconcileReport, crash: Callable[[str], None]) -> None:
    """Rewrite the output keeping the first valid line per id; re-queue results it lacks."""
    temp = path.with_name(path.name + ".reconcile")
    seen: set[str] = set()
    adopt: list[tuple[str, DoneStats]] = []

    def kept_lines() -> Iterable[bytes]:
        with path.open("rb") as src:
            for number, raw in enumerate(src, start=1):
                record = parse_record(raw)
                if record is None or not raw.endswith(b"\n"):
                    report.torn_bytes += len(raw)
                    continue
                cid = record["custom_id"]
                status = journal.status(cid)
                if status is None:
                    raise _foreign_id(path, journal, cid, number)
                if cid in seen:
                    report.dropped_duplicates += 1
                    continue
                seen.add(cid)
                if status != DONE:
                    adopt.append((cid, stats_from_record(record)))
                yield raw

    try:
        size = write_file_durably(temp, kept_lines())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    # From the replace on, `output_bytes` no longer points at a line boundary: until the journal
    # agrees again, every open must repair the whole file.
    with journal.transaction():
        journal.set_meta(_FULL_REPAIR, "1")
    replace_durably(temp, path)
    crash("repair-after-replace")
    with journal.transaction():
        for cid, stats in adopt:
            journal.adopt_done(cid, stats)
        missing = [cid for cid in journal.done_ids() if cid not in seen]
        report.lost = journal.reset_done(missing)
        journal.set_output_bytes(size)
        journal.delete_meta(_FULL_REPAIR)
    report.adopted.extend(cid for cid, _ in adopt)


def rebuild_errors(errors: str | Path, journal: Journal, *, crash: Callable[[str], None] = _no_crash) -> int:
    """Rewrite the errors file from the journal's failed rows (atomically); returns the number of lines."""
    path = Path(errors)
    temp = path.with_name(path.name + ".rebuild")
    records = list(journal.failed_records())
    try:
        write_file_durably(temp, (encode_line(r) for r in records))
        crash("errors-before-replace")
        replace_durably(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return len(records)


class BatchStore:
    """Sole owner of one batch's output, errors file and journal while a run writes them.

    >>> store = BatchStore.open(BatchPaths.for_output("in.jsonl", "out.jsonl"), fingerprint=scan.fingerprint,
    ...                         params={"model": "moonshot-v1-8k"}, requests=lambda: [("a1", 1)])
    >>> store.mark_sent("a1"); store.record_success(record, stats); store.close()
    """

    def __init__(self, paths: BatchPaths, journal: Journal, lock: RunLock, repair: ReconcileReport,
                 crash: Callable[[str], None]) -> None:
        self.paths = paths
        self.journal = journal
        self.repair = repair
        self._lock = lock
        self._crash = crash
        self._broken = ""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._out = os.open(paths.output, flags, 0o644)
        try:
            self._err = os.open(paths.errors, flags, 0o644)
        except BaseException:
            os.close(self._out)
            raise

    @classmethod
    def open(cls, paths: BatchPaths, *, fingerprint: str, params: dict[str, Any],
             requests: Callable[[], Iterable[tuple[str, int]]], retry_failed: bool = False,
             busy_timeout: float = 5.0) -> BatchStore:
        """Lock (refuse a second run, naming the holder's pid), bind, register once, reset in-flight,
        reset failed if asked, repair the output after a crash, rebuild the errors file."""
        paths.refuse_overlaps()
        crash: Callable[[str], None] = _CrashSeam(os.environ.get(CRASH_ENV))
        try:
            paths.output.parent.mkdir(parents=True, exist_ok=True)
            lock = RunLock.acquire(paths.lock, paths.output)
        except OSError as exc:
            target = Path(exc.filename) if isinstance(exc.filename, str) else paths.lock
            raise BatchStoreError(_describe_os_error(exc, target, "creating")) from None
        journal: Journal | None = None
        created = False
        try:
            created = not paths.journal.exists()
            journal = Journal.open(paths.journal, busy_timeout=busy_timeout)
            if not journal.is_bound:
                try:
                    refuse_files_of_another_run(paths, journal, created=created)
                except OutputConflictError:
                    journal = None  # closed (and removed if new) by the refusal
                    lock.release(remove=lock.created)
                    raise
            journal.bind(fingerprint, params)
            if journal.get_meta("registered") != "1":
                journal.register(requests())
                journal.set_meta("registered", "1")
            journal.reset_in_flight()
            if retry_failed:
                journal.reset_failed()
            repair = reconcile(paths.output, journal, crash=crash)
            rebuild_errors(paths.errors, journal, crash=crash)
            return cls(paths, journal, lock, repair, crash)
        except BaseException as exc:
            if journal is not None:
                journal.close()
            lock.release()
            if isinstance(exc, sqlite3.Error):
                raise JournalError(describe_sqlite_error(exc, paths.journal, "writing")) from None
            if isinstance(exc, OSError):
                target = Path(exc.filename) if isinstance(exc.filename, str) else paths.output
                raise BatchStoreError(_describe_os_error(exc, target, "writing")) from None
            raise

    # -- reads -------------------------------------------------------------------------------------

    def statuses(self, ids: list[str]) -> dict[str, str]:
        return self._journal_call("reading", self.journal.statuses, ids)

    def counts(self) -> dict[str, int]:
        return self._journal_call("reading", self.journal.counts)

    def totals(self) -> dict[str, float]:
        return self._journal_call("reading", self.journal.totals)

    def sent_since(self, since_wall: float) -> list[float]:
        return self._journal_call("reading", self.journal.sent_since, since_wall)

    # -- records -----------------------------------------------------------------------------------

    def mark_sent(self, custom_id: str) -> None:
        """The request is on the wire: a crash from now on sends it again on resume (never writes it twice)."""
        self._refuse_if_broken()
        self._journal_call("writing", self.journal.mark_in_flight, custom_id)

    def record_success(self, record: dict[str, Any], stats: DoneStats) -> None:
        """Append the result line, make it durable, then commit it as done (see the module's drawing)."""
        self._refuse_if_broken()
        cid = record["custom_id"]
        line = encode_line(record)
        before = os.fstat(self._out).st_size
        try:
            write_all(self._out, line)
            self._crash("after-output-write")
            os.fdatasync(self._out)
            self._crash("after-output-fsync")
        except OSError as exc:
            self._cut_back(before, cid)
            raise BatchStoreError(
                f"cannot write the result of {cid!r} to {self.paths.output} ({exc.strerror or exc}); "
                "nothing of it was kept: free some space, then run the same command again"
            ) from None
        try:
            self.journal.mark_done(cid, stats, before + len(line))
        except BaseException as exc:
            self._cut_back(before, cid)
            if isinstance(exc, sqlite3.Error):
                raise BatchStoreError(
                    f"cannot record the result of {cid!r}: "
                    f"{describe_sqlite_error(exc, self.journal.path, 'writing')}; its output line was taken back"
                ) from None
            raise
        self._crash("after-done-commit")

    def record_failure(self, record: dict[str, Any], attempts: int) -> None:
        """Commit the final failure, then append it to the errors file (rebuilt from the journal anyway)."""
        self._refuse_if_broken()
        self._journal_call("writing", self.journal.mark_failed, record["custom_id"], attempts, record)
        self._crash("after-failure-commit")
        try:
            write_all(self._err, encode_line(record))
        except OSError:
            pass  # the journal holds the failure; close() and the next open rebuild the file from it

    def release(self, custom_id: str) -> None:
        """An in-flight request that will not finish in this run: pending again, sent on resume."""
        self._journal_call("writing", self.journal.mark_pending, custom_id)

    def crash_point(self, point: str) -> None:
        """The crash seam at ``point`` (one of ``CRASH_POINTS``), for steps the store does not take itself."""
        self._crash(point)

    def add_rate_limited(self, count: int) -> None:
        self._journal_call("writing", self.journal.add_rate_limited, count)

    def close(self) -> None:
        """Rebuild the errors file, close the files and the journal, drop the lock (in that order)."""
        problem: BaseException | None = None
        try:
            rebuild_errors(self.paths.errors, self.journal, crash=self._crash)
        except (OSError, sqlite3.Error) as exc:
            problem = exc
        for fd in (self._out, self._err):
            try:
                os.close(fd)
            except OSError:
                pass
        self.journal.close()
        self._lock.release(remove=True)  # everything is closed: the next run may start at once
        if isinstance(problem, OSError):
            raise BatchStoreError(
                f"could not rebuild {self.paths.errors} ({problem.strerror or problem}); the failures are "
                "in the journal: free some space and run the same command again to rebuild it"
            ) from None
        if isinstance(problem, sqlite3.Error):
            raise JournalError(describe_sqlite_error(problem, self.journal.path, "reading")) from None

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------

    def _journal_call(self, doing: str, method: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise BatchStoreError(describe_sqlite_error(exc, self.journal.path, doing)) from None

    def _cut_back(self, size: int, cid: str) -> None:
        """Take back a line whose commit failed, so the only orphan a crash can leave is one repair decides."""
        try:
            truncate_durably(self._out, size)
        except OSError as exc:
            # The line stays past `committed` while others would be appended after it: refuse them, so
            # repair sees it at the end of the file and decides about it from the journal.
            self._broken = (f"{self.paths.output} could not be cut back after the result of {cid!r} failed to "
                            f"commit ({exc.strerror or exc}); run the same command again to repair it")

    def _refuse_if_broken(self) -> None:
        if self._broken:
            raise BatchStoreError(self._broken)


def _describe_os_error(exc: OSError, path: Path, doing: str) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full ({doing} {path}); free some space, then run the same command again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write {path} ({exc.strerror}); the directory {path.parent} must be writable: fix "
                "its permissions or choose an output= in a directory you can write to")
    return f"{doing} {path} failed ({exc.strerror or exc}); check the path and the disk, then run the command again"

"""The batch journal: a SQLite file (WAL) beside the output recording every request's state.

States and the only moves between them::

    pending ──▶ in_flight ──▶ done
       ▲            │  └────▶ failed
       └────────────┘            │
       └─────── --retry-failed ──┘

The journal also holds the input file's fingerprint and the run's parameters, so a resume with a
different file or different parameters is refused instead of mixing two batches in one output.
``output_bytes`` is the size the output file had when the last ``done`` was committed. Only
``kimiflow.batch.store.BatchStore`` writes to a journal during a run; the order in which it writes
the output and commits here, and what recovery does with each state, is drawn in its docstring.
Every commit is one SQLite transaction; WAL with ``synchronous=NORMAL`` survives a killed process.

Schema changes are a plain list of functions (``_MIGRATIONS``), applied in order on open and
counted in ``PRAGMA user_version``: a journal written by an older kimiflow opens after an upgrade.
Append new ones, never edit old ones.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimiflow.core.errors import KimiflowError

PENDING, IN_FLIGHT, DONE, FAILED = "pending", "in_flight", "done", "failed"
STATES = (PENDING, IN_FLIGHT, DONE, FAILED)

_INITIAL_SCHEMA = [
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


def _m001_initial(db: sqlite3.Connection) -> None:
    # IF NOT EXISTS: journals written before migrations were counted hold these tables at version 0.
    for statement in _INITIAL_SCHEMA:
        db.execute(statement)


def _m002_transition_reasons(db: sqlite3.Connection) -> None:
    """Why a request moved when no request of its own moved it (resume, --retry-failed, repair)."""
    db.execute("ALTER TABLE transitions ADD COLUMN reason TEXT")


_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_initial, _m002_transition_reasons]
SCHEMA_VERSION = len(_MIGRATIONS)


_EARLIER = ("prompt_tokens", "completion_tokens", "cost_cny")
"""Totals of failures sent again (``--retry-failed``): billed once, whatever the next try does."""


class JournalError(KimiflowError):
    """The journal cannot be used as asked; the message says why and what to do."""


class JournalMismatchError(JournalError):
    """The journal belongs to a different input file or different parameters."""


class JournalStateError(JournalError):
    """A state change that the state machine does not allow (e.g. done → in_flight)."""


class OutputConflictError(JournalError):
    """The output file does not belong to this journal's batch (no journal, or ids it does not know)."""


@dataclass(frozen=True)
class DoneStats:
    """What a finished request cost and how long it took, kept for the summary."""

    attempts: int
    prompt_tokens: int
    completion_tokens: int
    cost_cny: float
    latency_ms: float


class Journal:
    """One batch's journal. Open it with ``Journal.open(OUT.journal.sqlite)``.

    >>> journal = Journal.open("out.journal.sqlite")
    >>> journal.bind(fingerprint, {"model": "moonshot-v1-8k"})
    >>> journal.mark_in_flight("a1"); journal.mark_failed("a1", 3, {"reason": "500"})
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: str | Path, *, busy_timeout: float = 5.0) -> Journal:
        """Open (or create) a journal, bringing its schema up to date; ``JournalError`` says why not."""
        path = Path(path)
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            _migrate(db, path)
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise JournalError(describe_sqlite_error(exc, path, "opening")) from None
        except BaseException:
            if db is not None:
                db.close()
            raise
        return cls(db, path)

    def transaction(self) -> _Transaction:
        """One SQLite transaction around a block (nestable): all of it is committed, or none."""
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def bind(self, fingerprint: str, params: dict[str, Any]) -> bool:
        """Tie the journal to an input file and parameters; ``True`` if it is new.

        Raises ``JournalMismatchError`` when resuming with another file or other parameters.
        """
        canonical = json.dumps(params, sort_keys=True, ensure_ascii=False)
        known = self.get_meta("fingerprint")
        if known is None:
            with self._transaction():
                self.set_meta("fingerprint", fingerprint)
                self.set_meta("params", canonical)
                self.set_meta("created", repr(time.time()))
            return True
        if known != fingerprint:
            raise JournalMismatchError(
                f"the input file changed since this batch started (journal {self.path}); "
                "re-run with the original file, or write to a new output= file to start a new batch"
            )
        old = json.loads(self.get_meta("params") or "{}")
        if old != params:
            changed = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
            details = ", ".join(f"{k}: {old.get(k)!r} -> {params.get(k)!r}" for k in changed)
            raise JournalMismatchError(
                f"parameters differ from the run that started this batch ({details}); "
                "re-run with the original parameters, or write to a new output= file to start a new batch"
            )
        return False

    @property
    def is_bound(self) -> bool:
        """Whether ``bind`` ever ran: a journal that is not bound belongs to no batch yet."""
        return self.get_meta("fingerprint") is not None

    @property
    def output_bytes(self) -> int:
        return int(self.get_meta("output_bytes") or 0)

    def add_rate_limited(self, count: int) -> None:
        if count:
            total = int(self.get_meta("rate_limited") or 0) + count
            self.set_meta("rate_limited", str(total))

    # -- requests ------------------------------------------------------------------------------

    def register(self, requests: Iterable[tuple[str, int]], chunk: int = 5000) -> int:
        """Add ``(custom_id, line)`` pairs as pending (known ids are left alone). Returns rows added."""
        added = 0
        batch: list[tuple[str, int]] = []
        for item in requests:
            batch.append(item)
            if len(batch) >= chunk:
                added += self._register(batch)
                batch = []
        if batch:
            added += self._register(batch)
        return added

    def _register(self, batch: list[tuple[str, int]]) -> int:
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO requests (custom_id, line, status) VALUES (?, ?, 'pending')", batch
            )
            return self._db.total_changes - before

    def statuses(self, ids: list[str]) -> dict[str, str]:
        """Current state of each of ``ids`` that the journal knows."""
        found: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for cid, status in self._db.execute(
                f"SELECT custom_id, status FROM requests WHERE custom_id IN ({marks})", part
            ):
                found[cid] = status
        return found

    def status(self, custom_id: str) -> str | None:
        return self.statuses([custom_id]).get(custom_id)

    def _move(
        self, custom_id: str, to: str, allowed_from: tuple[str, ...], reason: str | None = None, **fields: Any
    ) -> None:
        now = time.time()
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql = f"UPDATE requests SET status = ?, updated = ?{', ' + sets if sets else ''} WHERE custom_id = ?"
        sql += f" AND status IN ({','.join('?' * len(allowed_from))})"
        with self._transaction():
            cursor = self._db.execute(sql, (to, now, *fields.values(), custom_id, *allowed_from))
            if cursor.rowcount != 1:
                current = self.status(custom_id)
                raise JournalStateError(
                    f"request {custom_id!r} cannot move from {current or 'unknown'} to {to}"
                )
            self._db.execute(
                "INSERT INTO transitions (custom_id, status, at, reason) VALUES (?, ?, ?, ?)",
                (custom_id, to, now, reason),
            )

    def mark_in_flight(self, custom_id: str) -> None:
        self._move(custom_id, IN_FLIGHT, (PENDING, IN_FLIGHT))

    def mark_done(self, custom_id: str, stats: DoneStats, output_bytes: int) -> None:
        """Record a result whose output line ends at ``output_bytes`` (already written)."""
        with self._transaction():
            self._move_done(custom_id, (IN_FLIGHT,), stats)
            self.set_meta("output_bytes", str(output_bytes))

    def adopt_done(self, custom_id: str, stats: DoneStats) -> None:
        """Reconciliation: the output holds a result the journal had not committed yet."""
        self._move_done(custom_id, (PENDING, IN_FLIGHT, FAILED), stats, reason="adopted from the output")

    def _move_done(
        self, custom_id: str, from_states: tuple[str, ...], stats: DoneStats, reason: str | None = None
    ) -> None:
        self._move(
            custom_id,
            DONE,
            from_states,
            reason,
            attempts=stats.attempts,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            cost_cny=stats.cost_cny,
            latency_ms=stats.latency_ms,
            error=None,
        )

    def mark_failed(self, custom_id: str, attempts: int, record: dict[str, Any]) -> None:
        """Record a final failure; ``record`` is its errors-file line (kept to rebuild that file).

        A failure that was answered and billed (an answer that never matched the schema) carries its
        ``usage`` and ``cost_cny``: they count in the batch's totals like a success's.
        """
        raw = record.get("usage")
        usage: dict[str, Any] = raw if isinstance(raw, dict) else {}
        self._move(custom_id, FAILED, (IN_FLIGHT,), attempts=attempts,
                   error=json.dumps(record, ensure_ascii=False),
                   prompt_tokens=int(usage.get("prompt_tokens") or 0),
                   completion_tokens=int(usage.get("completion_tokens") or 0),
                   cost_cny=float(record.get("cost_cny") or 0.0))

    def mark_pending(self, custom_id: str) -> None:
        """An in-flight request that will not finish in this run (Ctrl-C, quota stop)."""
        self._move(custom_id, PENDING, (IN_FLIGHT, PENDING))

    def set_output_bytes(self, size: int) -> None:
        self.set_meta("output_bytes", str(size))

    def reset_in_flight(self) -> int:
        """Resume: requests that were in flight when the last run died go back to pending."""
        return self._reset(IN_FLIGHT, "resumed after an interrupted run")

    def reset_failed(self) -> int:
        """``--retry-failed``: every failed request goes back to pending."""
        return self._reset(FAILED, "retry_failed")

    def reset_done(self, ids: Iterable[str]) -> int:
        """Reconciliation: results the output file lost must be produced again (each move audited)."""
        n = 0
        now = time.time()
        with self._transaction():
            for cid in ids:
                moved = self._db.execute(
                    "UPDATE requests SET status = 'pending', updated = ? WHERE custom_id = ? AND status = 'done'",
                    (now, cid),
                ).rowcount
                if moved:
                    self._db.execute(
                        "INSERT INTO transitions (custom_id, status, at, reason) VALUES (?, 'pending', ?, ?)",
                        (cid, now, "result missing from the output"),
                    )
                n += moved
        return n

    def _reset(self, from_state: str, reason: str) -> int:
        now = time.time()
        with self._transaction():
            if from_state == FAILED:
                # What the failures were billed stays spent when they are sent again: keep it in the totals.
                spent = self._db.execute(
                    "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
                    "COALESCE(SUM(cost_cny), 0) FROM requests WHERE status = ?", (FAILED,)).fetchone()
                earlier = self._earlier()
                for name, value in zip(_EARLIER, spent, strict=True):
                    self.set_meta(f"earlier_{name}", repr(earlier[name] + value))
            self._db.execute(
                "INSERT INTO transitions (custom_id, status, at, reason) SELECT custom_id, 'pending', ?, ? "
                "FROM requests WHERE status = ?",
                (now, reason, from_state),
            )
            return self._db.execute(
                "UPDATE requests SET status = 'pending', updated = ? WHERE status = ?", (now, from_state)
            ).rowcount

    # -- reading -------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for status, n in self._db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status"):
            counts[status] = n
        return counts

    def done_ids(self) -> Iterator[str]:
        for (cid,) in self._db.execute("SELECT custom_id FROM requests WHERE status = 'done'"):
            yield cid

    def failed_records(self) -> Iterator[dict[str, Any]]:
        """The errors-file line of each failed request, in input order."""
        for (error,) in self._db.execute("SELECT error FROM requests WHERE status = 'failed' ORDER BY line"):
            record: dict[str, Any] = json.loads(error) if error else {}
            yield record

    def totals(self) -> dict[str, float]:
        """Tokens and cost of everything billed: the answers, the failures that were answered (and the
        failures sent again since, from ``--retry-failed``); attempts of the answers."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(cost_cny), 0), COALESCE(SUM(CASE WHEN status = 'done' THEN attempts ELSE 0 END), 0) "
            "FROM requests WHERE status IN ('done', 'failed')"
        ).fetchone()
        earlier = self._earlier()
        return {"prompt_tokens": row[0] + earlier["prompt_tokens"],
                "completion_tokens": row[1] + earlier["completion_tokens"],
                "cost_cny": row[2] + earlier["cost_cny"], "attempts": row[3]}

    def _earlier(self) -> dict[str, float]:
        return {name: float(self.get_meta(f"earlier_{name}") or 0) for name in _EARLIER}

    def latency_percentiles(self, *quantiles: float) -> list[float | None]:
        """Latency (ms) at each quantile over finished requests, nearest-rank."""
        n = self._db.execute("SELECT COUNT(*) FROM requests WHERE status = 'done'").fetchone()[0]
        result: list[float | None] = []
        for q in quantiles:
            if n == 0:
                result.append(None)
                continue
            rank = max(0, min(n - 1, math.ceil(q * n) - 1))
            row = self._db.execute(
                "SELECT latency_ms FROM requests WHERE status = 'done' ORDER BY latency_ms LIMIT 1 OFFSET ?",
                (rank,),
            ).fetchone()
            result.append(float(row[0]))
        return result

    def sent_since(self, since: float) -> list[float]:
        """Wall-clock times (``time.time()``) at which requests went in flight after ``since``."""
        # Newest first along the primary key, stopping at ``since``: no scan of a long history.
        found: list[float] = []
        for status, at in self._db.execute("SELECT status, at FROM transitions ORDER BY seq DESC"):
            if at <= since:
                break
            if status == IN_FLIGHT:
                found.append(float(at))
        found.reverse()
        return found

    def audit(self, custom_id: str) -> list[tuple[str, str | None]]:
        """Each move of the request, oldest first, with the reason of moves no send caused."""
        rows = self._db.execute(
            "SELECT status, reason FROM transitions WHERE custom_id = ? ORDER BY seq", (custom_id,)
        )
        return [(str(status), reason) for status, reason in rows]

    def transitions(self, custom_id: str) -> list[str]:
        """Every state the request has been in, oldest first (for audits and tests)."""
        rows = self._db.execute(
            "SELECT status FROM transitions WHERE custom_id = ? ORDER BY seq", (custom_id,)
        )
        return [PENDING] + [r[0] for r in rows]

    # -- plumbing ------------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"the journal {path} was written by a newer kimiflow (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade kimiflow to resume this batch"
        )
    for number in range(version, SCHEMA_VERSION):
        with _Transaction(db):
            _MIGRATIONS[number](db)
            db.execute(f"PRAGMA user_version = {number + 1}")


def describe_sqlite_error(exc: sqlite3.Error, path: Path, doing: str) -> str:
    """One line for a failed journal operation: what happened to which file, and what to do."""
    name = getattr(exc, "sqlite_errorname", "")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or (
        not name and isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
    ):
        return (
            f"the journal {path} is damaged or not a journal ({exc}); it cannot be resumed: move it and the "
            "output away (or choose a new output=) to start the batch again"
        )
    if name == "SQLITE_FULL":
        return f"the disk is full ({doing} the journal {path}); free some space, then run the same command again"
    if name in ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH"):
        return (
            f"cannot write the journal {path} ({exc}); the directory {path.parent} must be writable: fix its "
            "permissions or choose an output= in a directory you can write to"
        )
    if name == "SQLITE_BUSY" or name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED"):
        return (
            f"the journal {path} is locked by another program ({exc}) while {doing} it; close that program, "
            "then run the same command again"
        )
    return f"{doing} the journal {path} failed ({exc}); check the disk, then run the same command again"


class _Transaction:
    """BEGIN/COMMIT around a block, nestable (inner blocks join the outer transaction)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._outer = False

    def __enter__(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._outer = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._outer:
            return
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                # A failed COMMIT (disk full, busy) may leave the transaction open: end it, then say so.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        elif self._db.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
            self._db.execute("ROLLBACK")

"""The gateway's store: virtual keys (hashed), the usage ledger, daily rollups and the admin audit log.

``GatewayStore`` is the interface the rest of the gateway uses; ``SQLiteStore`` is the embedded
default and ``PostgresStore`` (``kimiflow.gateway.stores.postgres``) serves ``postgresql://`` URLs;
``open_store`` picks one from a ``--db`` value. Methods are synchronous and
thread-safe: the server calls them from worker threads, never on the event loop.

Schema changes are a plain list of migrations (``MIGRATIONS``), applied in order and counted in
SQLite's ``user_version``. The database runs in WAL mode with ``synchronous=NORMAL``: a committed
transaction survives a ``kill -9`` of the process (only an OS crash or power loss could lose the
last commits). Rows reach it through the journal of ``kimiflow.gateway.ledger``.

``keys_version`` is a counter bumped by every key change (from the CLI or the admin API, from any
process); a serving gateway polls it to pick up changes within a second.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kimiflow.core.errors import ConfigError, InvalidArgumentError
from kimiflow.gateway.keys import load_or_create_secret
from kimiflow.gateway.stores.base import LEDGER_COLUMNS, USAGE_GROUPS, GatewayStore, LedgerRow, SQLStore, utc_day

__all__ = ["MIGRATIONS", "USAGE_GROUPS", "GatewayStore", "LedgerRow", "SQLiteStore", "is_postgres_url", "open_store",
           "sqlite_path", "state_path", "utc_day"]

def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT on its own; statements one by one stay inside the migration's transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m1(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('keys_version', 0);
        CREATE TABLE keys (
            id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, key_hash TEXT NOT NULL UNIQUE,
            display TEXT NOT NULL, limits TEXT NOT NULL, created REAL NOT NULL, revoked REAL
        );
        CREATE TABLE ledger (
            id INTEGER PRIMARY KEY, ts REAL NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL,
            status INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL, cost_cny REAL NOT NULL, latency_ms REAL NOT NULL,
            ttft_ms REAL, upstream_request_id TEXT, request_id TEXT NOT NULL UNIQUE,
            ended TEXT NOT NULL, usage_source TEXT NOT NULL
        );
        CREATE INDEX ledger_key_ts ON ledger (key_id, ts);
        CREATE TABLE rollups (
            day TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL,
            requests INTEGER NOT NULL, errors INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_cny REAL NOT NULL,
            PRIMARY KEY (day, key_id, model)
        );
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY, ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
            key_id TEXT, details TEXT NOT NULL
        );
        """
    )


def _m2(db: sqlite3.Connection) -> None:
    # Which virtual key uploaded which upstream file: a key sees, reads and deletes only its own.
    _run_script(db, "CREATE TABLE files (file_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, created REAL NOT NULL)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m1, _m2]


def is_postgres_url(url: str) -> bool:
    """Whether a ``--db`` value names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path:
    """The file a ``--db`` value names: a path or ``sqlite:///path``; other schemes are refused."""
    if url.startswith("sqlite:///"):
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db
        return Path(url[len("sqlite:///") :])
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise ConfigError(
            f"--db {scheme}://... is not supported; use a file path, sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    return Path(url).expanduser()



class SQLiteStore(SQLStore):
    """The embedded store in one SQLite file.

    >>> store = SQLiteStore(Path("gateway.sqlite"))
    >>> store.list_keys()
    []
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the gateway database {path}: {exc}; check the path and its permissions") from None
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _is_duplicate(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def key_secret(self, fallback_file: Path) -> bytes:
        """The secret stays in its own file beside the database (mode 0600), created on first use: the
        database file alone is not enough to test guessed keys, and every process using it is on this machine."""
        return load_or_create_secret(fallback_file)

    def _migrate(self) -> None:
        with self._lock, self._transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise ConfigError(
                    f"the gateway database {self.path} was written by a newer kimiflow (schema {version}); upgrade kimiflow"
                )
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(self._db)
                self._db.execute(f"PRAGMA user_version = {number}")

    # -- ledger --------------------------------------------------------------------------------

    def write_ledger(self, rows: Sequence[LedgerRow]) -> int:
        """Insert rows in one transaction, skipping request ids already present; rollups follow.

        Returns how many rows were new. Idempotent: writing the same rows again changes nothing.
        A few statements per batch, not per row: the ids already stored are looked up once, the new
        rows go in with one ``executemany`` and the rollups are summed here first.
        """
        with self._lock, self._transaction():
            seen: set[str] = set()
            ids = [row.request_id for row in rows]
            for start in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                seen.update(r[0] for r in self._db.execute(
                    f"SELECT request_id FROM ledger WHERE request_id IN ({marks})", chunk))
            fresh: list[LedgerRow] = []
            for row in rows:
                if row.request_id not in seen:
                    seen.add(row.request_id)  # a batch holding one id twice inserts it once
                    fresh.append(row)
            self._db.executemany(
                f"INSERT OR IGNORE INTO ledger ({LEDGER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.request_id, r.ts, r.key_id, r.model, r.status, r.prompt_tokens, r.cached_tokens,
                  r.completion_tokens, r.cost_cny, r.latency_ms, r.ttft_ms, r.upstream_request_id, r.ended,
                  r.usage_source) for r in fresh],
            )
            sums: dict[tuple[str, str, str], list[float]] = {}
            for r in fresh:
                total = sums.setdefault((utc_day(r.ts), r.key_id, r.model), [0, 0, 0, 0, 0, 0.0])
                total[0] += 1
                total[1] += r.status >= 400
                total[2] += r.prompt_tokens
                total[3] += r.cached_tokens
                total[4] += r.completion_tokens
                total[5] += r.cost_cny
            self._db.executemany(
                """INSERT INTO rollups VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (day, key_id, model) DO UPDATE SET
                     requests = requests + excluded.requests, errors = errors + excluded.errors,
                     prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                     cached_tokens = cached_tokens + excluded.cached_tokens,
                     completion_tokens = completion_tokens + excluded.completion_tokens,
                     cost_cny = cost_cny + excluded.cost_cny""",
                [(*group, int(t[0]), int(t[1]), int(t[2]), int(t[3]), int(t[4]), t[5]) for group, t in sums.items()],
            )
        return len(fresh)

    def spend_since(self, key_id: str, day: str) -> float:
        """CNY the key spent from UTC day ``day`` on (``""`` for all time), from the rollups."""
        with self._lock:
            value = self._db.execute(
                "SELECT COALESCE(SUM(cost_cny), 0) FROM rollups WHERE key_id = ? AND day >= ?", (key_id, day)
            ).fetchone()[0]
        return float(value)

    def usage(self, *, key_id: str | None = None, since: str | None = None, by: str = "day") -> list[dict[str, Any]]:
        """Totals from the daily rollups, grouped by day, model or key (name included)."""
        if by not in USAGE_GROUPS:
            raise InvalidArgumentError(f"--by must be one of {', '.join(USAGE_GROUPS)}, got {by!r}")
        column = {"day": "r.day", "model": "r.model", "key": "r.key_id"}[by]
        where, params = [], []
        if key_id is not None:
            where.append("r.key_id = ?")
            params.append(key_id)
        if since:
            where.append("r.day >= ?")
            params.append(since)
        query = (
            f"SELECT {column}, COALESCE(k.name, r.key_id), SUM(r.requests), SUM(r.errors), SUM(r.prompt_tokens), "
            "SUM(r.cached_tokens), SUM(r.completion_tokens), SUM(r.cost_cny) "
            "FROM rollups r LEFT JOIN keys k ON k.id = r.key_id "
            + (f"WHERE {' AND '.join(where)} " if where else "")
            + f"GROUP BY {column} ORDER BY {column}"
        )
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        out = []
        for row in rows:
            entry: dict[str, Any] = {by: row[0]}
            if by == "key":
                entry["name"] = row[1]
            entry.update(requests=row[2], errors=row[3], prompt_tokens=row[4], cached_tokens=row[5],
                         completion_tokens=row[6], cost_cny=round(row[7], 6))
            out.append(entry)
        return out


def state_path(url: str, home: Path) -> Path:
    """The local path the gateway's own files derive from: the ledger journals (one per process, see
    ``kimiflow.gateway.ledger``) and, for SQLite, the key secret (PostgreSQL keeps it in the database).

    For SQLite it is the database file itself; for PostgreSQL a file under ``home`` named after the
    server and database (never the password), so one machine can serve several databases.
    """
    if not is_postgres_url(url):
        return sqlite_path(url)
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    where = f"{parts.hostname or 'local'}-{parts.port or 5432}-{parts.path.strip('/') or 'postgres'}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in where)
    return home / f"gateway-pg-{safe}.db"


def open_store(url: str, *, retention_days: int | None = None) -> GatewayStore:
    """The store a ``--db`` value (or ``KIMIFLOW_GATEWAY_DB``) names: PostgreSQL for ``postgresql://``
    URLs (``?retention_days=N`` keeps N days of raw ledger rows), else a SQLite file (see ``sqlite_path``)."""
    if is_postgres_url(url):
        from kimiflow.gateway.stores.postgres import PostgresStore

        return PostgresStore(url, retention_days=retention_days)
    return SQLiteStore(sqlite_path(url))

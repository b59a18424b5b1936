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

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from kimiflow.core.errors import ConfigError, InvalidArgumentError
from kimiflow.gateway.keys import KeyLimits, KeyRecord
from kimiflow.gateway.stores.base import USAGE_GROUPS, GatewayStore, LedgerRow, utc_day

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


_LEDGER_COLUMNS = (
    "request_id, ts, key_id, model, status, prompt_tokens, cached_tokens, completion_tokens, cost_cny, "
    "latency_ms, ttft_ms, upstream_request_id, ended, usage_source"
)


class SQLiteStore:
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

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise ConfigError(
                        f"the gateway database {self.path} was written by a newer kimiflow (schema {version}); upgrade kimiflow"
                    )
                for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                    migration(self._db)
                    self._db.execute(f"PRAGMA user_version = {number}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- keys ----------------------------------------------------------------------------------

    @staticmethod
    def _record(row: Sequence[Any]) -> KeyRecord:
        raw = msgspec.json.decode(row[4])
        raw["models"] = tuple(raw.get("models") or ())
        return KeyRecord(id=row[0], name=row[1], key_hash=row[2], display=row[3], limits=KeyLimits(**raw),
                         created=row[5], revoked=row[6])

    def _bump(self) -> None:
        self._db.execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_version'")

    def _audit(self, actor: str, action: str, key_id: str | None, details: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO audit (ts, actor, action, key_id, details) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, action, key_id, msgspec.json.encode(details).decode()),
        )

    def create_key(self, record: KeyRecord, *, actor: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (record.id, record.name, record.key_hash, record.display,
                     msgspec.json.encode(record.limits.to_dict()).decode(), record.created, record.revoked),
                )
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise InvalidArgumentError(
                    f"a key named {record.name!r} already exists; pick another name or update that key"
                ) from None
            self._bump()
            self._audit(actor, "keys.create", record.id, {"name": record.name, "limits": record.limits.to_dict()})
            self._db.execute("COMMIT")

    def _require(self, name: str) -> KeyRecord:
        row = self._db.execute("SELECT * FROM keys WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise InvalidArgumentError(f"no key named {name!r}; `kimiflow gateway keys list` shows the names")
        return self._record(row)

    def update_key(self, name: str, limits: KeyLimits, *, actor: str) -> KeyRecord:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                record = self._require(name)
                self._db.execute("UPDATE keys SET limits = ? WHERE id = ?",
                                 (msgspec.json.encode(limits.to_dict()).decode(), record.id))
                self._bump()
                self._audit(actor, "keys.update", record.id, {"name": name, "limits": limits.to_dict()})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return KeyRecord(record.id, record.name, record.key_hash, record.display, limits, record.created, record.revoked)

    def revoke_key(self, name: str, *, actor: str) -> KeyRecord:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                record = self._require(name)
                revoked = record.revoked if record.revoked is not None else time.time()
                self._db.execute("UPDATE keys SET revoked = ? WHERE id = ?", (revoked, record.id))
                self._bump()
                self._audit(actor, "keys.revoke", record.id, {"name": name})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return KeyRecord(record.id, record.name, record.key_hash, record.display, record.limits, record.created, revoked)

    def get_key(self, name: str) -> KeyRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM keys WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._record(row)

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        query = "SELECT * FROM keys" + ("" if include_revoked else " WHERE revoked IS NULL") + " ORDER BY created, name"
        with self._lock:
            rows = self._db.execute(query).fetchall()
        return [self._record(row) for row in rows]

    def keys_version(self) -> int:
        with self._lock:
            value: int = self._db.execute("SELECT value FROM meta WHERE name = 'keys_version'").fetchone()[0]
        return value

    # -- ledger --------------------------------------------------------------------------------

    def write_ledger(self, rows: Sequence[LedgerRow]) -> int:
        """Insert rows in one transaction, skipping request ids already present; rollups follow.

        Returns how many rows were new. Idempotent: writing the same rows again changes nothing.
        A few statements per batch, not per row: the ids already stored are looked up once, the new
        rows go in with one ``executemany`` and the rollups are summed here first.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
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
                    f"INSERT OR IGNORE INTO ledger ({_LEDGER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(fresh)

    def ledger_rows(self, *, key_id: str | None = None) -> list[LedgerRow]:
        query = f"SELECT {_LEDGER_COLUMNS} FROM ledger" + (" WHERE key_id = ?" if key_id else "") + " ORDER BY id"
        with self._lock:
            rows = self._db.execute(query, (key_id,) if key_id else ()).fetchall()
        return [LedgerRow(*row) for row in rows]

    def recent_problems(self, *, key_id: str | None = None, limit: int = 20) -> list[LedgerRow]:
        """The latest requests that failed or did not end normally, newest first."""
        query = (f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE (status >= 400 OR ended != 'ok')"
                 + (" AND key_id = ?" if key_id else "") + " ORDER BY id DESC LIMIT ?")
        params: tuple[Any, ...] = (key_id, limit) if key_id else (limit,)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [LedgerRow(*row) for row in rows]

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

    # -- files ---------------------------------------------------------------------------------

    def add_file(self, file_id: str, key_id: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", (file_id, key_id, time.time()))

    def file_owner(self, file_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT key_id FROM files WHERE file_id = ?", (file_id,)).fetchone()
        return None if row is None else str(row[0])

    def files_of(self, key_id: str) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT file_id FROM files WHERE key_id = ?", (key_id,)).fetchall()
        return {str(r[0]) for r in rows}

    def remove_file(self, file_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM files WHERE file_id = ?", (file_id,))

    # -- audit ---------------------------------------------------------------------------------

    def audit(self, actor: str, action: str, key_id: str | None, details: dict[str, Any]) -> None:
        with self._lock:
            self._audit(actor, action, key_id, details)

    def audit_log(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT ts, actor, action, key_id, details FROM audit ORDER BY id").fetchall()
        return [{"ts": r[0], "actor": r[1], "action": r[2], "key_id": r[3], "details": msgspec.json.decode(r[4])}
                for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def state_path(url: str, home: Path) -> Path:
    """The local file the gateway keeps beside its database (key secret, ledger journal derive from it).

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

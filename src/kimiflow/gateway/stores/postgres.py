"""The gateway store in PostgreSQL (``postgresql://`` URLs), with psycopg 3.

Same synchronous, thread-safe interface as ``SQLiteStore``: one connection guarded by a lock, called
from worker threads, never on the event loop. Schema versions are rows of ``schema_migrations``.

The ledger is range-partitioned by UTC day (``day`` is derived from the row's ``ts``, so a replayed
row always lands in the same partition). Its primary key is ``(day, request_id)``, which makes
``INSERT ... ON CONFLICT DO NOTHING`` idempotent on the request id. One statement per batch inserts
the rows and adds only the rows really inserted to the daily rollups, in the same transaction.
Partitions are created as rows need them (plus tomorrow's ahead); ``retention_days`` drops whole
partitions older than that many days (rollups are kept, so usage totals survive).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from kimiflow.core.errors import ConfigError, InvalidArgumentError
from kimiflow.gateway.keys import SECRET_BYTES, KeyLimits, KeyRecord, new_secret, read_secret
from kimiflow.gateway.stores.base import LEDGER_COLUMNS, USAGE_GROUPS, LedgerRow, SQLStore, utc_day

log = logging.getLogger("kimiflow.gateway.store")
T = TypeVar("T")

_M1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta VALUES ('keys_version', 0);
CREATE TABLE keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, key_hash TEXT NOT NULL UNIQUE,
    display TEXT NOT NULL, limits TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, revoked DOUBLE PRECISION
);
CREATE TABLE ledger (
    seq BIGSERIAL, day DATE NOT NULL, request_id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,
    key_id TEXT NOT NULL, model TEXT NOT NULL, status INTEGER NOT NULL, prompt_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, cost_cny DOUBLE PRECISION NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL, ttft_ms DOUBLE PRECISION, upstream_request_id TEXT,
    ended TEXT NOT NULL, usage_source TEXT NOT NULL,
    PRIMARY KEY (day, request_id)
) PARTITION BY RANGE (day);
CREATE INDEX ledger_key_ts ON ledger (key_id, ts);
CREATE TABLE rollups (
    day DATE NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL,
    requests BIGINT NOT NULL, errors BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, cost_cny DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, key_id, model)
);
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    key_id TEXT, details TEXT NOT NULL
);
CREATE TABLE files (file_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)
"""

# The server secret virtual keys are hashed with: one row, shared by every replica on every machine.
_M2 = """
CREATE TABLE key_secret (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row), secret BYTEA NOT NULL,
    created DOUBLE PRECISION NOT NULL, source TEXT NOT NULL
)
"""

MIGRATIONS: list[str] = [_M1, _M2]

# One statement per batch: insert what is new, then add exactly the inserted rows to the rollups.
_WRITE = f"""
WITH rows AS (
    SELECT * FROM unnest(%s::date[], %s::text[], %s::float8[], %s::text[], %s::text[], %s::int[], %s::bigint[], %s::bigint[],
                         %s::bigint[], %s::float8[], %s::float8[], %s::float8[], %s::text[], %s::text[], %s::text[])
        AS r(day, {LEDGER_COLUMNS})
), ins AS (
    INSERT INTO ledger (day, {LEDGER_COLUMNS})
    SELECT day, {LEDGER_COLUMNS} FROM rows
    ON CONFLICT (day, request_id) DO NOTHING
    RETURNING day, key_id, model, status, prompt_tokens, cached_tokens, completion_tokens, cost_cny
), up AS (
    INSERT INTO rollups
    SELECT day, key_id, model, count(*), count(*) FILTER (WHERE status >= 400), sum(prompt_tokens),
           sum(cached_tokens), sum(completion_tokens), sum(cost_cny)
    FROM ins GROUP BY day, key_id, model
    ON CONFLICT (day, key_id, model) DO UPDATE SET
        requests = rollups.requests + excluded.requests, errors = rollups.errors + excluded.errors,
        prompt_tokens = rollups.prompt_tokens + excluded.prompt_tokens,
        cached_tokens = rollups.cached_tokens + excluded.cached_tokens,
        completion_tokens = rollups.completion_tokens + excluded.completion_tokens,
        cost_cny = rollups.cost_cny + excluded.cost_cny
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM up)
"""

_PARTITION_LOCK = 0x6B696D69  # advisory lock id serialising partition DDL across replicas


def split_url(url: str) -> tuple[str, int | None]:
    """The connection URL without kimiflow's own ``retention_days`` query parameter, and that value."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    retention: int | None = None
    kept = []
    for name, value in query:
        if name == "retention_days":
            try:
                retention = int(value)
            except ValueError:
                retention = -1
            if retention < 1:
                raise ConfigError(f"retention_days must be a whole number of days >= 1, got {value!r}")
        else:
            kept.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), retention


def _partition_name(day: date) -> str:
    return f"ledger_p{day:%Y%m%d}"


class PostgresStore(SQLStore):
    """The gateway store in a PostgreSQL database.

    >>> store = PostgresStore("postgresql://gateway@127.0.0.1/gateway", retention_days=90)
    >>> store.list_keys()
    []
    """

    _P = "%s"
    _LEDGER_ORDER = "seq"
    _LOCK_ROW = " FOR UPDATE"

    def __init__(self, url: str, *, retention_days: int | None = None) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "a postgresql:// --db needs psycopg 3; install it with: pip install 'kimiflow[postgres]'"
            ) from None
        conninfo, from_url = split_url(url)
        if retention_days is not None and retention_days < 1:
            raise ConfigError(f"retention_days must be a whole number of days >= 1, got {retention_days!r}")
        self.retention_days = retention_days if retention_days is not None else from_url
        self._psycopg = psycopg
        self._conninfo = conninfo
        self._lock = threading.Lock()
        self._partitions: set[date] = set()
        self._retention_checked: date | None = None
        self._secret: bytes | None = None
        self._closed = False
        self._tx = threading.local()  # commit_sent: of this thread's last key change
        self.reconnects = 0
        try:
            self._conn = self._connect()
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot connect to the gateway database: {' '.join(str(exc).split())}"
                "; check the postgresql:// URL (host, port, user, database) and that the server is running"
            ) from None
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- the connection ------------------------------------------------------------------------

    def _connect(self) -> Any:
        return self._psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)

    @property
    def _db(self) -> Any:
        """The connection, opened again first if the server dropped it (a restart, ``pg_terminate_backend``).

        Always used under ``_lock``. A failed reconnect raises ``psycopg.OperationalError``; the next use tries again.
        """
        if self._conn.closed and not self._closed:
            self._conn = self._connect()
            self.reconnects += 1
            log.warning("gateway store: the PostgreSQL connection was lost; reconnected")
        return self._conn

    @_db.setter
    def _db(self, conn: Any) -> None:
        self._conn = conn

    def _retry(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call`` once more on a new connection if it failed because the connection was lost.

        For reads and idempotent writes (the ledger, files); key changes use ``_retry_unsent``.
        """
        try:
            return call(*args, **kwargs)
        except self._psycopg.OperationalError as exc:
            if self._closed or not self._conn.closed:
                raise
            log.info("gateway store: PostgreSQL connection lost (%s); trying again on a new one",
                     " ".join(str(exc).split()))
        return call(*args, **kwargs)

    def _retry_unsent(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like ``_retry``, for a change that must not happen twice: tried again only if the connection
        was lost before its ``COMMIT`` was sent (an idle connection the server dropped, say); a loss
        during the commit is reported, since the change may or may not have been made."""
        try:
            return call(*args, **kwargs)
        except self._psycopg.OperationalError as exc:
            if self._closed or not self._conn.closed or getattr(self._tx, "commit_sent", True):
                raise
            log.info("gateway store: PostgreSQL connection lost before a commit (%s); trying again on a new one",
                     " ".join(str(exc).split()))
        return call(*args, **kwargs)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._tx.commit_sent = False
        with self._db.transaction():
            yield
            self._tx.commit_sent = True  # from here on the server may have committed, whatever comes back

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()

    # Retried once on a new connection when the old one was lost.
    def create_key(self, record: KeyRecord, *, actor: str) -> None:
        self._retry_unsent(super().create_key, record, actor=actor)

    def update_key(self, name: str, limits: KeyLimits, *, actor: str) -> KeyRecord:
        return self._retry_unsent(super().update_key, name, limits, actor=actor)

    def revoke_key(self, name: str, *, actor: str) -> KeyRecord:
        return self._retry_unsent(super().revoke_key, name, actor=actor)

    def add_file(self, file_id: str, key_id: str) -> None:
        self._retry(super().add_file, file_id, key_id)

    def remove_file(self, file_id: str) -> None:
        self._retry(super().remove_file, file_id)

    def get_key(self, name: str) -> KeyRecord | None:
        return self._retry(super().get_key, name)

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        return self._retry(super().list_keys, include_revoked=include_revoked)

    def keys_version(self) -> int:
        return self._retry(super().keys_version)

    def ledger_rows(self, *, key_id: str | None = None) -> list[LedgerRow]:
        return self._retry(super().ledger_rows, key_id=key_id)

    def recent_problems(self, *, key_id: str | None = None, limit: int = 20) -> list[LedgerRow]:
        return self._retry(super().recent_problems, key_id=key_id, limit=limit)

    def file_owner(self, file_id: str) -> str | None:
        return self._retry(super().file_owner, file_id)

    def files_of(self, key_id: str) -> set[str]:
        return self._retry(super().files_of, key_id)

    def audit_log(self) -> list[dict[str, Any]]:
        return self._retry(super().audit_log)

    # -- the key secret ------------------------------------------------------------------------

    def key_secret(self, fallback_file: Path) -> bytes:
        """The server secret, kept in the database so every replica hashes keys alike.

        The first process to ask stores one: the secret in ``fallback_file`` if that file exists (a
        database used before the secret moved here: its keys keep working), else a new random one.
        ``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT``: replicas starting at once agree on one.
        """
        if self._secret is None:
            self._secret = self._retry(self._key_secret, fallback_file)
        return self._secret

    def _key_secret(self, fallback_file: Path) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT secret FROM key_secret").fetchone()
        local = read_secret(fallback_file)
        if row is None:
            offered, source = (local, "file") if local is not None else (new_secret(), "generated")
            with self._lock:
                self._db.execute(
                    "INSERT INTO key_secret (only_row, secret, created, source) VALUES (TRUE, %s, %s, %s) "
                    "ON CONFLICT (only_row) DO NOTHING",
                    (offered, time.time(), source),
                )
                row = self._db.execute("SELECT secret FROM key_secret").fetchone()
            if source == "file" and bytes(row[0]) == offered:
                log.info("gateway store: the key secret of %s is now kept in the database", fallback_file)
        secret = bytes(row[0])
        if len(secret) < SECRET_BYTES:
            raise ConfigError(f"the key secret stored in the gateway database is shorter than {SECRET_BYTES} bytes")
        if local is not None and local != secret:
            log.warning("gateway store: %s differs from the key secret kept in the database; the database's is used "
                        "(keys hashed with that file's secret are not recognised)", fallback_file)
        return secret

    def _is_duplicate(self, exc: Exception) -> bool:
        return isinstance(exc, self._psycopg.errors.UniqueViolation)

    # -- schema --------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock, self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
            )
            row = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
            version = int(row[0]) if row else 0
            if version > len(MIGRATIONS):
                raise ConfigError(
                    f"the gateway database was written by a newer kimiflow (schema {version}); upgrade kimiflow"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (number, time.time()))

    def schema_version(self) -> int:
        return self._retry(self._schema_version)

    def _schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _ensure_partitions(self, days: set[date]) -> None:
        """Create the day partitions ``days`` need (and tomorrow's), once per process and day."""
        today = datetime.now(timezone.utc).date()
        wanted = (days | {today, today + timedelta(days=1)}) - self._partitions
        if not wanted:
            return
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            for day in sorted(wanted):
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {_partition_name(day)} PARTITION OF ledger "
                    f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"
                )
        self._partitions |= wanted

    def partitions(self) -> list[str]:
        """The ledger's day partitions, oldest first."""
        return self._retry(self._partition_names)

    def _partition_names(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'ledger' ORDER BY c.relname"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def apply_retention(self, *, today: date | None = None) -> list[str]:
        """Drop the ledger partitions older than ``retention_days``; returns the dropped names."""
        if self.retention_days is None:
            return []
        today = today or datetime.now(timezone.utc).date()
        cutoff = _partition_name(today - timedelta(days=self.retention_days - 1))
        with self._lock:
            return self._drop_before(cutoff)

    def _drop_before(self, cutoff: str) -> list[str]:
        dropped: list[str] = []
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            rows = self._db.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'ledger' AND c.relname < %s",
                (cutoff,),
            ).fetchall()
            for (name,) in rows:
                self._db.execute(f'DROP TABLE "{name}"')
                dropped.append(str(name))
        self._partitions = {d for d in self._partitions if _partition_name(d) >= cutoff}
        return dropped

    # -- ledger --------------------------------------------------------------------------------

    def write_ledger(self, rows: Sequence[LedgerRow]) -> int:
        """Insert rows in one transaction, skipping request ids already stored; rollups follow.

        Returns how many rows were new. Idempotent: writing the same rows again changes nothing, so a
        write that failed because the connection was lost is tried again on a new one.
        """
        return self._retry(self._write_ledger, rows)

    def _write_ledger(self, rows: Sequence[LedgerRow]) -> int:
        if not rows:
            return 0
        columns: list[list[Any]] = [[] for _ in range(15)]
        for r in rows:
            for column, value in zip(columns, (
                date.fromisoformat(utc_day(r.ts)), r.request_id, r.ts, r.key_id, r.model, r.status, r.prompt_tokens, r.cached_tokens,
                r.completion_tokens, r.cost_cny, r.latency_ms, r.ttft_ms, r.upstream_request_id, r.ended,
                r.usage_source,
            ), strict=True):
                column.append(value)
        with self._lock:
            self._ensure_partitions(set(columns[0]))
            try:
                with self._db.transaction():
                    result = self._db.execute(_WRITE, columns).fetchone()
            except self._psycopg.errors.CheckViolation:
                # No partition for a row's day: another replica's retention dropped one this process
                # had cached. Forget the cache, create what is missing, write again (still idempotent).
                self._partitions.clear()
                self._ensure_partitions(set(columns[0]))
                with self._db.transaction():
                    result = self._db.execute(_WRITE, columns).fetchone()
            today = datetime.now(timezone.utc).date()
            if self.retention_days is not None and self._retention_checked != today:
                self._retention_checked = today
                self._drop_before(_partition_name(today - timedelta(days=self.retention_days - 1)))
        return int(result[0]) if result else 0

    def spend_since(self, key_id: str, day: str) -> float:
        """CNY the key spent from UTC day ``day`` on (``""`` for all time), from the rollups."""
        return self._retry(self._spend_since, key_id, day)

    def _spend_since(self, key_id: str, day: str) -> float:
        with self._lock:
            if day:
                row = self._db.execute(
                    "SELECT COALESCE(SUM(cost_cny), 0) FROM rollups WHERE key_id = %s AND day >= %s::date", (key_id, day)
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT COALESCE(SUM(cost_cny), 0) FROM rollups WHERE key_id = %s", (key_id,)
                ).fetchone()
        return float(row[0]) if row else 0.0

    def usage(self, *, key_id: str | None = None, since: str | None = None, by: str = "day") -> list[dict[str, Any]]:
        """Totals from the daily rollups, grouped by day, model or key (name included)."""
        return self._retry(self._usage, key_id=key_id, since=since, by=by)

    def _usage(self, *, key_id: str | None, since: str | None, by: str) -> list[dict[str, Any]]:
        if by not in USAGE_GROUPS:
            raise InvalidArgumentError(f"--by must be one of {', '.join(USAGE_GROUPS)}, got {by!r}")
        if since:
            try:
                date.fromisoformat(since)
            except ValueError:
                raise InvalidArgumentError(f"--since must be a day like 2026-12-01, got {since!r}") from None
        column = {"day": "to_char(r.day, 'YYYY-MM-DD')", "model": "r.model", "key": "r.key_id"}[by]
        where: list[str] = []
        params: list[Any] = []
        if key_id is not None:
            where.append("r.key_id = %s")
            params.append(key_id)
        if since:
            where.append("r.day >= %s::date")
            params.append(since)
        query = (
            f"SELECT {column} AS g, MIN(COALESCE(k.name, r.key_id)), SUM(r.requests), SUM(r.errors), "
            "SUM(r.prompt_tokens), SUM(r.cached_tokens), SUM(r.completion_tokens), SUM(r.cost_cny) "
            "FROM rollups r LEFT JOIN keys k ON k.id = r.key_id "
            + (f"WHERE {' AND '.join(where)} " if where else "")
            + "GROUP BY g ORDER BY g"
        )
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        out = []
        for row in rows:
            entry: dict[str, Any] = {by: row[0]}
            if by == "key":
                entry["name"] = row[1]
            entry.update(requests=int(row[2]), errors=int(row[3]), prompt_tokens=int(row[4]),
                         cached_tokens=int(row[5]), completion_tokens=int(row[6]), cost_cny=round(float(row[7]), 6))
            out.append(entry)
        return out


"""What every gateway store shares: the ``GatewayStore`` protocol, the ledger row, the UTC day key, and
``SQLStore``, the queries SQLite and PostgreSQL run alike."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import msgspec

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.gateway.keys import KeyLimits, KeyRecord

USAGE_GROUPS = ("day", "model", "key")


@dataclass(frozen=True)
class LedgerRow:
    """One request, as billed. ``ended`` says how it ended; ``usage_source`` is 'kimi' or 'estimated'."""

    request_id: str
    ts: float
    key_id: str
    model: str
    status: int
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_cny: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    upstream_request_id: str | None = None
    ended: str = "ok"
    usage_source: str = "kimi"


class GatewayStore(Protocol):
    """What the gateway needs from a database."""

    def create_key(self, record: KeyRecord, *, actor: str) -> None: ...
    def update_key(self, name: str, limits: KeyLimits, *, actor: str) -> KeyRecord: ...
    def revoke_key(self, name: str, *, actor: str) -> KeyRecord: ...
    def get_key(self, name: str) -> KeyRecord | None: ...
    def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]: ...
    def keys_version(self) -> int: ...
    def key_secret(self, fallback_file: Path) -> bytes:
        """The server secret virtual keys are hashed with; ``fallback_file`` is the local file that holds
        it (SQLite) or held it before the store did (PostgreSQL: adopted on first use, so old keys work)."""
        ...
    def write_ledger(self, rows: Sequence[LedgerRow]) -> int: ...
    def ledger_rows(self, *, key_id: str | None = None) -> list[LedgerRow]: ...
    def spend_since(self, key_id: str, day: str) -> float: ...
    def recent_problems(self, *, key_id: str | None = None, limit: int = 20) -> list[LedgerRow]: ...
    def usage(self, *, key_id: str | None = None, since: str | None = None, by: str = "day") -> list[dict[str, Any]]: ...
    def audit(self, actor: str, action: str, key_id: str | None, details: dict[str, Any]) -> None: ...
    def add_file(self, file_id: str, key_id: str) -> None: ...
    def file_owner(self, file_id: str) -> str | None: ...
    def files_of(self, key_id: str) -> set[str]: ...
    def remove_file(self, file_id: str) -> None: ...
    def audit_log(self) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


def utc_day(ts: float) -> str:
    """The UTC calendar day of a Unix time, as the rollups key it (``2026-12-02``)."""
    return _utc_day(int(ts // 86_400))


@functools.lru_cache(maxsize=64)
def _utc_day(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")


LEDGER_COLUMNS = (
    "request_id, ts, key_id, model, status, prompt_tokens, cached_tokens, completion_tokens, cost_cny, "
    "latency_ms, ttft_ms, upstream_request_id, ended, usage_source"
)
"""The ledger's columns in ``LedgerRow``'s field order."""


class SQLStore:
    """The keys, audit, files and ledger reads both SQL stores run alike; the dialect is in a few hooks.

    A subclass sets ``_db`` (a DB-API connection whose ``execute`` returns a cursor) and ``_lock``,
    and says how its dialect differs: ``_P`` the placeholder, ``_LEDGER_ORDER`` the ledger's insertion
    order column, ``_LOCK_ROW`` the suffix that locks a key row for an update, ``_transaction()``,
    and ``_is_duplicate(exc)`` for a unique-key violation.
    """

    _db: Any
    _lock: threading.Lock
    _P = "?"
    _LEDGER_ORDER = "id"
    _LOCK_ROW = ""

    def _sql(self, query: str) -> str:
        return query if self._P == "?" else query.replace("?", self._P)

    def _transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _is_duplicate(self, exc: Exception) -> bool:
        raise NotImplementedError

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
            self._sql("INSERT INTO audit (ts, actor, action, key_id, details) VALUES (?, ?, ?, ?, ?)"),
            (time.time(), actor, action, key_id, msgspec.json.encode(details).decode()),
        )

    # -- keys ----------------------------------------------------------------------------------

    def create_key(self, record: KeyRecord, *, actor: str) -> None:
        with self._lock:
            try:
                with self._transaction():
                    self._db.execute(
                        self._sql("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?)"),
                        (record.id, record.name, record.key_hash, record.display,
                         msgspec.json.encode(record.limits.to_dict()).decode(), record.created, record.revoked),
                    )
                    self._bump()
                    self._audit(actor, "keys.create", record.id, {"name": record.name, "limits": record.limits.to_dict()})
            except Exception as exc:
                if not self._is_duplicate(exc):
                    raise
                raise InvalidArgumentError(
                    f"a key named {record.name!r} already exists; pick another name or update that key"
                ) from None

    def _require(self, name: str) -> KeyRecord:
        row = self._db.execute(self._sql("SELECT * FROM keys WHERE name = ?") + self._LOCK_ROW, (name,)).fetchone()
        if row is None:
            raise InvalidArgumentError(f"no key named {name!r}; `kimiflow gateway keys list` shows the names")
        return self._record(row)

    def update_key(self, name: str, limits: KeyLimits, *, actor: str) -> KeyRecord:
        with self._lock, self._transaction():
            record = self._require(name)
            self._db.execute(self._sql("UPDATE keys SET limits = ? WHERE id = ?"),
                             (msgspec.json.encode(limits.to_dict()).decode(), record.id))
            self._bump()
            self._audit(actor, "keys.update", record.id, {"name": name, "limits": limits.to_dict()})
        return KeyRecord(record.id, record.name, record.key_hash, record.display, limits, record.created, record.revoked)

    def revoke_key(self, name: str, *, actor: str) -> KeyRecord:
        with self._lock, self._transaction():
            record = self._require(name)
            revoked = record.revoked if record.revoked is not None else time.time()
            self._db.execute(self._sql("UPDATE keys SET revoked = ? WHERE id = ?"), (revoked, record.id))
            self._bump()
            self._audit(actor, "keys.revoke", record.id, {"name": name})
        return KeyRecord(record.id, record.name, record.key_hash, record.display, record.limits, record.created, revoked)

    def get_key(self, name: str) -> KeyRecord | None:
        with self._lock:
            row = self._db.execute(self._sql("SELECT * FROM keys WHERE name = ?"), (name,)).fetchone()
        return None if row is None else self._record(row)

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        query = "SELECT * FROM keys" + ("" if include_revoked else " WHERE revoked IS NULL") + " ORDER BY created, name"
        with self._lock:
            rows = self._db.execute(query).fetchall()
        return [self._record(row) for row in rows]

    def keys_version(self) -> int:
        """A counter every key change bumps, read fresh from the database (one indexed row)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'keys_version'").fetchone()
        return int(row[0]) if row else 0

    # -- ledger reads ----------------------------------------------------------------------------

    def ledger_rows(self, *, key_id: str | None = None) -> list[LedgerRow]:
        query = (f"SELECT {LEDGER_COLUMNS} FROM ledger" + (" WHERE key_id = ?" if key_id else "")
                 + f" ORDER BY {self._LEDGER_ORDER}")
        with self._lock:
            rows = self._db.execute(self._sql(query), (key_id,) if key_id else ()).fetchall()
        return [LedgerRow(*row) for row in rows]

    def recent_problems(self, *, key_id: str | None = None, limit: int = 20) -> list[LedgerRow]:
        """The latest requests that failed or did not end normally, newest first."""
        query = (f"SELECT {LEDGER_COLUMNS} FROM ledger WHERE (status >= 400 OR ended != 'ok')"
                 + (" AND key_id = ?" if key_id else "") + f" ORDER BY {self._LEDGER_ORDER} DESC LIMIT ?")
        params: tuple[Any, ...] = (key_id, limit) if key_id else (limit,)
        with self._lock:
            rows = self._db.execute(self._sql(query), params).fetchall()
        return [LedgerRow(*row) for row in rows]

    # -- files ---------------------------------------------------------------------------------

    def add_file(self, file_id: str, key_id: str) -> None:
        with self._lock:
            self._db.execute(
                self._sql("INSERT INTO files VALUES (?, ?, ?) ON CONFLICT (file_id) DO UPDATE SET "
                          "key_id = excluded.key_id, created = excluded.created"),
                (file_id, key_id, time.time()),
            )

    def file_owner(self, file_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(self._sql("SELECT key_id FROM files WHERE file_id = ?"), (file_id,)).fetchone()
        return None if row is None else str(row[0])

    def files_of(self, key_id: str) -> set[str]:
        with self._lock:
            rows = self._db.execute(self._sql("SELECT file_id FROM files WHERE key_id = ?"), (key_id,)).fetchall()
        return {str(r[0]) for r in rows}

    def remove_file(self, file_id: str) -> None:
        with self._lock:
            self._db.execute(self._sql("DELETE FROM files WHERE file_id = ?"), (file_id,))

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

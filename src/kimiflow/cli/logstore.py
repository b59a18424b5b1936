"""The chat log: every exchange the CLI makes, in SQLite, in the user directory.

One row per exchange (prompt, answer, reasoning, model, usage, cost, latency, request id), grouped
into conversations so ``kimiflow chat -c`` can continue the last one. The API key is never stored:
rows hold only what was sent as messages and what came back, and the key is scrubbed from both in
case a user pasted it into a prompt.

Schema changes are a plain list of functions (``MIGRATIONS``); each runs once, in order, and its
name is recorded in ``_migrations``. Append new ones, never edit old ones.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NO_LOG_ENV = "KIMIFLOW_NO_LOG"


def _m001_initial(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            created REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE exchanges (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL REFERENCES conversations(id),
            created REAL NOT NULL,
            model TEXT NOT NULL,
            system TEXT,
            prompt TEXT NOT NULL,
            answer TEXT NOT NULL,
            reasoning TEXT,
            options TEXT NOT NULL DEFAULT '{}',
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            cost_cny REAL,
            latency_ms REAL,
            request_id TEXT,
            interrupted INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("CREATE INDEX exchanges_conversation ON exchanges(conversation_id, id)")


def _m002_tool_calls(db: sqlite3.Connection) -> None:
    # `kimiflow chat --tool`: each call of the exchange (name, arguments, result, ok, duration), as JSON.
    db.execute("ALTER TABLE exchanges ADD COLUMN tool_calls TEXT NOT NULL DEFAULT '[]'")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_initial, _m002_tool_calls]


@dataclass
class Exchange:
    """One prompt and its answer, as logged."""

    conversation_id: str
    model: str
    prompt: str
    answer: str
    system: str | None = None
    reasoning: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_cny: float | None = None
    latency_ms: float | None = None
    request_id: str | None = None
    interrupted: bool = False
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``kimiflow logs --json``."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "created": self.created,
            "model": self.model,
            "system": self.system,
            "prompt": self.prompt,
            "answer": self.answer,
            "reasoning": self.reasoning,
            "options": self.options,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
            },
            "cost_cny": self.cost_cny,
            "latency_ms": self.latency_ms,
            "request_id": self.request_id,
            "interrupted": self.interrupted,
            "tool_calls": self.tool_calls,
        }


_COLUMNS = (
    "id, conversation_id, created, model, system, prompt, answer, reasoning, options, prompt_tokens, "
    "completion_tokens, total_tokens, cost_cny, latency_ms, request_id, interrupted, tool_calls"
)


def _row_to_exchange(row: tuple[Any, ...]) -> Exchange:
    (ident, conversation_id, created, model, system, prompt, answer, reasoning, options,
     prompt_tokens, completion_tokens, total_tokens, cost, latency, request_id, interrupted, tool_calls) = row
    return Exchange(
        id=ident, conversation_id=conversation_id, created=created, model=model, system=system,
        prompt=prompt, answer=answer, reasoning=reasoning, options=json.loads(options or "{}"),
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=total_tokens,
        cost_cny=cost, latency_ms=latency, request_id=request_id, interrupted=bool(interrupted),
        tool_calls=json.loads(tool_calls or "[]"),
    )


def make_private(path: Path) -> None:
    """Create ``path`` readable by its owner only (0600), or take group and other bits off an existing one.

    The log holds prompts and answers, as private as the key in ``config.json``. Created before
    SQLite opens it because SQLite would create it with the umask's usual 0644; its journal files
    copy the database's mode.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & 0o077 and path.is_file():
            os.chmod(path, mode & 0o700)
    else:
        os.close(fd)


class LogStore:
    """The SQLite chat log.

    >>> store = LogStore(logs_path())
    >>> cid = store.new_conversation("moonshot-v1-8k")
    >>> store.record(Exchange(conversation_id=cid, model="moonshot-v1-8k", prompt="hi", answer="hello"))
    >>> [e.answer for e in store.recent(limit=5)]
    ['hello']
    """

    def __init__(self, path: Path, *, secret: str | None = None) -> None:
        self.path = path
        self._secret = secret
        make_private(path)
        with self._connect() as db:
            migrate(db)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5.0)
        try:
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    def _scrub(self, text: str | None) -> str | None:
        if text is None or not self._secret:
            return text
        return text.replace(self._secret, "sk-***")

    def new_conversation(self, model: str) -> str:
        """Start a conversation and return its id."""
        conversation_id = uuid.uuid4().hex
        with self._connect() as db:
            db.execute(
                "INSERT INTO conversations (id, model, created) VALUES (?, ?, ?)",
                (conversation_id, model, time.time()),
            )
        return conversation_id

    def record(self, exchange: Exchange) -> int:
        """Store one exchange; returns its row id."""
        options = json.dumps(exchange.options, ensure_ascii=False, default=str)
        tool_calls = json.dumps(exchange.tool_calls, ensure_ascii=False, default=str)
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO exchanges (conversation_id, created, model, system, prompt, answer, reasoning, "
                "options, prompt_tokens, completion_tokens, total_tokens, cost_cny, latency_ms, request_id, "
                "interrupted, tool_calls) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    exchange.conversation_id, exchange.created, exchange.model,
                    self._scrub(exchange.system), self._scrub(exchange.prompt) or "",
                    self._scrub(exchange.answer) or "", self._scrub(exchange.reasoning),
                    self._scrub(options), exchange.prompt_tokens, exchange.completion_tokens,
                    exchange.total_tokens, exchange.cost_cny, exchange.latency_ms, exchange.request_id,
                    int(exchange.interrupted), self._scrub(tool_calls),
                ),
            )
            row_id = cursor.lastrowid
        assert row_id is not None
        exchange.id = row_id
        return row_id

    def recent(self, *, limit: int = 10, query: str | None = None) -> list[Exchange]:
        """The newest ``limit`` exchanges, newest first; ``query`` matches prompt, answer or system."""
        sql = f"SELECT {_COLUMNS} FROM exchanges"
        params: list[Any] = []
        if query:
            like = "LIKE ? ESCAPE '\\'"
            sql += f" WHERE prompt {like} OR answer {like} OR system {like}"
            pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            params += [pattern, pattern, pattern]
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._connect() as db:
            return [_row_to_exchange(row) for row in db.execute(sql, params)]

    def last_conversation_id(self) -> str | None:
        """The conversation of the newest exchange, or ``None`` when the log is empty."""
        with self._connect() as db:
            row = db.execute("SELECT conversation_id FROM exchanges ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def conversation(self, conversation_id: str) -> list[Exchange]:
        """A conversation's exchanges, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM exchanges WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            )
            return [_row_to_exchange(row) for row in rows]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet applied, in order; returns the names applied now."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    applied = []
    for migration in MIGRATIONS:
        name = migration.__name__
        if name in done:
            continue
        migration(db)
        db.execute("INSERT INTO _migrations (name, applied) VALUES (?, ?)", (name, time.time()))
        applied.append(name)
    return applied


def logging_disabled(no_log_flag: bool = False) -> bool:
    """True when ``--no-log`` was given or ``KIMIFLOW_NO_LOG`` is set to a true value."""
    value = os.environ.get(NO_LOG_ENV, "").strip().lower()
    return no_log_flag or value in {"1", "true", "yes", "on"}

"""The SQLite chat log: migrations, recording, search, conversations, key scrubbing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from kimiflow.cli.logstore import MIGRATIONS, Exchange, LogStore, logging_disabled, migrate


def test_migrations_run_once_and_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    LogStore(path)
    LogStore(path)  # a second open must not re-run anything
    with sqlite3.connect(path) as db:
        names = [row[0] for row in db.execute("SELECT name FROM _migrations")]
        assert migrate(db) == []
    assert names == [m.__name__ for m in MIGRATIONS]


def test_record_and_recent_newest_first(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs.db")
    cid = store.new_conversation("moonshot-v1-8k")
    for i in range(3):
        store.record(Exchange(conversation_id=cid, model="moonshot-v1-8k", prompt=f"q{i}", answer=f"a{i}",
                              prompt_tokens=3, completion_tokens=4, total_tokens=7, cost_cny=0.1,
                              latency_ms=12.5, request_id=f"req-{i}", options={"temperature": 0.3}))
    recent = store.recent(limit=2)
    assert [e.prompt for e in recent] == ["q2", "q1"]
    assert recent[0].request_id == "req-2"
    assert recent[0].options == {"temperature": 0.3}
    assert recent[0].to_dict()["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_search_matches_prompt_answer_and_system_literally(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs.db")
    cid = store.new_conversation("m")
    store.record(Exchange(conversation_id=cid, model="m", prompt="合同条款", answer="x"))
    store.record(Exchange(conversation_id=cid, model="m", prompt="p", answer="100% sure"))
    store.record(Exchange(conversation_id=cid, model="m", prompt="p", answer="y", system="你是律师"))
    store.record(Exchange(conversation_id=cid, model="m", prompt="100 percent", answer="z"))
    assert [e.prompt for e in store.recent(query="合同")] == ["合同条款"]
    assert [e.answer for e in store.recent(query="律师")] == ["y"]
    # % is literal, not a wildcard
    assert [e.answer for e in store.recent(query="100%")] == ["100% sure"]


def test_conversation_and_last_conversation(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs.db")
    assert store.last_conversation_id() is None
    first = store.new_conversation("m")
    second = store.new_conversation("m")
    store.record(Exchange(conversation_id=second, model="m", prompt="b1", answer="B1"))
    store.record(Exchange(conversation_id=first, model="m", prompt="a1", answer="A1"))
    store.record(Exchange(conversation_id=first, model="m", prompt="a2", answer="A2"))
    assert store.last_conversation_id() == first
    assert [e.prompt for e in store.conversation(first)] == ["a1", "a2"]


def test_the_key_is_scrubbed_from_everything_stored(tmp_path: Path) -> None:
    key = "sk-secret-key-that-must-not-leak-1234"
    store = LogStore(tmp_path / "logs.db", secret=key)
    cid = store.new_conversation("m")
    store.record(Exchange(conversation_id=cid, model="m", prompt=f"my key is {key}", answer=f"echo {key}",
                          system=key, reasoning=key, options={"note": key}))
    assert key.encode() not in (tmp_path / "logs.db").read_bytes()
    assert store.recent()[0].prompt == "my key is sk-***"


def test_logging_switches(monkeypatch) -> None:
    monkeypatch.delenv("KIMIFLOW_NO_LOG", raising=False)
    assert not logging_disabled()
    assert logging_disabled(True)
    monkeypatch.setenv("KIMIFLOW_NO_LOG", "1")
    assert logging_disabled()
    monkeypatch.setenv("KIMIFLOW_NO_LOG", "0")
    assert not logging_disabled()

"""``kimiflow batch --schema``: the CLI in a subprocess against ``kimiflow sim`` in another, the simulator
spoiling a share of the structured answers (``--fault-rate invalid-json=...`` or ``schema-violation=...``:
answers are validated against the schema itself, see structured.validate_answer) so lines are re-asked
and some fail; then a crash mid-run and a resume."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from kimiflow.batch.options import BatchOptions
from kimiflow.core.errors import InvalidArgumentError

from .conftest import read_jsonl, write_jsonl
from .test_crash import KIMIFLOW, env_for, sim_command, stats

SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["bug", "billing", "other"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["category", "priority"],
}
N = 24


def _lines(n: int) -> list[dict[str, object]]:
    return [{"custom_id": f"t{i}", "prompt": f"Classify support ticket {i}: the invoice is wrong"} for i in range(n)]


def _command(src: Path, out: Path, schema: Path) -> list[str]:
    return [KIMIFLOW, "batch", str(src), "-o", str(out), "--schema", str(schema), "-m", "kimi-k2.6",
            "--concurrency", "8", "--rpm", "100000", "--tpm", "100000000", "--quiet"]


def _valid(obj: dict[str, object]) -> bool:
    return (set(obj) <= {"category", "priority"} and obj.get("category") in ("bug", "billing", "other")
            and type(obj.get("priority")) is int and 1 <= obj["priority"] <= 5)  # type: ignore[operator]


def _finished_transitions(journal: Path) -> dict[str, int]:
    with sqlite3.connect(journal) as db:
        rows = db.execute("SELECT custom_id, COUNT(*) FROM transitions WHERE status IN ('done', 'failed') "
                          "GROUP BY custom_id").fetchall()
    return {cid: count for cid, count in rows}


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "ticket.schema.json"
    path.write_text(json.dumps(SCHEMA), encoding="utf-8")
    return path


def test_schema_batch_reasks_sums_usage_and_reports_validation_errors(tmp_path: Path, schema_file: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", _lines(N))
    out = tmp_path / "out.jsonl"
    with sim_command("--seed", "5", "--fault-rate", "invalid-json=0.6") as root:
        done = subprocess.run(_command(src, out, schema_file), env=env_for(root), capture_output=True, text=True,
                              timeout=60)
        served = stats(root)
    ok, failed = read_jsonl(out), read_jsonl(tmp_path / "out.errors.jsonl")
    assert done.returncode == (2 if failed else 0), done.stderr
    ids = [r["custom_id"] for r in ok] + [r["custom_id"] for r in failed]
    assert sorted(ids) == sorted(f"t{i}" for i in range(N))  # each id exactly once
    assert ok and failed, "the fault rate should make some lines fail and others pass"
    for record in ok:
        assert _valid(record["parsed"])
        assert json.loads(record["response"]["body"]["choices"][0]["message"]["content"]) == record["parsed"]
    assert any(r["validation_attempts"] > 1 for r in ok)  # re-asked, then valid
    for record in failed:
        assert record["error"]["code"] == "AnswerValidationError"
        assert record["validation_attempts"] == 3  # the line and its two re-asks
        assert record["validation_errors"] and all(e["path"].startswith("$") for e in record["validation_errors"])
    # Every request the simulator served is accounted for, on exactly one line: usage summed over attempts.
    attempts = sum(r["validation_attempts"] for r in ok + failed)
    assert served["chat_completions"] == attempts
    usage = [r["response"]["body"]["usage"] for r in ok] + [r["usage"] for r in failed]
    assert sum(u["prompt_tokens"] for u in usage) == served["prompt_tokens"]
    assert sum(u["completion_tokens"] for u in usage) == served["completion_tokens"]
    assert sum(r["cost_cny"] for r in ok + failed) == pytest.approx(served["cost_cny"], rel=1e-6)
    # The summary bills the failures' answers too: everything the simulator charged.
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["prompt_tokens"] == served["prompt_tokens"]
    assert summary["completion_tokens"] == served["completion_tokens"]
    assert summary["cost_cny"] == pytest.approx(served["cost_cny"], rel=1e-5)
    # One journal entry per input id whatever the attempts.
    assert _finished_transitions(tmp_path / "out.journal.sqlite") == {cid: 1 for cid in ids}


def test_schema_violations_are_re_asked_not_accepted(tmp_path: Path, schema_file: Path) -> None:
    """The simulator's ``schema-violation`` answers are JSON objects of the wrong shape (the first field,
    ``category``, turned into a number): each is rejected by the schema and re-asked in the same entry."""
    n = 12
    src = write_jsonl(tmp_path / "in.jsonl", _lines(n))
    out = tmp_path / "out.jsonl"
    with sim_command("--seed", "3", "--fault-rate", "schema-violation=0.7") as root:
        done = subprocess.run(_command(src, out, schema_file), env=env_for(root), capture_output=True, text=True,
                              timeout=60)
        served = stats(root)
    ok, failed = read_jsonl(out), read_jsonl(tmp_path / "out.errors.jsonl")
    assert done.returncode == (2 if failed else 0), done.stderr
    assert sorted(r["custom_id"] for r in ok + failed) == sorted(f"t{i}" for i in range(n))
    assert ok and failed, "the fault rate should make some lines fail and others pass"
    assert all(_valid(r["parsed"]) for r in ok)  # no violating answer was accepted
    assert any(r["validation_attempts"] > 1 for r in ok)
    assert served["chat_completions"] == sum(r["validation_attempts"] for r in ok + failed)
    assert served["chat_completions"] > n  # re-asks happened
    for record in failed:
        assert record["validation_attempts"] == 3
        assert {"path": "$.category", "message": "expected string, got integer"} in record["validation_errors"]


def test_crash_then_resume_stays_exactly_once(tmp_path: Path, schema_file: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", _lines(N))
    out = tmp_path / "out.jsonl"
    with sim_command("--seed", "8", "--fault-rate", "invalid-json=0.4") as root:
        env = env_for(root)
        crashed = subprocess.run(_command(src, out, schema_file), env={**env, "KIMIFLOW_BATCH_CRASH_AT":
                                 "after-output-write:6"}, capture_output=True, text=True, timeout=60)
        assert crashed.returncode == -9, crashed.stderr
        before = len(read_jsonl(out))
        assert 0 < before < N
        done = subprocess.run(_command(src, out, schema_file), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 2), done.stderr
    ok, failed = read_jsonl(out), read_jsonl(tmp_path / "out.errors.jsonl")
    ids = [r["custom_id"] for r in ok] + [r["custom_id"] for r in failed]
    assert sorted(ids) == sorted(f"t{i}" for i in range(N))
    assert all(_valid(r["parsed"]) for r in ok)


def test_a_schema_kimi_cannot_take_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", _lines(3))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "strnig"}}}), encoding="utf-8")
    not_json = tmp_path / "not.json"
    not_json.write_text("{oops", encoding="utf-8")
    with sim_command() as root:
        rejected = subprocess.run(_command(src, tmp_path / "out.jsonl", bad), env=env_for(root),
                                  capture_output=True, text=True, timeout=30)
        unreadable = subprocess.run(_command(src, tmp_path / "out.jsonl", not_json), env=env_for(root),
                                    capture_output=True, text=True, timeout=30)
        assert stats(root)["chat_completions"] == 0
    assert rejected.returncode == 1
    assert "properties.a.type" in rejected.stderr and "type-unknown" in rejected.stderr
    assert unreadable.returncode == 2 and "is not valid JSON" in unreadable.stderr and "--schema" in unreadable.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(("schema", "message"), [
    ([{"type": "object"}], "must be a JSON Schema object"),
    ({"type": "array", "items": {"type": "string"}}, "must describe a JSON object"),
    ({"type": "object", "properties": {"n": {"type": "integr"}}}, "rule type-unknown"),
])
def test_batch_options_check_the_schema(schema: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        BatchOptions(schema=schema)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="max_validation_retries"):
        BatchOptions(schema=SCHEMA, max_validation_retries=-1)


def test_resuming_with_another_schema_is_refused(tmp_path: Path, schema_file: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", _lines(4))
    out = tmp_path / "out.jsonl"
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**SCHEMA, "required": ["category"]}), encoding="utf-8")
    with sim_command() as root:
        env = env_for(root)
        crashed = subprocess.run(_command(src, out, schema_file), env={**env, "KIMIFLOW_BATCH_CRASH_AT":
                                 "after-output-write:2"}, capture_output=True, text=True, timeout=60)
        assert crashed.returncode == -9, crashed.stderr
        served = stats(root)["chat_completions"]
        changed = subprocess.run(_command(src, out, other), env=env, capture_output=True, text=True, timeout=30)
        assert stats(root)["chat_completions"] == served  # refused before sending
        resumed = subprocess.run(_command(src, out, schema_file), env=env, capture_output=True, text=True, timeout=30)
    assert changed.returncode != 0 and "parameters differ" in changed.stderr and "schema" in changed.stderr
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["custom_id"] for r in read_jsonl(out)) == [f"t{i}" for i in range(4)]

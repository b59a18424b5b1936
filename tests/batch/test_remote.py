"""``kimiflow batch --remote`` as a subprocess against a ``kimiflow sim`` process: every batch outcome,
the local validation, and kill -9 between submit and fetch (one batch created, every id once)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kimiflow import Kimi
from kimiflow.sim import DEFAULT_KEY

from .conftest import read_jsonl, write_jsonl
from .test_crash import KIMIFLOW, env_for, sim_command, stats

MODEL = "kimi-k2.6"


def rows(n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "prompt": f"question {i}", "max_tokens": 30} for i in range(n)]


def remote_command(src: Path, out: Path, *extra: str) -> list[str]:
    return [KIMIFLOW, "batch", str(src), "-o", str(out), "-m", MODEL, "--remote", "--poll-interval", "0.05", *extra]


def run(src: Path, out: Path, root: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(remote_command(src, out, *extra), env=env or env_for(root), capture_output=True, text=True,
                          timeout=60)


def journal_meta(out: Path, key: str) -> str | None:
    journal = out.with_name(out.name.replace(".jsonl", ".journal.sqlite"))
    if not journal.exists():
        return None
    try:
        with sqlite3.connect(journal) as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError:  # the run is still creating the journal (no table yet, or locked)
        return None
    return None if row is None else str(row[0])


def test_remote_end_to_end_same_files_as_a_live_run_with_a_partial_error_file(tmp_path: Path) -> None:
    data = rows(8)
    # Kimi refuses a tool reply without tool_call_id: the local checks do not know it, the batch's engine does.
    data[5] = {"custom_id": "r5", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]}
    src = write_jsonl(tmp_path / "in.jsonl", data)
    out = tmp_path / "out.jsonl"
    with sim_command("--batch-hour", "0.05") as root:
        done = run(src, out, root)
        assert done.returncode == 2, done.stderr
        assert "Batch API (−40%)" in done.stderr and "real-time ¥" in done.stderr
        assert stats(root)["batches_created"] == 1
        results = read_jsonl(out)
        assert [r["custom_id"] for r in results] == [f"r{i}" for i in range(8) if i != 5]  # input order
        assert all(r["response"]["status_code"] == 200 and r["cost_cny"] > 0 for r in results)
        errors = read_jsonl(tmp_path / "out.errors.jsonl")
        assert [e["custom_id"] for e in errors] == ["r5"] and errors[0]["response"]["status_code"] == 400
        summary = json.loads((tmp_path / "out.summary.json").read_text())
        assert (summary["succeeded"], summary["failed"], summary["pending"]) == (7, 1, 0)
        assert summary["remote"]["status"] == "completed"
        assert summary["cost_cny"] == pytest.approx(sum(r["cost_cny"] for r in results), abs=1e-6)
        again = run(src, out, root)  # nothing left: no second batch
        assert again.returncode == 2 and stats(root)["batches_created"] == 1
        assert len(read_jsonl(out)) == 7


def test_input_is_checked_for_the_batch_api_before_anything_is_sent(tmp_path: Path) -> None:
    data: list[dict[str, Any]] = [*rows(2), {"custom_id": "x", "prompt": "q", "model": "kimi-k2.5"},
                                  {"custom_id": "t", "prompt": "q", "temperature": 0.3}]
    src = write_jsonl(tmp_path / "in.jsonl", data)
    with sim_command() as root:
        done = run(src, tmp_path / "out.jsonl", root)
        assert done.returncode == 1
        assert "line 3: model 'kimi-k2.5', but earlier lines use 'kimi-k2.6'" in done.stderr
        assert "line 4: kimi-k2.6 fixes temperature at 1" in done.stderr and "remove 'temperature'" in done.stderr
        other = run(write_jsonl(tmp_path / "v1.jsonl", rows(1)), tmp_path / "o2.jsonl", root, "-m", "moonshot-v1-8k")
        assert other.returncode == 1 and "cannot be batched" in other.stderr
        window = run(write_jsonl(tmp_path / "w.jsonl", rows(1)), tmp_path / "o3.jsonl", root,
                     "--completion-window", "1h")
        assert window.returncode == 1 and "--completion-window must be from 12h to 7d" in window.stderr
        assert stats(root)["files_uploaded"] == 0 and stats(root)["batches_created"] == 0


def test_kill_9_after_create_before_the_id_is_journaled_resumes_without_a_second_batch(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", rows(20))
    out = tmp_path / "out.jsonl"
    with sim_command("--batch-hour", "0.05") as root:
        env = {**env_for(root), "KIMIFLOW_BATCH_CRASH_AT": "remote-after-create"}
        killed = run(src, out, root, env=env)
        assert killed.returncode == -9
        assert journal_meta(out, "remote_batch_id") is None and journal_meta(out, "remote_token")
        resumed = run(src, out, root)
        assert resumed.returncode == 0, resumed.stderr
        assert "created by the interrupted run (not submitting again)" in resumed.stderr
        assert stats(root)["batches_created"] == 1
        ids = [r["custom_id"] for r in read_jsonl(out)]
        assert ids == [f"r{i}" for i in range(20)]


def test_real_sigkill_while_polling_then_resume_polls_the_same_batch(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", rows(30))
    out = tmp_path / "out.jsonl"
    with sim_command("--batch-hour", "20") as root:  # validating alone lasts 1/3 s: the kill lands mid-batch
        proc = subprocess.Popen(remote_command(src, out), env=env_for(root), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while journal_meta(out, "remote_batch_id") is None:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            proc.kill()
            proc.wait(10)
        assert read_jsonl(out) == []
        resumed = run(src, out, root)
        assert resumed.returncode == 0, resumed.stderr
        assert "submitted earlier (not submitting again)" in resumed.stderr
        assert stats(root)["batches_created"] == 1 and stats(root)["batch_lines"] == 30
        ids = [r["custom_id"] for r in read_jsonl(out)]
        assert ids == [f"r{i}" for i in range(30)]


def test_expired_batch_keeps_what_ran_and_retry_failed_submits_the_rest(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", rows(15))
    out = tmp_path / "out.jsonl"
    with sim_command("--batch-hour", "0.002", "--batch-lines-per-hour", "1") as root:
        done = run(src, out, root, "--completion-window", "12h")
        assert done.returncode == 2, done.stderr
        assert "expired (window 12h): 11 answered" in done.stderr and "--retry-failed" in done.stderr
        assert len(read_jsonl(out)) == 11
        errors = read_jsonl(tmp_path / "out.errors.jsonl")
        assert [e["custom_id"] for e in errors] == [f"r{i}" for i in range(11, 15)]
        assert {e["error"]["code"] for e in errors} == {"batch_expired"}
        again = run(src, out, root, "--completion-window", "12h", "--retry-failed")
        assert again.returncode == 0, again.stderr
        assert stats(root)["batches_created"] == 2
        assert sorted(r["custom_id"] for r in read_jsonl(out)) == sorted(f"r{i}" for i in range(15))


def test_failed_validation_at_kimi_is_a_clear_error(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", rows(5))
    with sim_command("--batch-hour", "0.05", "--batch-max-lines", "3") as root:
        done = run(src, tmp_path / "out.jsonl", root)
        assert done.returncode == 1
        assert "refused batch" in done.stderr and "failed validation" in done.stderr
        assert "a batch takes at most 3" in done.stderr and "(too_many_requests)" in done.stderr


def test_cancelled_batch_outcome(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", rows(5))
    out = tmp_path / "out.jsonl"
    # One line per simulated hour (20 s): the cancel lands before any line ran, however slow the machine.
    with sim_command("--batch-hour", "20", "--batch-lines-per-hour", "1") as root:
        proc = subprocess.Popen(remote_command(src, out), env=env_for(root), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while (batch_id := journal_meta(out, "remote_batch_id")) is None:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        with Kimi(api_key=DEFAULT_KEY, base_url=f"{root}/v1") as client:
            assert client.batches.cancel(batch_id).status == "cancelling"
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2, err
        assert f"batch {batch_id} was cancelled" in err
        errors = read_jsonl(tmp_path / "out.errors.jsonl")
        assert len(errors) == 5 and {e["error"]["code"] for e in errors} == {"batch_cancelled"}

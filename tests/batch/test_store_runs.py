"""The real ``kimiflow batch`` against ``kimiflow sim``: crashes at chosen points, two runs, bad files.

Every crash test kills the command with SIGKILL at a named point of commit or repair (the
``KIMIFLOW_BATCH_CRASH_AT`` seam of ``kimiflow.batch.store``), resumes it, and checks that every id
is in the output exactly once, the journal and the summary agree with the file, and no result that
reached the output was paid for again. Runs use one request in flight, so the simulator's request
count says exactly what was paid.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Reply, ScriptedServer, completion, prompts, read_jsonl, write_jsonl
from .test_crash import KIMIFLOW, env_for, sim_command, stats

N = 8
BAD = "r5"  # its temperature is out of range: the simulator answers 400, a final failure


@pytest.fixture
def sim() -> Iterator[str]:
    """``kimiflow sim`` (fast) in its own process, fresh counters; yields its root URL."""
    with sim_command("--seed", "5") as root:
        yield root


def paid(root: str) -> int:
    """Chat requests the simulator answered with a result or a final 400."""
    s = stats(root)
    return int(s["chat_completions"]) + int(s["by_status"].get("400", 0))  # type: ignore[attr-defined]


def command(src: Path, out: Path, *extra: str, rpm: int = 100000) -> list[str]:
    return [KIMIFLOW, "batch", str(src), "-o", str(out), "-m", "moonshot-v1-8k", "--concurrency", "1",
            "--rpm", str(rpm), "--tpm", "100000000", "--quiet", *extra]


def run(src: Path, out: Path, root: str, crash_at: str | None = None, *extra: str,
        **kw: object) -> subprocess.CompletedProcess[str]:
    env = env_for(root)
    env.pop("KIMIFLOW_BATCH_CRASH_AT", None)
    if crash_at:
        env["KIMIFLOW_BATCH_CRASH_AT"] = crash_at
    return subprocess.run(command(src, out, *extra), env=env, capture_output=True, text=True, timeout=90,
                          **kw)  # type: ignore[call-overload, no-any-return]


def batch_input(tmp_path: Path, with_failure: bool = False) -> Path:
    rows = prompts(N)
    if with_failure:
        rows[5]["temperature"] = 7
    return write_jsonl(tmp_path / "in.jsonl", rows)


def check_exactly_once(tmp_path: Path, with_failure: bool) -> None:
    out_ids = [r["custom_id"] for r in read_jsonl(tmp_path / "out.jsonl")]
    err_ids = [r["custom_id"] for r in read_jsonl(tmp_path / "out.errors.jsonl")]
    expected_failed = [BAD] if with_failure else []
    assert sorted(out_ids + err_ids) == sorted(f"r{i}" for i in range(N))
    assert len(set(out_ids)) == len(out_ids) and err_ids == expected_failed
    with sqlite3.connect(tmp_path / "out.journal.sqlite") as db:
        done = {row[0] for row in db.execute("SELECT custom_id FROM requests WHERE status = 'done'")}
        failed = [row[0] for row in db.execute("SELECT custom_id FROM requests WHERE status = 'failed'")]
        committed = int(db.execute("SELECT value FROM meta WHERE key = 'output_bytes'").fetchone()[0])
    assert done == set(out_ids) and failed == expected_failed
    assert committed == (tmp_path / "out.jsonl").stat().st_size
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["pending"]) == (len(out_ids), len(err_ids), 0)


def ids_in(path: Path) -> set[str]:
    """Ids of the whole lines of an output file that may end in a torn line."""
    found = set()
    for raw in path.read_bytes().splitlines():
        try:
            found.add(json.loads(raw)["custom_id"])
        except ValueError:
            pass
    return found


def killed(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == -signal.SIGKILL


# Each case: crash spec of the first run, of the second (a run that dies while repairing), and what
# the first leaves behind by hand (a torn line, or an output shortened so that repair is a full one).
CASES = {
    "after-output-write": ("after-output-write:3", None, None),
    "after-output-fsync": ("after-output-fsync:3", None, None),
    "after-done-commit": ("after-done-commit:3", None, None),
    "after-failure-commit": ("after-failure-commit:1", None, None),
    "errors-before-replace": ("errors-before-replace:2", None, None),
    "repair-before-rewrite": ("after-output-fsync:3", "repair-before-rewrite", None),
    "repair-after-rewrite": ("after-output-fsync:3", "repair-after-rewrite", None),
    "repair-after-rewrite-torn": ("after-output-fsync:3", "repair-after-rewrite", "torn"),
    "repair-after-replace": ("after-done-commit:4", "repair-after-replace", "shortened"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_kill_at_a_chosen_point_then_resume_keeps_every_paid_result_once(
    tmp_path: Path, sim: str, case: str
) -> None:
    first, second, damage = CASES[case]
    with_failure = "failure" in case or "errors" in case
    src, out = batch_input(tmp_path, with_failure), tmp_path / "out.jsonl"
    assert killed(run(src, out, sim, first))
    lost_by_hand = 0
    if damage == "torn":
        with out.open("ab") as f:
            f.write(b'{"custom_id": "r7", "respo')
    if damage == "shortened":  # two results cut off by hand, the first repeated: a full repair
        lines = out.read_bytes().splitlines(keepends=True)
        assert len(lines) == 4
        out.write_bytes(b"".join(lines[:-2] + lines[:1]))
        lost_by_hand = 2
    in_output = ids_in(out)
    paid_before = paid(sim)
    if second is not None:
        assert killed(run(src, out, sim, second))
        assert paid(sim) == paid_before  # repair sends nothing
    done = run(src, out, sim)
    assert done.returncode == (2 if with_failure else 0), done.stderr
    check_exactly_once(tmp_path, with_failure)
    assert in_output <= {r["custom_id"] for r in read_jsonl(out)}
    # Only the requests not yet in the output (and those cut off by hand) were sent again.
    assert paid(sim) == N + lost_by_hand, (paid(sim), paid_before, in_output)


def test_a_second_run_on_the_same_output_refuses_at_once_and_a_killed_run_resumes(tmp_path: Path, sim: str) -> None:
    src, out = batch_input(tmp_path), tmp_path / "out.jsonl"
    env = env_for(sim)
    env.pop("KIMIFLOW_BATCH_CRASH_AT", None)
    # One request a minute: after its first result the first run waits, holding the lock.
    first = subprocess.Popen(command(src, out, rpm=1), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not read_jsonl(out):
            assert time.monotonic() < deadline and first.poll() is None, "the first run wrote nothing"
            time.sleep(0.05)
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".jsonl", ".sqlite")}
        paid_before = paid(sim)
        started = time.monotonic()
        second = subprocess.run(command(src, out), env=env, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"Error: another kimiflow batch (pid {first.pid}) is writing {out}; wait for it or stop it"
        )
        assert took < 10, took  # the refusal itself is immediate; this is interpreter start-up under load
        after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".jsonl", ".sqlite")}
        assert after == before and paid(sim) == paid_before
        assert not (tmp_path / "out.summary.json").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    done = run(src, out, sim)  # the kernel dropped the dead run's lock
    assert done.returncode == 0, done.stderr
    check_exactly_once(tmp_path, with_failure=False)
    assert paid(sim) == N


@pytest.mark.parametrize("errors_as", ["out.jsonl", "out.journal.sqlite", "out.summary.json", "in.jsonl"])
def test_errors_equal_to_another_file_of_the_batch_is_refused_before_anything_is_sent(
    tmp_path: Path, sim: str, errors_as: str
) -> None:
    src, out = batch_input(tmp_path), tmp_path / "out.jsonl"
    assert run(src, out, sim).returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    paid_before = paid(sim)
    refused = run(src, out, sim, None, "--errors", str(tmp_path / errors_as))
    assert refused.returncode == 1
    assert "are the same file; every file of a batch must be its own: choose another --errors" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before and paid(sim) == paid_before


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_journal_is_one_line_saying_what_to_do(tmp_path: Path, sim: str, damage: str) -> None:
    src, out = batch_input(tmp_path), tmp_path / "out.jsonl"
    journal = tmp_path / "out.journal.sqlite"
    if damage == "garbage":
        journal.write_bytes(os.urandom(8192))
    else:
        assert run(src, out, sim).returncode == 0
        data = journal.read_bytes()
        journal.write_bytes(data[: len(data) // 3])
    line = one_line_error(run(src, out, sim))
    assert f"the journal {journal} is damaged or not a journal" in line and "move it and the output away" in line


def test_a_read_only_output_directory_is_one_line(tmp_path: Path, sim: str) -> None:
    src = batch_input(tmp_path)
    locked = tmp_path / "ro"
    locked.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(locked)]).returncode != 0:
            pytest.skip("running as root without chattr: cannot make a directory read-only")
    else:
        locked.chmod(0o555)
    try:
        line = one_line_error(run(src, locked / "out.jsonl", sim))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        locked.chmod(0o755)
    assert f"the directory {locked} must be writable" in line
    assert paid(sim) == 0


def test_a_full_disk_during_registration_is_one_line_and_leaves_the_journal_intact(tmp_path: Path, sim: str) -> None:
    rows = [{"custom_id": f"id-{i:06d}-" + "x" * 40, "prompt": "q", "max_tokens": 5} for i in range(20000)]
    src, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"

    def small_disk() -> None:  # files may not grow past 256 KiB: the journal's registration hits it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    line = one_line_error(run(src, out, sim, None, preexec_fn=small_disk))
    assert f"the journal {tmp_path / 'out.journal.sqlite'}" in line and "run the same command again" in line
    assert paid(sim) == 0
    with sqlite3.connect(tmp_path / "out.journal.sqlite") as db:  # what was registered is intact
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_a_journal_commit_that_fails_after_the_line_was_written_takes_the_line_back(tmp_path: Path) -> None:
    src, out = batch_input(tmp_path), tmp_path / "out.jsonl"
    journal = tmp_path / "out.journal.sqlite"
    holder: list[sqlite3.Connection] = []
    loop = asyncio.get_running_loop()

    def let_go() -> None:
        holder[0].execute("ROLLBACK")
        holder[0].close()

    async def lock_the_journal_at_the_third(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["content"] == "question 2" and not holder:
            # Another program takes the journal's write lock for longer than its busy timeout (5 s):
            # the commit of this answer, already written to the output, fails.
            db = sqlite3.connect(journal, isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            holder.append(db)
            loop.call_later(7.0, let_go)
        return 200, completion("answer")

    async with ScriptedServer(lock_the_journal_at_the_third) as server:
        env = {**os.environ, "MOONSHOT_BASE_URL": server.base_url, "MOONSHOT_API_KEY": "sk-test"}
        env.pop("KIMIFLOW_BATCH_CRASH_AT", None)
        proc = await asyncio.create_subprocess_exec(*command(src, out), env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        stderr = err.decode()
        # The run stops cleanly: exit 6 (the store failed), the summary written, the line taken back.
        assert proc.returncode == 6 and "Traceback" not in stderr, stderr
        assert "cannot record the result of 'r2'" in stderr and "its output line was taken back" in stderr
        assert json.loads((tmp_path / "out.summary.json").read_text())["status"] == "store_failed"
        assert [r["custom_id"] for r in read_jsonl(out)] == ["r0", "r1"]
        with sqlite3.connect(journal) as db:
            assert db.execute("SELECT status FROM requests WHERE custom_id = 'r2'").fetchone()[0] == "pending"
        sent_before = len(server.received)
        proc = await asyncio.create_subprocess_exec(*command(src, out), env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
    check_exactly_once(tmp_path, with_failure=False)
    assert server.received[sent_before:] == [f"question {i}" for i in range(2, N)]  # r0, r1 never paid again


def test_the_command_reads_a_file_with_a_bom_and_names_non_utf8_and_deep_lines(tmp_path: Path, sim: str) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [json.dumps(row).encode() for row in prompts(3)]
    src.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")  # as Notepad saves it
    done = run(src, out, sim)
    assert done.returncode == 0, done.stderr
    assert sorted(r["custom_id"] for r in read_jsonl(out)) == ["r0", "r1", "r2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(lines[0] + b'\n{"prompt": "caf\xe9"}\n{"prompt": "x", "n": ' + b"[" * 2000 + b"]" * 2000
                    + b"}\n")
    refused = run(bad, tmp_path / "bad_out.jsonl", sim)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "line 2: not valid UTF-8 (byte 0xe9 at column 16); save the file as UTF-8" in refused.stderr
    assert "line 3: JSON nested too deeply" in refused.stderr
    assert paid(sim) == 3


def test_the_same_command_started_twice_50_ms_apart_runs_once(tmp_path: Path, sim: str) -> None:
    src, out = batch_input(tmp_path), tmp_path / "out.jsonl"
    env = env_for(sim)
    env.pop("KIMIFLOW_BATCH_CRASH_AT", None)
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(command(src, out), env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
            time.sleep(0.05)
        results = [(p.wait(60), p.communicate()[1]) for p in procs]  # before the fix one of them hung
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    codes = sorted(code for code, _ in results)
    refusals = [err for code, err in results if code == 1]
    if codes == [0, 0]:  # the first was done before the second looked: the second found nothing to do
        assert paid(sim) == N
    else:
        assert codes == [0, 1], results
        assert "is writing" in refusals[0] and "wait for it or stop it" in refusals[0]
    check_exactly_once(tmp_path, with_failure=False)
    assert paid(sim) == N
    assert not (tmp_path / "out.journal.sqlite.lock").exists()  # removed by the run that held it

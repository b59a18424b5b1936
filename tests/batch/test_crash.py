"""The CLI as a subprocess against ``kimiflow sim`` in another process: kill -9 and Ctrl-C, then resume."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimiflow.sim import DEFAULT_KEY

from .conftest import prompts, read_jsonl, write_jsonl

KIMIFLOW = str(Path(sys.executable).with_name("kimiflow"))
N = 300
CONCURRENCY = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def sim_command(*options: str, start_timeout: float = 20.0) -> Iterator[str]:
    """``kimiflow sim OPTIONS`` in its own process on a free port; yields its root URL, kills it after."""
    port = free_port()
    proc = subprocess.Popen([KIMIFLOW, "sim", "--port", str(port), *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                stats(root)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("kimiflow sim did not start") from None
                time.sleep(0.1)
        yield root
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def sim_process() -> Iterator[str]:
    """``kimiflow sim`` with realistic latency in its own process; yields its root URL."""
    with sim_command("--latency", "realistic", "--seed", "3", start_timeout=15) as root:
        yield root


def stats(root: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{root}/_sim/stats", timeout=5) as resp:  # loopback only
        data: dict[str, int] = json.load(resp)
        return data


def batch_command(src: Path, out: Path) -> list[str]:
    return [KIMIFLOW, "batch", str(src), "-o", str(out), "-m", "moonshot-v1-8k", "--concurrency",
            str(CONCURRENCY), "--rpm", "100000", "--tpm", "100000000", "--grace", "5"]


def env_for(root: str) -> dict[str, str]:
    return {**os.environ, "MOONSHOT_BASE_URL": f"{root}/v1", "MOONSHOT_API_KEY": DEFAULT_KEY}


def in_flight_in_journal(journal: Path) -> int:
    with sqlite3.connect(journal) as db:
        row = db.execute("SELECT COUNT(*) FROM requests WHERE status = 'in_flight'").fetchone()
        return int(row[0])


def test_kill_9_at_random_points_loses_nothing_and_duplicates_nothing(tmp_path: Path, sim_process: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(N, max_tokens=30))
    out = tmp_path / "out.jsonl"
    env = env_for(sim_process)
    rng = random.Random(11)
    in_flight_at_kills: list[int] = []
    started = time.monotonic()
    for _ in range(4):
        proc = subprocess.Popen(batch_command(src, out), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 1.6))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # Requests the journal still calls in flight are the only ones a resume may send twice.
        in_flight_at_kills.append(in_flight_in_journal(tmp_path / "out.journal.sqlite"))
    assert in_flight_at_kills, "the run finished before the first kill; make it longer"
    done = subprocess.run(batch_command(src, out), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ids = [r["custom_id"] for r in read_jsonl(out)]
    assert len(ids) == len(set(ids)) == N
    assert set(ids) == {f"r{i}" for i in range(N)}
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []
    served = stats(sim_process)["chat_completions"]
    assert N <= served <= N + sum(in_flight_at_kills), (served, in_flight_at_kills)
    assert max(in_flight_at_kills) <= CONCURRENCY
    assert time.monotonic() - started < 30


def test_ctrl_c_stops_gracefully_prints_the_resume_command_and_resume_finishes(
    tmp_path: Path, sim_process: str
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(N, max_tokens=30))
    out = tmp_path / "out.jsonl"
    env = env_for(sim_process)
    proc = subprocess.Popen(batch_command(src, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(1.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "stopping: letting" in err and "resume with: kimiflow batch" in err
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["succeeded"] < N
    assert in_flight_in_journal(tmp_path / "out.journal.sqlite") == 0
    served_at_stop = stats(sim_process)["chat_completions"]
    assert served_at_stop == summary["succeeded"]  # in-flight requests finished within the grace period
    done = subprocess.run(batch_command(src, out), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ids = [r["custom_id"] for r in read_jsonl(out)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(N))
    assert stats(sim_process)["chat_completions"] == N

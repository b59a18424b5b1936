"""Errors that every request would hit alike stop the run (left pending) instead of failing the input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kimiflow.batch.journal import Journal
from kimiflow.batch.runner import run_batch
from kimiflow.batch.summary import AUTH_FAILED, COMPLETED, PERMISSION_DENIED, UNREACHABLE
from kimiflow.sim import Simulator

from .conftest import Reply, ScriptedServer, closed_port, completion, error_body, prompts, write_jsonl

MODEL = "moonshot-v1-8k"


async def no_sleep(seconds: float) -> None:
    return None


async def test_wrong_key_stops_the_run_and_leaves_every_request_pending(
    tmp_path: Path, fresh_sim: Simulator
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(300))
    out = tmp_path / "out.jsonl"
    summary = await run_batch(src, out, api_key="sk-typo-not-the-key-000", base_url=fresh_sim.base_url, tier=3,
                              model=MODEL)
    assert summary.status == AUTH_FAILED
    assert summary.failed == 0 and summary.pending == 300 and summary.succeeded == 0
    assert "API key was rejected" in summary.message and "MOONSHOT_API_KEY" in summary.message
    assert "api.moonshot.cn" in summary.message and "api.moonshot.ai" in summary.message
    assert fresh_sim.base_url in summary.message
    assert "sk-typo-not-the-key-000" not in summary.message
    # The first request goes alone, so a wrong key costs one rejected request, not a window of them.
    assert fresh_sim.stats.requests == 1
    assert (tmp_path / "out.errors.jsonl").read_text() == ""
    # The plain re-run with the right key finishes everything: no --retry-failed needed.
    again = await run_batch(src, out, api_key=fresh_sim.api_key, base_url=fresh_sim.base_url, tier=3,
                            model=MODEL)
    assert again.status == COMPLETED and again.succeeded == 300


async def test_permission_denied_stops_the_run(tmp_path: Path) -> None:
    async def deny(body: dict[str, Any]) -> Reply:
        return 403, error_body("permission_denied_error", "The API you are accessing is not open")

    src = write_jsonl(tmp_path / "in.jsonl", prompts(40))
    async with ScriptedServer(deny) as server:
        summary = await run_batch(src, tmp_path / "out.jsonl", api_key="sk-test-key-0000", base_url=server.base_url,
                                  tier=3, model=MODEL)
        served = len(server.received)
    assert summary.status == PERMISSION_DENIED
    assert summary.failed == 0 and summary.pending == 40
    assert "permission denied" in summary.message and "not open" in summary.message
    assert ".cn" in summary.message and server.base_url in summary.message
    assert served == 1
    with Journal.open(tmp_path / "out.journal.sqlite") as journal:
        assert journal.counts()["in_flight"] == 0


async def test_unreachable_server_stops_after_n_connection_failures_in_a_row(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(50))
    base = f"http://127.0.0.1:{closed_port()}/v1"
    summary = await run_batch(src, tmp_path / "out.jsonl", api_key="sk-test-key-0000", base_url=base,
                              limits=None, concurrency=2, rpm=10_000, tpm=10**8, tier=5, model=MODEL,
                              max_attempts=2, unreachable_after=4, sleep=no_sleep)
    assert summary.status == UNREACHABLE
    assert summary.failed == 0 and summary.pending == 50
    assert summary.message.startswith(f"stopped: cannot reach {base}: ")
    assert "nothing more was sent; re-run the same command when it is reachable" in summary.message
    # Attempts stop soon after the 4th request gave up (2 in flight, 2 attempts each).
    assert summary.this_run.attempts <= 2 * (4 + 2)
    assert (tmp_path / "out.errors.jsonl").read_text() == ""


async def test_isolated_connection_failures_are_failures_once_the_server_answers(tmp_path: Path) -> None:
    """Resets of a few requests, with successes between them, do not stop the run."""

    async def reset_some(body: dict[str, Any]) -> Reply:
        prompt = body["messages"][-1]["content"]
        return None if prompt in ("question 1", "question 3", "question 5") else (200, completion())

    src = write_jsonl(tmp_path / "in.jsonl", prompts(8))
    async with ScriptedServer(reset_some) as server:
        summary = await run_batch(src, tmp_path / "out.jsonl", api_key="sk-test-key-0000",
                                  base_url=server.base_url, tier=5, concurrency=1, model=MODEL, max_attempts=1,
                                  unreachable_after=2, sleep=no_sleep)
    assert summary.status == COMPLETED
    assert summary.succeeded == 5 and summary.failed == 3 and summary.pending == 0


async def test_connection_failures_at_the_end_of_the_run_are_failures(tmp_path: Path) -> None:
    async def reset_last(body: dict[str, Any]) -> Reply:
        return None if body["messages"][-1]["content"] == "question 2" else (200, completion())

    src = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    async with ScriptedServer(reset_last) as server:
        summary = await run_batch(src, tmp_path / "out.jsonl", api_key="sk-test-key-0000",
                                  base_url=server.base_url, tier=5, concurrency=1, model=MODEL, max_attempts=1,
                                  sleep=no_sleep)
    assert summary.status == COMPLETED and summary.succeeded == 2 and summary.failed == 1


@pytest.mark.parametrize(
    ("status", "kind", "retried"),
    [
        (500, "server_error", True),
        (502, "server_error", True),
        (503, "server_error", True),
        (504, "server_error", True),
        (408, "timeout", True),
        (409, "conflict", True),
        (400, "invalid_request_error", False),
        (404, "resource_not_found_error", False),
    ],
)
async def test_retry_classification_follows_the_core_table(
    tmp_path: Path, status: int, kind: str, retried: bool
) -> None:
    from kimiflow.core.errors import error_class_for
    from kimiflow.core.retry import is_retryable

    # The runner's decision must be the core's, whatever the core decides.
    assert is_retryable(error_class_for(status, kind)("x", status_code=status)) is retried

    async def fail(body: dict[str, Any]) -> Reply:
        return status, error_body(kind, "scripted")

    src = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    async with ScriptedServer(fail) as server:
        summary = await run_batch(src, tmp_path / "out.jsonl", api_key="sk-test-key-0000",
                                  base_url=server.base_url, tier=5, model=MODEL, max_attempts=3, sleep=no_sleep)
        attempts = len(server.received)
    assert summary.failed == 1
    assert attempts == (3 if retried else 1)

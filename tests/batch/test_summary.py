"""The end summary tells how to re-run only the failures and what failed most."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from kimiflow.batch.runner import run_batch
from kimiflow.cli.main import cli
from kimiflow.sim import SimConfig, run_in_thread

from .conftest import Reply, ScriptedServer, completion, error_body, prompts, write_jsonl

MODEL = "moonshot-v1-8k"


async def no_sleep(seconds: float) -> None:
    return None


async def test_summary_names_the_commonest_failure_and_the_retry_failed_command(tmp_path: Path) -> None:
    async def mixed(body: dict[str, Any]) -> Reply:
        n = int(body["messages"][-1]["content"].split()[-1])
        if n % 2 == 0:
            return 200, completion()
        if n % 3 == 0:
            return 400, error_body("invalid_request_error", "Invalid request: bad thing")
        return 500, error_body("server_error", "boom")

    src = write_jsonl(tmp_path / "in.jsonl", prompts(12))  # odd: 1,5,7,11 -> 500; 3,9 -> 400
    async with ScriptedServer(mixed) as server:
        summary = await run_batch(src, tmp_path / "out.jsonl", api_key="sk-test-key-0000",
                                  base_url=server.base_url, tier=5, model=MODEL, max_attempts=1, sleep=no_sleep,
                                  resume_command="kimiflow batch in.jsonl -o out.jsonl")
    assert summary.failed == 6 and summary.pending == 0
    top = summary.top_failure
    assert top is not None and top["kind"] == "HTTP 500 server_error" and top["count"] == 4
    assert top["example"].startswith("gave up after 1 attempt(s): InternalServerError")
    text = summary.describe()
    assert "most common failure: HTTP 500 server_error (4 of 6), e.g. gave up after 1 attempt(s)" in text
    assert "re-run only the failures with: kimiflow batch in.jsonl -o out.jsonl --retry-failed" in text
    assert '"top_failure"' in (tmp_path / "out.summary.json").read_text()


async def test_summary_without_failures_says_nothing_about_retrying(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    async with ScriptedServer() as server:
        summary = await run_batch(src, tmp_path / "out.jsonl", api_key="sk-test-key-0000",
                                  base_url=server.base_url, tier=5, model=MODEL)
    assert summary.top_failure is None and "--retry-failed" not in summary.describe()
    assert "retry_failed" not in summary.describe()


def test_cli_end_text_gives_the_retry_failed_command(tmp_path: Path) -> None:
    with run_in_thread(SimConfig(seed=8, fault_rates={"500": 1.0})) as server:
        src = write_jsonl(tmp_path / "in.jsonl", prompts(3))
        out = tmp_path / "o.jsonl"
        result = CliRunner().invoke(cli, [
            "batch", str(src), "-o", str(out), "--tier", "3", "-m", "moonshot-v1-8k",
            "--max-attempts", "1", "--base-url", server.base_url, "--api-key", server.api_key,
        ])
    assert result.exit_code == 2, result.output
    assert "most common failure: HTTP 500" in result.output and "(3 of 3)" in result.output
    expected = (f"re-run only the failures with: kimiflow batch {src} --output {out} --tier 3 "
                f"--model moonshot-v1-8k --max-attempts 1 --base-url {server.base_url} --retry-failed")
    assert expected in result.output
    assert server.api_key not in result.output


async def test_input_with_only_skipped_invalid_lines_is_an_empty_batch(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ["{bad", "[]"])
    summary = await run_batch(src, tmp_path / "out.jsonl", api_key="sk-test-key-0000",
                              base_url="http://127.0.0.1:9/v1", tier=5, model=MODEL, skip_invalid=True)
    assert summary.status == "completed" and summary.total == 0
    assert summary.describe() == f"warning: no requests in {src} (2 invalid line(s) skipped); nothing was sent"
    assert not (tmp_path / "out.jsonl").exists()

"""``kimiflow batch`` through click's CliRunner against an in-thread simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kimiflow.cli.main import cli
from kimiflow.sim import SimConfig, run_in_thread

from .conftest import prompts, read_jsonl, write_jsonl


@pytest.fixture
def sim_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with run_in_thread(SimConfig(seed=8)) as server:
        monkeypatch.setenv("MOONSHOT_BASE_URL", server.base_url)
        monkeypatch.setenv("MOONSHOT_API_KEY", server.api_key)
        yield server.api_key


def test_batch_runs_and_prints_a_summary(tmp_path: Path, sim_env: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(12))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(out), "--tier", "3", "-m", "moonshot-v1-8k"])
    assert result.exit_code == 0, result.output
    assert "completed: 12/12 succeeded" in result.output
    assert len(read_jsonl(out)) == 12
    assert json.loads((tmp_path / "out.summary.json").read_text())["counts"]["succeeded"] == 12
    assert sim_env not in result.output


def test_invalid_input_is_one_clear_error_and_nothing_is_sent(tmp_path: Path, sim_env: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "ok"}, "{bad"])
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(tmp_path / "o.jsonl"), "--tier", "3",
                                      "-m", "moonshot-v1-8k"])
    assert result.exit_code == 1
    assert "line 2: invalid JSON" in result.output and "--skip-invalid" in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_partial_explicit_limits_are_a_usage_error(tmp_path: Path, sim_env: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(tmp_path / "o.jsonl"), "--rpm", "10"])
    assert result.exit_code == 2 and "--concurrency, --rpm and --tpm" in result.output


def test_changed_parameters_on_resume_are_a_clear_error(tmp_path: Path, sim_env: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    args = ["batch", str(src), "-o", str(tmp_path / "o.jsonl"), "--tier", "3"]
    assert CliRunner().invoke(cli, [*args, "-m", "moonshot-v1-8k"]).exit_code == 0
    result = CliRunner().invoke(cli, [*args, "-m", "kimi-latest"])
    assert result.exit_code == 1 and "parameters differ" in result.output and "model" in result.output


def test_failures_exit_2_and_the_api_key_flag_is_never_echoed(tmp_path: Path) -> None:
    with run_in_thread(SimConfig(seed=8, fault_rates={"500": 1.0})) as server:
        src = write_jsonl(tmp_path / "in.jsonl", prompts(3))
        result = CliRunner().invoke(cli, [
            "batch", str(src), "-o", str(tmp_path / "o.jsonl"), "--tier", "3", "-m", "moonshot-v1-8k",
            "--max-attempts", "1", "--base-url", server.base_url, "--api-key", server.api_key,
        ])
    assert result.exit_code == 2, result.output
    assert "0/3 succeeded, 3 failed" in result.output
    assert server.api_key not in result.output
    assert server.api_key not in (tmp_path / "o.errors.jsonl").read_text()
    assert server.api_key not in (tmp_path / "o.summary.json").read_text()


def test_a_wrong_key_stops_with_exit_4_and_says_to_check_the_key(tmp_path: Path, sim_env: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-typo-typo-typo-1234")
    src = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(tmp_path / "o.jsonl"), "--tier", "3",
                                      "-m", "moonshot-v1-8k"])
    assert result.exit_code == 4, result.output
    assert "auth_failed: 0/30 succeeded, 0 failed, 30 not done" in result.output
    assert "API key was rejected" in result.output and "api.moonshot.ai" in result.output
    assert "sk-typo-typo-typo-1234" not in result.output


def test_existing_output_without_journal_is_one_line_error(tmp_path: Path, sim_env: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    notes = tmp_path / "notes.txt"
    notes.write_text("keep\n")
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(notes), "--tier", "3", "-m", "moonshot-v1-8k"])
    assert result.exit_code == 1
    assert f"{notes} exists but has no journal" in result.output and "choose a new -o" in result.output
    assert "Traceback" not in result.output and notes.read_text() == "keep\n"


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_input_warns_and_exits_0(tmp_path: Path, content: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(out), "--tier", "3", "-m", "moonshot-v1-8k",
                                      "--api-key", "sk-test-key-0000", "--base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 0, result.output
    assert f"warning: no requests in {src}; nothing was sent" in result.output
    assert "0/0" not in result.output and "batch: 0" not in result.output
    assert not out.exists() and not (tmp_path / "o.journal.sqlite").exists()


def test_no_tier_projects_the_duration_at_tier_0_and_keeps_running(tmp_path: Path, sim_env: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(tmp_path / "o.jsonl"), "-m", "moonshot-v1-8k"])
    assert result.exit_code == 0, result.output
    assert ("no --tier given, so tier 0 limits apply (1 in flight, 3 requests/min): 1 request(s) will take "
            "about 20 seconds; pass --tier N") in result.output
    assert "completed: 1/1 succeeded" in result.output


def test_an_explicit_tier_gets_no_projection(tmp_path: Path, sim_env: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(tmp_path / "o.jsonl"), "--tier", "0",
                                      "-m", "moonshot-v1-8k"])
    assert result.exit_code == 0, result.output
    assert "no --tier given" not in result.output

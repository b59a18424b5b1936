"""``kimiflow batch`` speaks in flags where the library speaks in parameters, at the command's one boundary."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kimiflow.cli.batch import in_flags
from kimiflow.cli.main import cli
from kimiflow.sim import SimConfig, run_in_thread

from .conftest import prompts, write_jsonl


@pytest.fixture
def sim_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with run_in_thread(SimConfig(seed=8)) as server:
        monkeypatch.setenv("MOONSHOT_BASE_URL", server.base_url)
        monkeypatch.setenv("MOONSHOT_API_KEY", server.api_key)
        yield server.api_key


def test_parameter_names_become_the_flags_the_user_typed() -> None:
    assert in_flags("pass skip_invalid=True to run the valid ones") == "pass --skip-invalid to run the valid ones"
    assert in_flags("pass tier=N for your account's tier") == "pass --tier N for your account's tier"
    assert in_flags("choose another output=") == "choose another -o"
    assert in_flags("no tier= given; max_attempts= must be 1") == "no --tier given; --max-attempts must be 1"
    assert in_flags("got prompt_tokens=5") == "got prompt_tokens=5"  # not a parameter of the command


def test_output_equal_to_input_names_the_flag(tmp_path: Path, sim_env: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(src), "--tier", "3", "-m", "moonshot-v1-8k"])
    assert result.exit_code == 1
    assert "are the same file; every file of a batch must be its own: choose another -o" in result.output
    assert "output=" not in result.output


def test_invalid_lines_name_the_flag_not_the_parameter(tmp_path: Path, sim_env: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "ok"}, {"prompt": "x", "timeout": 5}])
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(tmp_path / "o.jsonl"), "--tier", "3",
                                      "-m", "moonshot-v1-8k"])
    assert result.exit_code == 1
    assert "line 2: 'timeout' is an option of the Python client" in result.output
    assert "pass --skip-invalid" in result.output and "skip_invalid=True" not in result.output


def test_a_full_disk_exits_6_with_the_summary_and_what_to_do(
    tmp_path: Path, sim_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kimiflow.batch.output as output_module

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output_module.os, "write", full)
    src = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(tmp_path / "o.jsonl"), "--tier", "3",
                                      "-m", "moonshot-v1-8k", "--quiet"])
    monkeypatch.setattr(output_module.os, "write", os.write)
    assert result.exit_code == 6, result.output
    assert "store_failed: 0/5 succeeded" in result.output and "Free disk space" in result.output
    assert "resume with: kimiflow batch" in result.output
    assert (tmp_path / "o.summary.json").exists()

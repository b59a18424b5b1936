"""Mistyped or undecodable input is one clear usage line and a non-zero exit, never a traceback,
and nothing is sent or saved because of it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kimiflow.cli.home import logs_path


def _usage_error(result) -> str:
    """The one ``Error:`` line of a usage error (click also prints the usage and a --help hint)."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("model=kimi-k2.5", "use -m/--model"),
        ("messages=[]", "give the prompt as the argument"),
        ('messages=[{"role":"user","content":"x"}]', "give the prompt as the argument"),
        ("stream=false", "--no-stream"),
    ],
)
def test_an_option_that_another_argument_sets_is_refused(run, sim_env, option: str, hint: str) -> None:
    before = sim_env.stats.requests
    line = _usage_error(run("chat", "hi", "-o", option))
    assert f"{option.split('=')[0]} cannot be set with -o" in line and hint in line
    assert sim_env.stats.requests == before


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-o", "extra_body=5"], "extra_body needs a JSON object"),
        (["-o", "extra_body=[1]"], "extra_body needs a JSON object"),
        (["-o", "extra_headers=5"], "extra_headers needs a JSON object of strings"),
        (["-o", 'extra_headers={"X-A": 1}'], "extra_headers needs a JSON object of strings"),
        (["-o", "timeout=-1"], "timeout needs a number of seconds above 0"),
        (["-o", "max_retries=x"], "max_retries needs an integer >= 0"),
        (["-o", "top_p=0.5", "-o", "top_p=0.9"], "top_p is given twice"),
        (["-o", "max_tokens=3", "--max-tokens", "5"], "max_tokens is set by both -o and --max-tokens"),
        (["-o", "temperature=0.1", "-t", "0.2"], "temperature is set by both -o and --temperature"),
    ],
)
def test_call_options_of_the_wrong_shape_are_refused(run, sim_env, argv: list[str], expected: str) -> None:
    before = sim_env.stats.requests
    assert expected in _usage_error(run("chat", "hi", *argv))
    assert sim_env.stats.requests == before


def test_a_well_formed_extra_body_reaches_the_request(run, sim_env) -> None:
    result = run("chat", "写一篇长文章", "--json", "-o", 'extra_body={"max_tokens": 3}')
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["usage"]["completion_tokens"] == 3


def test_a_huge_log_count_is_a_range_error(run) -> None:
    line = _usage_error(run("logs", "-n", "99999999999999999999"))
    assert "is not in the range 1<=x<=1000000" in line


@pytest.mark.parametrize("argv", [["chat"], ["chat", "总结一下"], ["tokens"]])
def test_piped_input_that_is_not_utf8_is_refused(run, sim_env, argv: list[str]) -> None:
    before = sim_env.stats.requests
    line = _usage_error(run(*argv, input=b"\xff\xfe\xb1\xbe hi"))
    assert "piped input is not UTF-8 text (byte 0xff at offset 0)" in line
    assert "iconv" in line
    assert sim_env.stats.requests == before


def test_piped_utf8_with_a_gbk_sibling_is_fine(run, sim_env) -> None:
    """The check is on bytes, not on 'looks Chinese': valid UTF-8 Chinese text passes."""
    result = run("tokens", input="第一季度收入增长了百分之十。".encode())
    assert result.exit_code == 0, result.stderr
    assert int(result.stdout) > 0


_NOT_UTF8 = "本季度".encode("gbk")


@pytest.mark.parametrize(
    ("argv", "param"),
    [
        ([b"chat", _NOT_UTF8], "'[PROMPT]'"),
        ([b"chat", b"-s", _NOT_UTF8, b"hi"], "'-s' / '--system'"),
        ([b"chat", b"-o", b"stop=" + _NOT_UTF8, b"hi"], "'-o'"),
        ([b"tokens", _NOT_UTF8], "'[TEXT]'"),
        ([b"logs", b"-q", _NOT_UTF8], "'-q' / '--query'"),
        ([b"config", b"set", b"model", _NOT_UTF8], "'[VALUE]'"),
    ],
    ids=["prompt", "system", "option", "tokens", "logs-query", "config-value"],
)
def test_argv_that_is_not_utf8_is_refused(sim, isolated_home: Path, argv: list[bytes], param: str) -> None:
    """A real process: only the interpreter turns undecodable argv bytes into lone surrogates."""
    env = {
        **os.environ,
        "KIMIFLOW_HOME": str(isolated_home),
        "MOONSHOT_BASE_URL": sim.base_url,
        "MOONSHOT_API_KEY": sim.api_key,
        "LC_ALL": "C.UTF-8",
    }
    command = [sys.executable.encode(), b"-c", b"from kimiflow.cli.main import main; main()", *argv]
    before = sim.stats.requests
    result = subprocess.run(command, env=env, capture_output=True, timeout=60)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr
    assert "is not UTF-8 text" in errors[0]
    if param != "'-o'":
        assert param in errors[0] and "(byte 0xb1 at position 0)" in errors[0]
    assert sim.stats.requests == before
    assert not (isolated_home / "config.json").exists()


@pytest.mark.parametrize("url", ["api.moonshot.cn/v1", "http:///v1", "ftp://api.moonshot.cn/v1", "sk-oops"])
def test_config_set_refuses_an_unusable_base_url(run, isolated_home: Path, url: str) -> None:
    line = _usage_error(run("config", "set", "base_url", url))
    assert "base_url" in line and "http://" in line and "Nothing was saved" in line
    assert not (isolated_home / "config.json").exists()


@pytest.mark.parametrize("value", ["", "   "])
@pytest.mark.parametrize("name", ["api_key", "base_url", "model"])
def test_config_set_refuses_an_empty_value(run, isolated_home: Path, name: str, value: str) -> None:
    line = _usage_error(run("config", "set", name, value))
    assert f"an empty {name} cannot be used" in line and f"kimiflow config unset {name}" in line
    assert not (isolated_home / "config.json").exists()


def test_config_set_refuses_a_key_with_spaces_without_echoing_it(run, isolated_home: Path) -> None:
    key = "sk-abc def-0123456789"
    result = run("config", "set", "api_key", key)
    assert "whitespace" in _usage_error(result)
    assert key not in result.output and "def-0123456789" not in result.output
    assert not (isolated_home / "config.json").exists()


def test_config_set_stores_a_usable_base_url_normalised(run, isolated_home: Path) -> None:
    assert run("config", "set", "base_url", " http://127.0.0.1:9/v1/ ").exit_code == 0
    assert json.loads((isolated_home / "config.json").read_text())["base_url"] == "http://127.0.0.1:9/v1"


def test_the_chat_log_and_its_directory_are_private(run, sim_env, isolated_home: Path) -> None:
    assert not isolated_home.exists()
    assert run("chat", "hi", "--max-tokens", "3").exit_code == 0
    assert stat.S_IMODE(isolated_home.stat().st_mode) == 0o700
    assert logs_path().parent == isolated_home
    for path in isolated_home.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_an_existing_world_readable_chat_log_is_tightened(run, isolated_home: Path) -> None:
    isolated_home.mkdir()
    path = isolated_home / "logs.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    assert run("logs").exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

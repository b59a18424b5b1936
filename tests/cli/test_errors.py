"""Every error a user meets is one clear line on stderr and a non-zero exit; --debug shows the traceback."""

from __future__ import annotations

import socket

import pytest

from kimiflow import (
    APIConnectionError,
    AuthenticationError,
    IncompleteStreamError,
    QuotaExceededError,
    RateLimitError,
)
from kimiflow.cli.boundary import describe_error
from kimiflow.sim import SimConfig, run_in_thread

WRONG_KEY = "sk-this-key-is-wrong-0123456789abcdef"


def _one_error_line(result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("argv", [("chat", "hi"), ("models",), ("balance",), ("tokens", "hi"), ("files", "list")])
def test_no_key_says_how_to_set_one(run, argv) -> None:
    line = _one_error_line(run(*argv))
    assert "No API key" in line
    assert "export MOONSHOT_API_KEY=sk-..." in line
    assert "kimiflow config set api_key" in line


def test_wrong_key_points_at_cn_vs_ai(run, sim, monkeypatch) -> None:
    monkeypatch.setenv("MOONSHOT_BASE_URL", sim.base_url)
    monkeypatch.setenv("MOONSHOT_API_KEY", WRONG_KEY)
    result = run("chat", "hi")
    line = _one_error_line(result)
    assert "the API key was rejected" in line
    assert "401" in line
    assert "api.moonshot.cn and api.moonshot.ai are separate" in line
    assert WRONG_KEY not in result.output


def test_unknown_model_lists_valid_ones(run, sim_env) -> None:
    line = _one_error_line(run("chat", "hi", "-m", "moonshot-v9-huge"))
    assert "unknown model" in line
    assert "moonshot-v9-huge" in line
    assert "moonshot-v1-8k" in line and "kimi-k2.5" in line


def test_quota_exhausted_says_check_balance(run, monkeypatch) -> None:
    with run_in_thread(SimConfig(latency="fast", balance=0.0)) as broke:
        monkeypatch.setenv("MOONSHOT_BASE_URL", broke.base_url)
        monkeypatch.setenv("MOONSHOT_API_KEY", broke.api_key)
        line = _one_error_line(run("chat", "hi"))
    assert "balance or quota is exhausted" in line
    assert "kimiflow balance" in line


def test_simulator_not_running(run, monkeypatch) -> None:
    port = _closed_port()
    monkeypatch.setenv("MOONSHOT_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("MOONSHOT_API_KEY", WRONG_KEY)
    line = _one_error_line(run("chat", "hi"))
    assert "is the simulator running?" in line
    assert f"kimiflow sim --port {port}" in line


def test_network_down_on_the_real_api_is_one_line() -> None:
    # Built directly: tests never send traffic beyond 127.0.0.1.
    line = describe_error(APIConnectionError("Cannot connect to host api.moonshot.cn:443"),
                          base_url="https://api.moonshot.cn/v1")
    assert line.startswith("cannot reach https://api.moonshot.cn/v1")
    assert "Check the network connection" in line


def test_other_errors_have_a_fix_in_their_line() -> None:
    limited = describe_error(RateLimitError("too many", status_code=429, attempts=3), base_url="x")
    assert "rate limit reached" in limited and "kimiflow batch" in limited
    cut = describe_error(IncompleteStreamError("ended without [DONE]"), base_url="x")
    assert cut.startswith("the answer stream broke off") and "Retry" in cut
    quota = describe_error(QuotaExceededError("exhausted", status_code=429), base_url="x")
    assert "kimiflow balance" in quota


def test_no_key_material_survives_in_an_error_line() -> None:
    leaked = describe_error(AuthenticationError(f"bad key {WRONG_KEY}", status_code=401), base_url="x")
    assert WRONG_KEY not in leaked


def test_debug_flag_and_env_show_the_traceback(run, sim, monkeypatch) -> None:
    monkeypatch.setenv("MOONSHOT_BASE_URL", sim.base_url)
    monkeypatch.setenv("MOONSHOT_API_KEY", WRONG_KEY)
    with pytest.raises(AuthenticationError):
        run("--debug", "chat", "hi")
    monkeypatch.setenv("KIMIFLOW_DEBUG", "1")
    with pytest.raises(AuthenticationError):
        run("chat", "hi")


@pytest.mark.parametrize("home", ["kimiflow.cli.boundary", "kimiflow.cli.main"])
def test_the_error_names_the_base_url_the_command_was_given(monkeypatch, home: str) -> None:
    """A command run with ``--base-url X`` (batch, say): the message names X, not the settings' URL.
    The helper lives in the boundary; ``cli.main`` still forwards to it for older callers."""
    import importlib

    import click
    from click.testing import CliRunner

    from kimiflow.cli.main import COMMANDS, LazyGroup, cli

    remember_base_url = importlib.import_module(home).remember_base_url

    monkeypatch.setenv("MOONSHOT_BASE_URL", "https://api.moonshot.cn/v1")

    @click.command(name="probe")
    @click.option("--base-url", default=None)
    def probe(base_url: str | None) -> None:
        if base_url:
            remember_base_url(base_url)  # what `kimiflow batch` and every client-building command do
        raise AuthenticationError("Invalid Authentication", status_code=401)

    group = LazyGroup(name="kimiflow", lazy_commands=COMMANDS, params=list(cli.params))
    group.add_command(probe)
    runner = CliRunner()
    given = runner.invoke(group, ["probe", "--base-url", "http://127.0.0.1:9/v1"])
    line = _one_error_line(given)
    assert "rejected by http://127.0.0.1:9/v1 (" in line and "moonshot.cn/v1 (" not in line
    # Without --base-url the settings' URL is the one that was used.
    default = runner.invoke(group, ["probe"])
    assert "rejected by https://api.moonshot.cn/v1 (" in _one_error_line(default)

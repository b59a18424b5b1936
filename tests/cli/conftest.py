"""Every CLI test runs in its own user directory with no key or base URL from the real environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kimiflow.cli.main import cli

ENV_VARS = (
    "MOONSHOT_API_KEY",
    "MOONSHOT_BASE_URL",
    "KIMIFLOW_MODEL",
    "KIMIFLOW_NO_LOG",
    "KIMIFLOW_DEBUG",
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "kimiflow-home"
    monkeypatch.setenv("KIMIFLOW_HOME", str(home))
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def sim_env(sim, monkeypatch: pytest.MonkeyPatch):
    """Point the CLI at the session's simulator through the environment, as a user would."""
    monkeypatch.setenv("MOONSHOT_BASE_URL", sim.base_url)
    monkeypatch.setenv("MOONSHOT_API_KEY", sim.api_key)
    return sim


@pytest.fixture
def run():
    """Invoke the ``kimiflow`` group in-process; returns click's Result (stdout and stderr apart)."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None):
        return runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)

    return invoke

"""``kimiflow config``: effective settings with sources, the key always masked, the config file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

KEY = "sk-abcdefghijklmnopqrstuvwxyz0123abcd"


def test_defaults_without_anything(run) -> None:
    result = run("config", "--json")
    data = json.loads(result.output)
    assert data["api_key"] == {"value": "<not set>", "source": "default"}
    assert data["base_url"] == {"value": "https://api.moonshot.cn/v1", "source": "default"}
    assert data["model"]["value"] == "moonshot-v1-8k"
    assert data["logging"] == "on"


def test_env_beats_config_file_and_key_is_masked(run, isolated_home: Path) -> None:
    assert run("config", "set", "api_key", KEY).exit_code == 0
    assert run("config", "set", "model", "kimi-k2.5").exit_code == 0
    result = run("config", "--json", env={"MOONSHOT_BASE_URL": "http://127.0.0.1:9/v1"})
    data = json.loads(result.output)
    assert data["api_key"] == {"value": "sk-...abcd", "source": "config file"}
    assert data["model"] == {"value": "kimi-k2.5", "source": "config file"}
    assert data["base_url"] == {"value": "http://127.0.0.1:9/v1", "source": "env MOONSHOT_BASE_URL"}
    env_key = "sk-fromtheenvironment-9999wxyz"
    data = json.loads(run("config", "--json", env={"MOONSHOT_API_KEY": env_key}).output)
    assert data["api_key"] == {"value": "sk-...wxyz", "source": "env MOONSHOT_API_KEY"}
    plain = run("config").output
    assert KEY not in plain and "sk-...abcd" in plain


def test_config_file_is_private_and_set_prompts_hidden(run, isolated_home: Path) -> None:
    result = run("config", "set", "api_key", input=KEY + "\n")
    assert result.exit_code == 0
    assert KEY not in result.output
    path = isolated_home / "config.json"
    assert json.loads(path.read_text())["api_key"] == KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run("config", "path").output.strip() == str(path)


def test_unset_and_unknown_names(run) -> None:
    run("config", "set", "model", "kimi-k2.5")
    assert run("config", "unset", "model").exit_code == 0
    assert json.loads(run("config", "--json").output)["model"]["source"] == "default"
    bad = run("config", "set", "colour", "blue")
    assert bad.exit_code == 2
    assert "unknown setting 'colour'" in bad.output
    assert "api_key, base_url, model" in bad.output


def test_broken_config_file_is_one_clear_line(run, isolated_home: Path) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "config.json").write_text("{not json")
    result = run("config")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot read ")
    assert "Fix the JSON or delete the file" in result.stderr
    assert "Traceback" not in result.output

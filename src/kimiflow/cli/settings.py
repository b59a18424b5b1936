"""The CLI's effective settings: environment > config file > default, resolved in one place.

The library resolves ``argument > MOONSHOT_API_KEY / MOONSHOT_BASE_URL > default``; the CLI adds
one layer below the environment, an optional ``config.json`` in the user directory, so a key can be
stored once with ``kimiflow config set api_key sk-...``. Command-line flags (``-m``) beat all of them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from kimiflow.cli.home import config_path
from kimiflow.core.catalog import DEFAULT_MODEL
from kimiflow.core.config import DEFAULT_BASE_URL, ENV_API_KEY, ENV_BASE_URL

# setting name -> (environment variable, default)
SETTINGS: dict[str, tuple[str, str | None]] = {
    "api_key": (ENV_API_KEY, None),
    "base_url": (ENV_BASE_URL, DEFAULT_BASE_URL),
    "model": ("KIMIFLOW_MODEL", DEFAULT_MODEL),
}

NO_KEY_HELP = (
    "No API key. Set one with `export MOONSHOT_API_KEY=sk-...` or `kimiflow config set api_key sk-...` "
    "(get a key at https://platform.moonshot.cn/console/api-keys), or try `kimiflow demo`, which needs none."
)


@dataclass(frozen=True)
class Setting:
    """One effective setting and where it came from (``env``, ``config file`` or ``default``)."""

    name: str
    value: str | None
    source: str


def read_config_file() -> dict[str, str]:
    """The config file's settings; ``{}`` when there is none. A broken file is a clear error."""
    from kimiflow.core.errors import ConfigError

    path = config_path()
    if not path.exists():
        return {}
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}. Fix the JSON or delete the file.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object like {{\"model\": \"kimi-k2.5\"}}.")
    return {str(k): str(v) for k, v in data.items() if v is not None}


def write_config_file(values: dict[str, str]) -> None:
    """Replace the config file; readable by the owner only because it may hold the key."""
    path = config_path()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)


def check_setting_name(name: str) -> None:
    """Raise a clear ``click.BadParameter`` for a name that is not a setting."""
    if name not in SETTINGS:
        import click

        raise click.BadParameter(f"unknown setting {name!r}; choose one of: {', '.join(SETTINGS)}.")


def effective_settings() -> dict[str, Setting]:
    """Every setting with its value and source.

    >>> effective_settings()["base_url"].value
    'https://api.moonshot.cn/v1'
    """
    file_values = read_config_file()
    result: dict[str, Setting] = {}
    for name, (env_name, default) in SETTINGS.items():
        env_value = os.environ.get(env_name)
        if env_value:
            result[name] = Setting(name, env_value, f"env {env_name}")
        elif file_values.get(name):
            result[name] = Setting(name, file_values[name], "config file")
        else:
            result[name] = Setting(name, default, "default")
    return result


def resolve(name: str) -> str | None:
    """The effective value of one setting."""
    return effective_settings()[name].value


def require_api_key() -> str:
    """The effective API key, or a ``ConfigError`` that says how to set one."""
    from kimiflow.core.errors import ConfigError

    key = resolve("api_key")
    if not key:
        raise ConfigError(NO_KEY_HELP)
    return key

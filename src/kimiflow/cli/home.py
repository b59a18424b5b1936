"""The user directory where the CLI keeps its config file, chat log and prompt history.

``KIMIFLOW_HOME`` overrides the location (tests point it at a temporary directory); otherwise it is
the platform's user data directory (``~/.local/share/kimiflow`` on Linux).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "KIMIFLOW_HOME"


def user_dir() -> Path:
    """The kimiflow user directory, created on first use (0700: it holds the key and the chat log).

    >>> user_dir() / "logs.db"
    PosixPath('/home/me/.local/share/kimiflow/logs.db')
    """
    override = os.environ.get(HOME_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        # Imported here: platformdirs is only needed when no override is set.
        import platformdirs

        path = Path(platformdirs.user_data_dir("kimiflow", appauthor=False))
    # Only the directory kimiflow creates is made private; an existing one keeps the owner's choice.
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def logs_path() -> Path:
    """The SQLite chat log."""
    return user_dir() / "logs.db"


def config_path() -> Path:
    """The optional JSON config file (``kimiflow config set`` writes it)."""
    return user_dir() / "config.json"


def history_path() -> Path:
    """The interactive chat's line-editing history."""
    return user_dir() / "chat_history"

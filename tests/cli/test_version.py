"""The version is written once (``kimiflow/_version.py``) and every place that shows it agrees."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import kimiflow
from kimiflow._version import __version__
from kimiflow.core.requests import USER_AGENT

ROOT = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project's own venv is 3.11
    tomllib = None


def test_package_user_agent_and_cli_show_the_one_version(run) -> None:
    assert kimiflow.__version__ == __version__
    assert USER_AGENT.split("/") == ["kimiflow", __version__]
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"kimiflow, version {__version__}"


def test_pyproject_reads_the_version_from_the_version_file() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if tomllib is not None:
        data = tomllib.loads(text)
        assert "version" not in data["project"]
        assert "version" in data["project"]["dynamic"]
        assert data["tool"]["hatch"]["version"]["path"] == "src/kimiflow/_version.py"
    else:
        assert 'path = "src/kimiflow/_version.py"' in text


def test_no_other_file_in_the_package_spells_the_version() -> None:
    """A second literal copy is how versions drift apart."""
    literal = re.compile(re.escape(f'"{__version__}"') + "|" + re.escape(f"/{__version__}"))
    copies = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src" / "kimiflow").rglob("*.py")
        if path.name != "_version.py" and literal.search(path.read_text(encoding="utf-8"))
    ]
    assert copies == []

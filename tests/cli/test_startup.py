"""``kimiflow --help`` and ``kimiflow <command> --help`` stay fast: no heavy import happens for help.

Timing itself is measured by bench/bench_cli.py (wall-clock figures are too noisy for a test on a
shared 2-core machine); this pins the cause of slow start-up instead.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("rich", "prompt_toolkit", "sqlite3", "platformdirs", "httpx", "aiohttp", "kimiflow.sim", "kimiflow.batch")

PROBE = """
import sys
from kimiflow.cli.main import cli
try:
    cli(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print(",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [
    ["--help"], ["chat", "--help"], ["logs", "--help"], ["config", "--help"], ["demo", "--help"],
    ["models", "--help"], ["files", "--help"],
])
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert result.stderr.strip().splitlines()[-1:] in ([], [""]), f"imported for help: {result.stderr}"

"""A user's own test suite, pinned with scripted answers, passes against `kimiflow sim --answers` (a subprocess)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.sim.test_cli import _read_banner, _start

SUITE = Path(__file__).parent / "user_suite"


def test_users_suite_passes_with_both_clients(tmp_path: Path) -> None:
    project = tmp_path / "support-bot"
    project.mkdir()
    for name in ("test_support_bot.py", "answers.jsonl"):
        shutil.copy(SUITE / name, project / name)
    proc = _start("--port", "0", "--seed", "11", "--answers", str(project / "answers.jsonl"))
    try:
        base_url, key, banner = _read_banner(proc)
        assert any("Scripted answers: 6 from" in line for line in banner), banner
        env = {**os.environ, "MOONSHOT_BASE_URL": base_url, "MOONSHOT_API_KEY": key}
        env.pop("PYTEST_ADDOPTS", None)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_support_bot.py"],
            cwd=project, env=env, capture_output=True, text=True, timeout=180,
        )
    finally:
        proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "14 passed" in result.stdout, result.stdout


def test_sim_refuses_a_bad_answers_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"match": "x", "replay": "y"}\n', encoding="utf-8")
    proc = _start("--port", "0", "--answers", str(path))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"{path} line 1: unknown key 'replay'" in err
    assert "Traceback" not in err

"""``kimiflow sim`` as a real subprocess: serves, answers, stops on Ctrl-C; bad input is one clear line."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from kimiflow.sim import parse_fault_rates

_RUN = [sys.executable, "-c", "from kimiflow.cli.main import main; main()", "sim"]


def _start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [*_RUN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _read_banner(proc: subprocess.Popen[str], timeout: float = 20.0) -> tuple[str, str, list[str]]:
    """Base URL, key and every banner line (read up to the MOONSHOT_API_KEY export)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    base_url = key = None
    lines: list[str] = []
    while time.monotonic() < deadline and not (lines and lines[-1].startswith("  export MOONSHOT_API_KEY")):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.search(r"listening on (http://\S+/v1)", line):
            base_url = m.group(1)
        if m := re.match(r"API key: (\S+)", line):
            key = m.group(1)
    assert base_url and key, lines
    return base_url, key, lines


Served = tuple[subprocess.Popen[str], str, str, list[str]]


@pytest.fixture
def served() -> Iterator[Served]:
    proc = _start("--port", "0", "--seed", "4", "--keys", "sk-sim-cli-1,sk-sim-cli-2", "--tier", "3")
    try:
        base_url, key, banner = _read_banner(proc)
        yield proc, base_url, key, banner
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_cli_serves_and_stops_on_sigint(served: Served) -> None:
    proc, base_url, key, _ = served
    assert key == "sk-sim-cli-1"
    reply = httpx.post(
        base_url + "/chat/completions",
        json={"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer sk-sim-cli-2"},
        timeout=10,
    )
    assert reply.status_code == 200
    assert reply.headers["Msh-Gid"] == "enterprise-tier-3"
    assert reply.json()["choices"][0]["message"]["content"]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert "stopped" in err


def test_cli_banner_tells_how_to_point_a_client(served: Served) -> None:
    _, base_url, key, banner = served
    assert f"  export MOONSHOT_BASE_URL={base_url}\n" in banner
    assert f"  export MOONSHOT_API_KEY={key}\n" in banner


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([*_RUN, "--port", str(port)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: port {port} on 127.0.0.1 is already in use; pick another with --port"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tier", "9"], "Invalid value for '--tier'"),
        (["--latency", "slow"], "Invalid value for '--latency'"),
        (["--fault-rate", "explode=0.1"], "unknown fault 'explode'"),
        (["--fault-rate", "500=0.7,503=0.6"], "their sum must be at most 1"),
        (["--fault-rate", "500"], "needs the form NAME=RATE"),
        (["--port", "-1"], "Invalid value for '--port'"),
        (["--keys", ","], "give at least one key"),
    ],
)
def test_bad_flags_are_one_clear_error(args: list[str], message: str) -> None:
    result = subprocess.run([*_RUN, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_parse_fault_rates() -> None:
    assert parse_fault_rates("500=0.05, reset=0.02") == {"500": 0.05, "reset": 0.02}
    with pytest.raises(ValueError, match="must be a number"):
        parse_fault_rates("500=lots")

"""A ``kimiflow sim`` process under pexpect, for the CLI tests that drive the real command in a terminal."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect

KIMIFLOW = str(Path(sys.executable).with_name("kimiflow"))


@contextlib.contextmanager
def sim_process(*args: str) -> Iterator[tuple[str, str]]:
    """``kimiflow sim --port 0 ARGS``: yields its base URL and API key; Ctrl-C stops it at the end."""
    server = pexpect.spawn(KIMIFLOW, ["sim", "--port", "0", *args], encoding="utf-8", timeout=15,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        server.expect(r"listening on (http://127\.0\.0\.1:\d+/v1)")
        base_url = server.match.group(1)
        server.expect(r"API key: (\S+)")
        yield base_url, server.match.group(1)
    finally:
        server.sendintr()
        server.expect(pexpect.EOF, timeout=10)
        server.close()

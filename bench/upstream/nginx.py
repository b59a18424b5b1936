"""Start and stop the benchmark's nginx upstream (canned files, own temp dir, pinned to one CPU).

>>> with NginxUpstream(chunks=20_000, cpu=1) as upstream:
...     print(upstream.json_base_url, upstream.stream_base_url)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from upstream.canned import write_files

TEMPLATE = Path(__file__).with_name("nginx.conf.template")
INSTALL_HINT = "apt-get install -y nginx   (Debian/Ubuntu; run as root or with sudo)"


def find_nginx() -> str | None:
    """The nginx binary on PATH or in /usr/sbin, else None."""
    found = shutil.which("nginx")
    if found:
        return found
    candidate = Path("/usr/sbin/nginx")
    return str(candidate) if candidate.exists() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render_config(directory: Path, port: int) -> str:
    """The nginx config text for a run dir and port."""
    return TEMPLATE.read_text(encoding="utf-8").replace("@DIR@", str(directory)).replace("@PORT@", str(port))


class NginxUpstream:
    """nginx serving the canned Kimi answers on 127.0.0.1, stopped (and its dir removed) on exit."""

    def __init__(self, *, chunks: int, cpu: int | None, start_timeout: float = 10.0) -> None:
        binary = find_nginx()
        if binary is None:
            raise RuntimeError(f"nginx is not installed; the benchmark needs it as its upstream. Install it with:\n"
                               f"    {INSTALL_HINT}")
        self._binary = binary
        self._chunks = chunks
        self._cpu = cpu
        self._start_timeout = start_timeout
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def json_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def stream_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream/v1"

    def __enter__(self) -> NginxUpstream:
        self._dir = Path(tempfile.mkdtemp(prefix="kimiflow-bench-nginx-"))
        # Readable by nginx's unprivileged worker user (mkdtemp makes the dir private to us).
        self._dir.chmod(0o755)
        (self._dir / "tmp").mkdir()
        write_files(self._dir, self._chunks)
        self.port = free_port()
        conf = self._dir / "nginx.conf"
        conf.write_text(render_config(self._dir, self.port), encoding="utf-8")
        cpu = self._cpu

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        self._process = subprocess.Popen(
            [self._binary, "-p", str(self._dir), "-e", str(self._dir / "error.log"), "-c", str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pin,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"nginx exited at start-up (code {self._process.returncode}): {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self._stop()
        raise RuntimeError(f"nginx did not start listening on 127.0.0.1:{self.port} within {self._start_timeout} s")

    def _stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # nginx fast shutdown; the master stops its worker
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process is not None and process.stderr:
            process.stderr.close()
        self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

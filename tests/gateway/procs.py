"""Real ``kimiflow gateway serve`` and ``kimiflow batch`` processes for the scale-out tests.

``GatewayCluster`` runs N gateway processes on one PostgreSQL database, each with a KIMIFLOW_HOME of
its own (as on separate machines: nothing copied between them; the key secret is in the database),
in front of one upstream. Each process's stdout is drained by a thread (the "serving on" line is its URL) and its
stderr (the access log, warnings) goes to a file, so no unread pipe ever blocks a server.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kimiflow.gateway.manage import create_key, limits_from
from kimiflow.gateway.store import open_store, state_path

KIMIFLOW = str(Path(sys.executable).with_name("kimiflow"))
START_TIMEOUT = 30.0


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any MOONSHOT_* / KIMIFLOW_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONSHOT_", "KIMIFLOW_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Process:
    """One kimiflow subprocess: stdout lines in a queue (read by a thread), stderr in ``log``."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        with log.open("w") as err:
            self.proc = subprocess.Popen([KIMIFLOW, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, env=env, text=True)
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def expect(self, text: str, timeout: float = START_TIMEOUT) -> str:
        """The first stdout line (from now on) containing ``text``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no line with {text!r} in {timeout} s; stderr:\n{self.stderr()}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"{self.name} exited ({self.proc.wait()}) before printing {text!r}; "
                                     f"stderr:\n{self.stderr()}")
            if text in line:
                return line

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> int:
        """``kill -9``: the process gets no chance to release anything."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        return self._reap(10.0)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """``sig`` (default SIGTERM), then SIGKILL if it has not exited within ``timeout`` seconds."""
        if self.alive:
            self.proc.send_signal(sig)
        try:
            return self._reap(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self._reap(10.0)

    def _reap(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


class GatewayProcess(Process):
    """``kimiflow gateway serve --port 0 ...``; ``url`` once it prints its "serving on" line."""

    url = ""

    def wait_serving(self, timeout: float = START_TIMEOUT) -> str:
        line = self.expect("serving on http://127.0.0.1:", timeout)
        self.url = line.split("serving on ", 1)[1].split()[0]
        return self.url

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


class GatewayCluster:
    """Gateway processes sharing one store (``db``, a PostgreSQL URL) in front of one upstream.

    >>> cluster = GatewayCluster(tmp_path, db, sim.base_url, sim.api_key, ADMIN_TOKEN)
    >>> key = cluster.create_key("crm", rpm=100)
    >>> a, b, c = cluster.start(3, "--tier", "1", "--redis", redis_url)
    >>> cluster.close()   # every process killed and reaped
    """

    def __init__(self, root: Path, db: str, upstream_url: str, upstream_key: str, admin_token: str) -> None:
        self.root = root
        self.db = db
        self.upstream_url = upstream_url
        self.upstream_key = upstream_key
        self.admin_token = admin_token
        self.processes: list[Process] = []
        self._homes = 0

    def _home(self, name: str) -> Path:
        home = self.root / f"home-{name}"
        home.mkdir(parents=True, exist_ok=True)
        return home

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        return clean_env(KIMIFLOW_HOME=str(home), KIMIFLOW_ADMIN_TOKEN=self.admin_token,
                         MOONSHOT_API_KEY=self.upstream_key, MOONSHOT_BASE_URL=self.upstream_url, **extra)

    def create_key(self, name: str, **limits: Any) -> str:
        """A new virtual key in the shared store (hashed with the store's secret); returns the key."""
        store = open_store(self.db)
        try:
            key, _ = create_key(store, state_path(self.db, self._home("keys")), name, limits_from(limits), actor="test")
        finally:
            store.close()
        return key

    def start(self, count: int, *args: str, env: dict[str, str] | None = None) -> list[GatewayProcess]:
        """``count`` gateways started at once (``--port 0 --db DB ARGS``), returned once each serves."""
        started = []
        for _ in range(count):
            self._homes += 1
            name = f"gw{self._homes}"
            home = self._home(name)
            started.append(GatewayProcess(name, ["gateway", "serve", "--port", "0", "--db", self.db, *args],
                                          {**self.env(home), **(env or {})}, self.root / f"{name}.stderr.log"))
        self.processes.extend(started)
        for gateway in started:
            gateway.wait_serving()
        return started

    def run(self, name: str, args: Sequence[str], **extra: str) -> Process:
        """Any other kimiflow command (e.g. ``batch``) on the same upstream, cleaned up with the cluster."""
        process = Process(name, args, self.env(self._home(name), **extra), self.root / f"{name}.stderr.log")
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            process.kill()
        self.processes.clear()

"""A real ``kimiflow gateway serve`` process: start-up checks, SIGTERM, and ``kill -9`` under load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kimiflow.gateway import REQUEST_ID_HEADER
from kimiflow.sim import FAULT_HEADER, LatencyModel, Simulator
from tests.gateway.conftest import ADMIN_TOKEN, UPSTREAM_KEY, StoreBackend

KIMIFLOW = [str(Path(sys.executable).parent / "kimiflow")]
BODY: dict[str, Any] = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 40}


def _env(sim: Simulator | None, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONSHOT_", "KIMIFLOW_"))}
    env.update(KIMIFLOW_HOME=str(tmp_path / "home"), KIMIFLOW_ADMIN_TOKEN=ADMIN_TOKEN, MOONSHOT_API_KEY=UPSTREAM_KEY)
    if sim is not None:
        env["MOONSHOT_BASE_URL"] = sim.base_url
    env.update(extra)
    return env


class Served:
    def __init__(self, env: dict[str, str], db: str, logs: Path, *args: str) -> None:
        # stderr (the access log) goes to a file: an unread pipe would fill up and block the server.
        self.log = logs / f"serve.{time.monotonic_ns()}.log"
        with self.log.open("w") as err:
            self.proc = subprocess.Popen([*KIMIFLOW, "gateway", "serve", "--port", "0", "--db", db, *args],
                                         stdout=subprocess.PIPE, stderr=err, env=env, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "serving on http://127.0.0.1:" in line, (line, self.log.read_text())
        self.url = line.split("serving on ", 1)[1].split()[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def _create_key(env: dict[str, str], db: str, name: str) -> str:
    out = subprocess.run([*KIMIFLOW, "gateway", "keys", "create", name, "--db", db, "--json"],
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    created = json.loads(out.stdout)
    assert set(created) == {"key", "id", "name", "limits"}
    key: str = created["key"]
    return key


@pytest.mark.parametrize(("extra", "message"), [
    ({"KIMIFLOW_ADMIN_TOKEN": "short"}, "at least 16 characters"),
    ({"MOONSHOT_API_KEY": ""}, "MOONSHOT_API_KEY"),
])
def test_serve_refuses_to_start_with_one_clear_line(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    result = subprocess.run([*KIMIFLOW, "gateway", "serve", "--port", "0", "--db", str(tmp_path / "g.sqlite")],
                            env=_env(None, tmp_path, **extra), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_lets_a_stream_in_flight_finish(tmp_path: Path, sim_factory: Callable[..., Simulator],
        store_backend: StoreBackend) -> None:
    sim = sim_factory(seed=3)
    env, db = _env(sim, tmp_path), store_backend.url("g")
    key = _create_key(env, db, "crm")
    served = Served(env, db, tmp_path, "--grace", "5")

    async def run() -> bytes:
        async with aiohttp.ClientSession() as http:
            async with http.post(served.url + "/v1/chat/completions", json={**BODY, "stream": True, "max_tokens": 30},
                                 headers={"Authorization": f"Bearer {key}", FAULT_HEADER: "trickle;interval=0.04"}) as r:
                first = await r.content.readany()
                served.proc.send_signal(signal.SIGTERM)
                return first + await r.read()

    body = asyncio.run(run())
    assert body.endswith(b"data: [DONE]\n\n")
    assert served.stop(timeout=10) == 0
    store = store_backend.open(db)
    rows = store.ledger_rows()
    store.close()
    assert [(r.status, r.ended) for r in rows] == [(200, "ok")]


def test_kill_9_under_load_loses_no_answered_row(tmp_path: Path, sim_factory: Callable[..., Simulator],
        store_backend: StoreBackend) -> None:
    """200 concurrent callers; kill -9; restart: every answer a caller received has exactly one row.

    A quarter of the callers get the upstream's quota error (never retried, passed through): an error
    answer the caller received is an answer too, and must have its row as surely as a 200's.
    """
    sim = sim_factory(seed=5, latency=LatencyModel(ttft_s=0.02, tokens_per_second=400))
    env, db = _env(sim, tmp_path), store_backend.url("g")
    key = _create_key(env, db, "load")
    served = Served(env, db, tmp_path)
    answered: list[str] = []
    errored: list[str] = []

    async def caller(http: aiohttp.ClientSession, n: int, deadline: float) -> None:
        stream = n % 2 == 0
        headers = {"Authorization": f"Bearer {key}"}
        if n % 4 == 1:
            headers[FAULT_HEADER] = "quota"
        while time.monotonic() < deadline:
            try:
                async with http.post(served.url + "/v1/chat/completions", json={**BODY, "stream": stream},
                                     headers=headers) as r:
                    body = await r.read()
                    complete = body.endswith(b"data: [DONE]\n\n") if stream else b'"usage"' in body
                    if r.status == 200 and complete:
                        answered.append(r.headers[REQUEST_ID_HEADER])
                    elif r.status != 200 and b"exceeded_current_quota_error" in body:
                        errored.append(r.headers[REQUEST_ID_HEADER])
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return  # the gateway is gone

    async def load() -> None:
        deadline = time.monotonic() + 20
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
            tasks = [asyncio.create_task(caller(http, n, deadline)) for n in range(200)]
            for _ in range(400):  # until a good number of answers are in, at most 20 s
                if len(answered) >= 300:
                    break
                await asyncio.sleep(0.05)
            os.kill(served.proc.pid, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

    asyncio.run(load())
    assert served.stop(timeout=10) == -signal.SIGKILL
    assert len(answered) >= 50, "the load did not get going"
    restarted = Served(env, db, tmp_path)
    assert restarted.stop() == 0
    store = store_backend.open(db)
    rows = store.ledger_rows()
    store.close()
    ids = [r.request_id for r in rows]
    assert len(ids) == len(set(ids))
    assert "status=200 ended=ok" in restarted.log.read_text() or "status=200 ended=ok" in served.log.read_text()
    missing = set(answered) - set(ids)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no ledger row"
    assert len(errored) >= 10, "the quota callers did not get going"
    missing_errors = set(errored) - set(ids)
    assert not missing_errors, f"{len(missing_errors)} of {len(errored)} error answers have no ledger row"

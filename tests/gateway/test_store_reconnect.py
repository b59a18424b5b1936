"""A gateway on PostgreSQL recovers by itself when its connections drop: backends terminated by
``pg_terminate_backend`` under load, and a real restart of a PostgreSQL server (same data directory,
same socket). Requests keep being answered meanwhile (keys are in memory), every answered request's
row reaches the ledger exactly once (rows wait in the journal until committed), and a key created
after the drop is picked up within a second."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import psycopg
import pytest

from kimiflow.gateway import REQUEST_ID_HEADER, GatewaySettings, UpstreamConfig
from kimiflow.gateway.manage import create_key, limits_from
from kimiflow.gateway.stores.postgres import PostgresStore
from kimiflow.sim import LatencyModel, Simulator
from tests.gateway.conftest import ADMIN_TOKEN, RunningGateway, start_gateway
from tests.postgres_server import start_embedded_postgres, with_database

BODY: dict[str, Any] = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 20}
CALLERS = 16


class Load:
    """Callers sending chat requests to one gateway until stopped (at most 30 s); every answer is counted."""

    def __init__(self, gw: RunningGateway, key: str) -> None:
        self.gw, self.key = gw, key
        self.answered: list[str] = []
        self.other: list[int] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        self._tasks = [asyncio.create_task(self._caller(n)) for n in range(CALLERS)]
        return self

    async def _caller(self, n: int) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - started < 30:
            async with self._http.post(self.gw.base_url + "/chat/completions", json={**BODY, "stream": n % 2 == 0},
                                       headers={"Authorization": f"Bearer {self.key}"}) as r:
                body = await r.read()
                if r.status == 200 and (body.endswith(b"data: [DONE]\n\n") or b'"usage"' in body):
                    self.answered.append(r.headers[REQUEST_ID_HEADER])
                else:
                    self.other.append(r.status)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 20)
        await self._http.close()


async def _picked_up_within(gw: RunningGateway, key: str) -> float:
    """Seconds until ``key`` (just created elsewhere) is accepted by ``gw``; fails after a second."""
    created = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.post(gw.base_url + "/chat/completions", json=BODY,
                                 headers={"Authorization": f"Bearer {key}"}) as r:
                await r.read()
                waited = time.monotonic() - created
                if r.status == 200:
                    return waited
                assert r.status == 401 and waited < 1.0, f"the new key was not picked up in 1 s ({r.status})"
            await asyncio.sleep(0.05)


def _exactly_once(gw: RunningGateway, answered: list[str], url: str) -> None:
    gw.flush()
    with psycopg.connect(url) as db:  # read by a connection of its own, not the gateway's
        ids = [r[0] for r in db.execute("SELECT request_id FROM ledger").fetchall()]
        requests = db.execute("SELECT COALESCE(SUM(requests), 0) FROM rollups").fetchone()
    assert len(ids) == len(set(ids)), "a row was written twice"
    missing = set(answered) - set(ids)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no ledger row"
    assert requests is not None and int(requests[0]) == len(ids), "the rollups counted a row twice or not at all"


@pytest.fixture
def gateway_on(sim_factory: Callable[..., Simulator], tmp_path: Path) -> Iterator[Callable[[str], RunningGateway]]:
    """Gateways on a database URL. Tests ask for their database first, so the gateways stop before it goes."""
    sim = sim_factory(seed=13, latency=LatencyModel(ttft_s=0.02, tokens_per_second=400))
    stops: list[Callable[[], None]] = []

    def make(url: str) -> RunningGateway:
        settings = GatewaySettings(UpstreamConfig(sim.base_url, sim.api_key), ADMIN_TOKEN, tmp_path / "gw" / "gw.db")
        running, stop = start_gateway(settings, PostgresStore(url))
        stops.append(stop)
        return running

    yield make
    for stop in reversed(stops):
        stop()


def _key_from_elsewhere(url: str, tmp_path: Path) -> str:
    """A key created in the database by another process (the CLI, say, on a machine of its own)."""
    other = PostgresStore(url)
    try:
        late, _ = create_key(other, tmp_path / "cli" / "gw.db", "late", limits_from({}), actor="cli")
    finally:
        other.close()
    return late


def _terminate(url: str) -> int:
    """End every backend of the database ``url`` names but this one's; returns how many."""
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
    return sum(1 for (done,) in rows if done)


def test_terminated_backends_under_load(postgres_db: str, gateway_on: Callable[[str], RunningGateway],
                                        tmp_path: Path) -> None:
    gw = gateway_on(postgres_db)
    key = gw.create_key("load")
    terminated: list[int] = []

    async def scenario() -> tuple[list[str], list[int], float]:
        async with Load(gw, key) as load:
            for _ in range(8):  # a drop every 0.25 s for 2 s, under load
                await asyncio.sleep(0.25)
                terminated.append(await asyncio.to_thread(_terminate, postgres_db))
            terminated.append(await asyncio.to_thread(_terminate, postgres_db))
            waited = await _picked_up_within(gw, _key_from_elsewhere(postgres_db, tmp_path))
            await asyncio.sleep(0.2)
        return load.answered, load.other, waited

    answered, other, waited = asyncio.run(scenario())
    assert sum(terminated) >= 6, terminated  # most rounds ended a backend of the gateway (it had reconnected)
    assert other == [] and len(answered) >= 100, (len(answered), other[:5])
    assert waited < 1.0
    store = gw.gw.store
    assert isinstance(store, PostgresStore) and store.reconnects >= len(terminated) // 2
    _exactly_once(gw, answered, postgres_db)


def test_key_changes_and_reads_after_an_idle_connection_was_dropped(postgres_db: str, tmp_path: Path) -> None:
    """The server dropped the store's idle connection: the next call of each kind works, and a key change
    is made once (it failed before its commit was sent, so it is tried again on a new connection)."""
    store = PostgresStore(postgres_db)
    steps: list[Callable[[], Any]] = [
        lambda: create_key(store, tmp_path / "gw.db", "crm", limits_from({"rpm": 5}), actor="cli"),
        lambda: store.update_key("crm", limits_from({"rpm": 9}), actor="cli"),
        lambda: store.revoke_key("crm", actor="cli"),
        lambda: store.add_file("file-1", "key_x"),
        store.keys_version,
        store.list_keys,
        lambda: store.usage(by="key"),
        lambda: store.spend_since("key_x", ""),
        lambda: store.file_owner("file-1"),
    ]
    for step in steps:
        assert _terminate(postgres_db) == 1
        step()
    assert store.reconnects == len(steps)
    assert [e["action"] for e in store.audit_log()] == ["keys.create", "keys.update", "keys.revoke"]
    assert store.keys_version() == 3 and store.file_owner("file-1") == "key_x"
    record = store.get_key("crm")
    assert record is not None and record.limits.rpm == 9 and record.revoked is not None
    store.close()


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    """A PostgreSQL server of this test's own (embedded-postgres), so it can be stopped and started again."""
    server, directory = start_embedded_postgres("kimiflow-pg-restart-")
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute('CREATE DATABASE "gw"')
    yield server
    _pg_ctl(server, "-m", "immediate", "stop", check=False)
    server.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


def _pg_ctl(server: Any, *args: str, check: bool = True) -> None:
    from embedded_postgres._commands import pg_ctl

    try:
        pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user, timeout=30)
    except Exception:
        if check:
            raise


def _start(server: Any) -> None:
    """Start the stopped server again as embedded-postgres did: same data directory, same socket, no TCP."""
    socket_dir = parse_qs(urlsplit(server.get_uri()).query)["host"][0]
    _pg_ctl(server, "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start")


def test_a_server_restart_under_load(own_postgres: Any, gateway_on: Callable[[str], RunningGateway],
                                     tmp_path: Path) -> None:
    url = with_database(own_postgres.get_uri(), "gw")
    gw = gateway_on(url)
    key = gw.create_key("load")
    phases: dict[str, int] = {}

    async def scenario() -> tuple[list[str], list[int], float]:
        async with Load(gw, key) as load:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(_pg_ctl, own_postgres, "-m", "fast", "stop")
            phases["stopped"] = len(load.answered)
            await asyncio.sleep(1.5)  # no server at all: requests are still answered
            phases["restarting"] = len(load.answered)
            await asyncio.to_thread(_start, own_postgres)
            waited = await _picked_up_within(gw, _key_from_elsewhere(url, tmp_path))
            await asyncio.sleep(0.3)
        return load.answered, load.other, waited

    answered, other, waited = asyncio.run(scenario())
    assert other == [], other[:5]
    assert phases["restarting"] - phases["stopped"] >= 20, phases  # answered while the server was down
    assert waited < 1.0
    assert gw.gw.ledger is not None and gw.gw.ledger.failed_commits >= 1  # the writer did hit the outage, and lived
    _exactly_once(gw, answered, url)

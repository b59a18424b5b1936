"""Fixtures: a simulator and a gateway in front of it, each on its own loop thread, over loopback.

Every test that builds a gateway (``gateway``, ``gateway_factory``) or asks for ``store_backend``
runs twice: once on a SQLite file and once on a fresh database of a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kimiflow.gateway import Gateway, GatewaySettings, UpstreamConfig, serve
from kimiflow.gateway.manage import create_key, limits_from
from kimiflow.gateway.store import GatewayStore, open_store
from kimiflow.sim import SimConfig, Simulator, run_in_thread

T = TypeVar("T")

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
UPSTREAM_KEY = "sk-UPSTREAM-SECRET-do-not-leak-7f3a9c"


class RunningGateway:
    """A gateway serving on 127.0.0.1 from a background thread, for sync and async test code."""

    def __init__(self, gw: Gateway, loop: asyncio.AbstractEventLoop, url: str) -> None:
        self.gw = gw
        self.loop = loop
        self.url = url
        self.base_url = url + "/v1"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def create_key(self, name: str, **limits: Any) -> str:
        key, _ = create_key(self.gw.store, self.gw.settings.db_path, name, limits_from(limits), actor="test")
        self.run(self.gw.reload_keys(force=True))
        return key

    def record(self, name: str) -> Any:
        record = self.gw.store.get_key(name)
        assert record is not None
        return record

    def flush(self) -> None:
        """Wait until every queued ledger row is committed."""

        async def drained() -> None:
            assert self.gw.ledger is not None
            for _ in range(500):
                if self.gw.ledger.pending == 0:
                    await asyncio.sleep(0.02)
                    if self.gw.ledger.pending == 0:
                        return
                await asyncio.sleep(0.01)

        self.run(drained())


class StoreBackend:
    """Where a test's gateway keeps its data: ``url()`` names a new database (a file or a PostgreSQL DB)."""

    def __init__(self, name: str, directory: Path, postgres_url: str | None) -> None:
        self.name = name
        self.directory = directory
        self.postgres_url = postgres_url
        self._databases: list[str] = []

    def url(self, stem: str = "gateway") -> str:
        if self.postgres_url is None:
            return str(self.directory / f"{stem}.sqlite")
        from tests.postgres_server import fresh_database

        url, name = fresh_database(self.postgres_url)
        self._databases.append(name)
        return url

    def open(self, url: str) -> GatewayStore:
        return open_store(url)

    @staticmethod
    def contents(store: GatewayStore) -> bytes:
        """Every row of a PostgreSQL store's tables as text (a SQLite store is read from its files: b"")."""
        from kimiflow.gateway.stores.postgres import PostgresStore

        if not isinstance(store, PostgresStore):
            store._db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[attr-defined]
            return b""
        with store._lock:
            tables = [r[0] for r in store._db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
            assert "keys" in tables and "audit" in tables
            rows = [r[0] for t in tables for r in store._db.execute(f'SELECT t::text FROM "{t}" t').fetchall()]
        return "\n".join(rows).encode()

    def drop_all(self) -> None:
        if self.postgres_url is not None:
            from tests.postgres_server import drop_database

            for name in self._databases:
                drop_database(self.postgres_url, name)


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    postgres_url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    backend = StoreBackend(request.param, tmp_path, postgres_url)
    yield backend
    backend.drop_all()


def start_gateway(settings: GatewaySettings, store: GatewayStore | None = None) -> tuple[RunningGateway, Callable[[], None]]:
    loop = asyncio.new_event_loop()
    gw = Gateway(settings, store)
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run_server() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["url"] = loop.run_until_complete(serve(gw, "127.0.0.1", 0))
        except BaseException as exc:
            box["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(gw.stop())
        loop.close()

    thread = threading.Thread(target=run_server, name="kimiflow-gateway", daemon=True)
    thread.start()
    assert ready.wait(15), "the gateway did not start"
    if "error" in box:
        raise box["error"]
    running = RunningGateway(gw, loop, box["url"])

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)

    return running, stop


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., Simulator]]:
    stack: list[Any] = []

    def make(**config: Any) -> Simulator:
        config.setdefault("keys", (UPSTREAM_KEY,))
        config.setdefault("balance", 1_000_000.0)
        manager = run_in_thread(SimConfig(**config))
        sim = manager.__enter__()
        stack.append(manager)
        return sim

    yield make
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture
def sim(sim_factory: Callable[..., Simulator]) -> Simulator:
    return sim_factory(seed=11)


@pytest.fixture
def gateway_factory(tmp_path: Path, store_backend: StoreBackend) -> Iterator[Callable[..., RunningGateway]]:
    """Build gateways; on the postgres run each gets its own database (the path keeps secret and journal)."""
    stops: list[Callable[[], None]] = []

    def make(sim: Simulator, **options: Any) -> RunningGateway:
        db = options.pop("db_path", tmp_path / f"gateway{len(stops)}.sqlite")
        upstream = UpstreamConfig(sim.base_url, sim.api_key, **options.pop("upstream", {}))
        settings = GatewaySettings(upstream, ADMIN_TOKEN, db, **options)
        store = store_backend.open(store_backend.url()) if store_backend.postgres_url is not None else None
        running, stop = start_gateway(settings, store)
        stops.append(stop)
        return running

    yield make
    for stop in reversed(stops):
        stop()


@pytest.fixture
def gateway(sim: Simulator, gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(sim)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """The pinned Node packages of tests/gateway/node, installed once per session (kept when complete)."""
    from tests.gateway.nodejs import ensure_node_modules

    return ensure_node_modules()

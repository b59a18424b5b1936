"""Fixtures: a simulator and a gateway in front of it, each on its own loop thread, over loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kimiflow.gateway import Gateway, GatewaySettings, UpstreamConfig, serve
from kimiflow.gateway.manage import create_key, limits_from
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


def start_gateway(settings: GatewaySettings) -> tuple[RunningGateway, Callable[[], None]]:
    loop = asyncio.new_event_loop()
    gw = Gateway(settings)
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
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    stops: list[Callable[[], None]] = []

    def make(sim: Simulator, **options: Any) -> RunningGateway:
        db = options.pop("db_path", tmp_path / f"gateway{len(stops)}.sqlite")
        upstream = UpstreamConfig(sim.base_url, sim.api_key, **options.pop("upstream", {}))
        settings = GatewaySettings(upstream, ADMIN_TOKEN, db, **options)
        running, stop = start_gateway(settings)
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

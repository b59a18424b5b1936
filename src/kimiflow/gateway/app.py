"""The gateway server: one aiohttp application in front of one upstream account.

``Gateway`` owns the shared pieces — the store, the key index, the admission books, the ledger
writer, the upstream pool and the metrics — and the routes in ``proxy`` and ``admin`` use them.
Keys changed by another process (the CLI) are picked up by polling the store's ``keys_version``
every ``key_poll_interval`` seconds; changes through ``/admin/`` apply at once.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from kimiflow.core.errors import ConfigError
from kimiflow.core.pricing import cost_cny
from kimiflow.gateway.admission import AdmissionBooks, Books, period_start
from kimiflow.gateway.keys import KeyRecord, hash_key
from kimiflow.gateway.ledger import LedgerWriter, journal_path
from kimiflow.gateway.limits import RateLimits
from kimiflow.gateway.manage import secret_path
from kimiflow.gateway.metrics import GatewayMetrics
from kimiflow.gateway.shared import UNAVAILABLE, SharedBooks
from kimiflow.gateway.store import GatewayStore, LedgerRow, SQLiteStore
from kimiflow.gateway.upstream import Upstream, UpstreamConfig
from kimiflow.limits.redis import LimiterUnavailableError, describe_url

log = logging.getLogger("kimiflow.gateway")
access_log = logging.getLogger("kimiflow.gateway.access")

REQUEST_ID_HEADER = "X-Kimiflow-Request-Id"
MIN_ADMIN_TOKEN = 16


@dataclass(frozen=True)
class GatewaySettings:
    """How one gateway runs. ``tier=None``: no account limits above the keys (Kimi's own still apply)."""

    upstream: UpstreamConfig
    admin_token: str
    db_path: Path
    tier: int | None = None
    key_poll_interval: float = 0.5
    default_max_tokens: int = 1024
    shutdown_grace: float = 10.0
    keepalive_interval: float = 15.0
    """Seconds between SSE comments sent to a caller while the upstream has not sent its first event."""
    redis_url: str | None = None
    """Keep the keys' and the account's books in this Redis, shared by every replica (``--redis``)."""
    redis_unavailable: str = "fail-closed"
    """``fail-closed`` (503 + Retry-After) or ``local-share`` (limits ÷ ``replicas``) while Redis is down."""
    replicas: int = 1
    """The gateway processes expected to share the limits (the divisor of the local share)."""
    priority: str = "interactive"
    """This gateway's class on the account's shared books: near the limit, ``batch`` yields first."""
    lease_seconds: float = 30.0
    """How long a slot held by a replica that stopped renewing it (crashed) stays taken."""
    redis_namespace: str = "kimiflow"
    """The prefix of every Redis key; the default is the one ``kimiflow batch --limits`` shares."""

    def __post_init__(self) -> None:
        if not self.upstream.api_key:
            raise ConfigError("no upstream key: set MOONSHOT_API_KEY to the Kimi key the gateway should use")
        if len(self.admin_token) < MIN_ADMIN_TOKEN:
            raise ConfigError(
                f"KIMIFLOW_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN} characters "
                f"(got {len(self.admin_token)}); generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if self.redis_unavailable not in UNAVAILABLE:
            raise ConfigError(f"redis_unavailable must be one of {', '.join(UNAVAILABLE)}, got {self.redis_unavailable!r}")
        if self.replicas < 1:
            raise ConfigError(f"replicas must be at least 1, got {self.replicas}")
        if self.key_poll_interval <= 0 or self.key_poll_interval > 0.5:
            raise ConfigError("key_poll_interval must be in (0, 0.5] seconds so key changes apply within a second")

    def __repr__(self) -> str:
        shared = "" if self.redis_url is None else f", redis={describe_url(self.redis_url)!r}"
        return f"GatewaySettings(upstream={self.upstream!r}, db_path={str(self.db_path)!r}, tier={self.tier!r}{shared})"


_ID_PREFIX = "gw-" + uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def new_request_id() -> str:
    """Unique across processes (a random per-process prefix) and cheap (a counter, no urandom per call)."""
    return f"{_ID_PREFIX}{next(_id_counter):010x}"


class Gateway:
    """A gateway instance: ``await routes.serve(gateway, host, port)`` serves it, ``await gateway.stop()`` ends it.

    The routes live in their own modules (``proxy``, ``files``, ``admin``, ``page``) and are put
    together by ``kimiflow.gateway.routes``, so this module never imports them.

    >>> gateway = Gateway(settings); url = await serve(gateway, "127.0.0.1", 8787)
    """

    def __init__(self, settings: GatewaySettings, store: GatewayStore | None = None) -> None:
        self.settings = settings
        self.store: GatewayStore = store if store is not None else SQLiteStore(settings.db_path)
        self._secret = self.store.key_secret(secret_path(settings.db_path))  # PostgreSQL: shared by every replica
        self._admin_token = settings.admin_token.encode()
        account = RateLimits.for_tier(settings.tier) if settings.tier is not None else None
        self.books: AdmissionBooks = Books(account) if settings.redis_url is None else self._shared_books(account)
        self.metrics = GatewayMetrics()
        self.upstream = Upstream(settings.upstream, on_retry=lambda reason: self.metrics.upstream_retries.inc())
        self.ledger: LedgerWriter | None = None
        self._by_hash: dict[str, KeyRecord] = {}
        self._keys_version = -1
        self._poller: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.stopping = False
        self.url = ""
        self.page_sessions: Any = None

    def _shared_books(self, account: RateLimits | None) -> SharedBooks:
        from kimiflow.limits.redis import RedisLimiter

        settings = self.settings
        assert settings.redis_url is not None
        # Keyed by the upstream key (hashed), as kimiflow batch --limits keys them: one account, one set of books.
        limiter = RedisLimiter(settings.redis_url, account or RateLimits(), key=settings.upstream.api_key,
                               priority=settings.priority,  # type: ignore[arg-type]
                               lease_seconds=settings.lease_seconds, namespace=settings.redis_namespace)
        return SharedBooks(limiter, account, spend_of=self.store.spend_since,
                           on_unavailable=settings.redis_unavailable, replicas=settings.replicas)

    # -- keys ----------------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> KeyRecord | None:
        """The active key named by an ``Authorization: Bearer ...`` header, else ``None``."""
        if not header or not header.startswith("Bearer "):
            return None
        record = self._by_hash.get(hash_key(self._secret, header[7:].strip()))
        if record is None or not record.active:
            return None
        return record

    def is_admin(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self._admin_token)

    def key_by_id(self, key_id: str) -> KeyRecord | None:
        for record in self._by_hash.values():
            if record.id == key_id:
                return record
        return None

    async def reload_keys(self, *, force: bool = False) -> None:
        """Re-read the keys if their version changed (from any process)."""
        version = await asyncio.to_thread(self.store.keys_version)
        if version == self._keys_version and not force:
            return
        store = self.store

        def read() -> tuple[list[KeyRecord], dict[str, float]]:
            records = store.list_keys()
            wall = time.time()
            spends = {r.id: store.spend_since(r.id, period_start(r.limits.budget_period, wall)) for r in records}
            return records, spends

        records, spends = await asyncio.to_thread(read)
        self.books.load([r for r in records if r.active], lambda key_id, _start: spends.get(key_id, 0.0))
        self._by_hash = {r.key_hash: r for r in records}
        self._keys_version = version
        log.debug("gateway: %d keys loaded (version %d)", len(records), version)

    async def _poll_keys(self) -> None:
        while True:
            await asyncio.sleep(self.settings.key_poll_interval)
            try:
                await self.reload_keys()
            except Exception as exc:  # a locked database for a moment: try again next tick
                log.warning("gateway: reloading keys failed: %s", exc)

    # -- the ledger ----------------------------------------------------------------------------

    def _committed(self, rows: list[LedgerRow]) -> None:
        m = self.metrics
        logging_on = access_log.isEnabledFor(logging.INFO)
        for row in rows:
            if logging_on:
                # One structured line per request, from the billed row: ids and figures, never a key.
                access_log.info(
                    "request_id=%s key_id=%s model=%s status=%d ended=%s prompt=%d completion=%d cost_cny=%.6f "
                    "latency_ms=%.1f ttft_ms=%s upstream_id=%s usage=%s",
                    row.request_id, row.key_id, row.model, row.status, row.ended, row.prompt_tokens,
                    row.completion_tokens, row.cost_cny, row.latency_ms,
                    "-" if row.ttft_ms is None else f"{row.ttft_ms:.1f}", row.upstream_request_id or "-", row.usage_source,
                )
            m.count_row(row.key_id, row.model, row.status, row.ended, row.prompt_tokens, row.completion_tokens,
                        row.cached_tokens, row.cost_cny)

    def price(self, model: str, prompt: int, completion: int, cached: int = 0) -> float:
        return cost_cny(model, prompt, completion, cached)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, app: web.Application, host: str = "127.0.0.1", port: int = 8787) -> str:
        """Serve ``app`` (``kimiflow.gateway.routes.build_app(gateway)``): open the store's keys, the
        upstream pool and the listening socket; returns the URL served. ``routes.serve`` does both."""
        self.ledger = LedgerWriter(self.store, journal_path(self.settings.db_path), on_committed=self._committed)
        await asyncio.to_thread(self.ledger.recover)  # rows a killed process journaled but never committed
        self.ledger.start()
        await self.upstream.start()
        await self.reload_keys(force=True)
        if isinstance(self.books, SharedBooks):
            try:
                await self.books.limiter.ping()
            except LimiterUnavailableError as exc:  # serve anyway: fail closed or the local share, as set
                log.warning("gateway: %s; while it is down the gateway runs %s", exc, self.settings.redis_unavailable)
        self._poller = asyncio.get_running_loop().create_task(self._poll_keys(), name="kimiflow-gateway-keys")
        self._runner = web.AppRunner(app, handler_cancellation=True,
                                     shutdown_timeout=self.settings.shutdown_grace, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (within ``shutdown_grace``), flush the ledger."""
        self.stopping = True
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
            self._poller = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.books.close()  # the settles and releases still on their way to Redis
        if self.ledger is not None:
            await self.ledger.close()
        await self.upstream.close()
        self.store.close()


GatewayHandler = Callable[[Gateway, web.Request], Awaitable[web.StreamResponse]]
"""A route handler of the gateway: it gets the ``Gateway`` it serves besides the request."""


def bind(gw: Gateway, handler: GatewayHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` as an aiohttp route of ``gw``."""

    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(gw, request)

    return route

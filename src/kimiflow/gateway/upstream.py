"""The gateway's one connection pool to the upstream (Kimi), with the core's retry rules.

Retried, before any byte went to the caller and at most ``attempts`` times in total: connection
errors, timeouts waiting for the headers, 429 ``rate_limit_reached_error`` / ``engine_overloaded_error``
and 5xx. Never ``exceeded_current_quota_error``, whatever its status, and never once a response
is being relayed. The upstream key travels only in the ``Authorization`` header of these
requests; it is in no error message (aiohttp's errors name the host, not the headers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import msgspec

from kimiflow.core.retry import RETRYABLE_STATUSES, RetryPolicy, retry_after_from

log = logging.getLogger("kimiflow.gateway.upstream")

MAX_RETRY_WAIT = 5.0
"""An upstream asking for a longer pause is answered to the caller instead of waited for."""


DEFAULT_POLICY = RetryPolicy(max_retries=2, initial_delay=0.2, max_delay=2.0)


class UpstreamUnavailable(Exception):
    """No answer from the upstream after every attempt (connection refused, reset, timeout)."""


@dataclass(frozen=True)
class UpstreamConfig:
    base_url: str
    api_key: str
    attempts: int = 3
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    idle_timeout: float = 120.0

    def __repr__(self) -> str:  # the key never shows up in a repr or a log line
        return f"UpstreamConfig(base_url={self.base_url!r}, api_key='***', attempts={self.attempts})"


def error_type_of(body: bytes) -> tuple[str | None, str | None]:
    """``(type, message)`` of a Moonshot error body, ``(None, None)`` when it is not one."""
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None, None
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict):
        return None, None
    kind, message = err.get("type"), err.get("message")
    return (kind if isinstance(kind, str) else None, message if isinstance(message, str) else None)


class Upstream:
    """Sends requests upstream; ``request`` returns the response whose body the caller relays.

    >>> upstream = Upstream(UpstreamConfig("http://127.0.0.1:9/v1", "sk-...")); await upstream.start()
    """

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        policy: RetryPolicy = DEFAULT_POLICY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self._sleep = sleep
        self._on_retry = on_retry
        self._base = config.base_url.rstrip("/")
        self._auth = f"Bearer {config.api_key}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> aiohttp.ClientResponse:
        """The upstream's response (status and headers read, body not yet unless it was an error retried)."""
        if self._session is None:
            raise RuntimeError("Upstream.start() was not called")
        out_headers = {"Authorization": self._auth, **(headers or {})}
        if body is not None:
            out_headers.setdefault("Content-Type", "application/json")
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.config.connect_timeout,
            sock_read=self.config.idle_timeout if stream else self.config.read_timeout,
        )
        url = self._base + path
        attempts = max(1, self.config.attempts)
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = await self._session.request(method, url, data=body, headers=out_headers, timeout=timeout)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
                reason = type(exc).__name__
                if last:
                    raise UpstreamUnavailable(f"the upstream {self._base} did not answer after {attempt} attempts ({reason})") from None
                await self._retry_pause(reason, self.policy.backoff(attempt))
                continue
            if response.status not in RETRYABLE_STATUSES or last:
                return response
            try:
                raw = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                response.release()
                if last:
                    raise UpstreamUnavailable(f"the upstream {self._base} broke off its error answer") from None
                await self._retry_pause("error body cut", self.policy.backoff(attempt))
                continue
            kind, message = error_type_of(raw)
            if kind == "exceeded_current_quota_error":
                return response
            delay = retry_after_from(message, dict(response.headers))
            if delay is None:
                delay = self.policy.backoff(attempt)
            if delay > MAX_RETRY_WAIT:
                return response
            response.release()
            await self._retry_pause(kind or str(response.status), delay)
        raise AssertionError("unreachable: the last attempt always returns or raises")

    async def _retry_pause(self, reason: str, delay: float) -> None:
        log.debug("upstream attempt failed (%s); retrying in %.2f s", reason, delay)
        if self._on_retry is not None:
            self._on_retry(reason)
        await self._sleep(delay)

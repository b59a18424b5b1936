"""``Kimi`` and ``AsyncKimi``: thin shells over the sans-I/O core and one transport each.

The twins have the same public names and signatures (a test enforces it); they differ only in how
they send, sleep and iterate. Endpoint requests are built by ``core.endpoints``; errors are
classified by ``core.requests``; retry decisions come from ``core.retry``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from kimiflow.batches import AsyncBatches, Batches
from kimiflow.core import endpoints
from kimiflow.core.catalog import DEFAULT_MODEL
from kimiflow.core.config import (
    ClientConfig,
    TimeoutLike,
    Timeouts,
    coerce_timeouts,
    mask_key,
    resolve_config,
)
from kimiflow.core.errors import APIError, ConfigError, EngineOverloadedError, RateLimitError, client_closed_error
from kimiflow.core.options import CallOptions, resolve_retry_policy
from kimiflow.core.requests import (
    RequestSpec,
    decode_success,
    error_from_response,
    request_headers,
    request_id_of,
)
from kimiflow.core.retry import RetryPolicy, RetryState
from kimiflow.resources import (
    AsyncChat,
    AsyncFiles,
    AsyncModels,
    AsyncTokens,
    Chat,
    Files,
    Models,
    Tokens,
)
from kimiflow.streaming import (
    AsyncStream,
    Stream,
    StreamState,
)
from kimiflow.transport.base import (
    AsyncStreamResponse,
    AsyncTransportProtocol,
    Outgoing,
    SyncStreamResponse,
    SyncTransportProtocol,
)
from kimiflow.types.account import Balance
from kimiflow.types.chat import ChatCompletionChunk

if TYPE_CHECKING:
    import aiohttp
    import httpx

    from kimiflow.limits.interface import Lease, Limiter
    from kimiflow.limits.pacing import SyncBridge

logger = logging.getLogger("kimiflow")
T = TypeVar("T")
TransportT = TypeVar("TransportT", SyncTransportProtocol, AsyncTransportProtocol)


class _BaseClient(Generic[TransportT]):
    """Configuration, request assembly and representation shared by both clients."""

    _config: ClientConfig
    _transport: TransportT | None

    def _init_config(
        self,
        api_key: str | None,
        base_url: str | None,
        timeout: TimeoutLike,
        max_retries: int | None,
        default_headers: Mapping[str, str] | None,
        max_connections: int,
        retry_policy: RetryPolicy | None,
        clock: Callable[[], float] | None,
    ) -> None:
        # The one retry-count rule (see resolve_retry_policy); the config then holds the effective number.
        self._retry_policy = resolve_retry_policy(max_retries, retry_policy)
        self._apply_config(resolve_config(api_key=api_key, base_url=base_url, timeout=timeout,
                                          max_retries=self._retry_policy.max_retries,
                                          default_headers=default_headers, max_connections=max_connections))
        self._clock = clock or time.monotonic
        self._owner = True  # False on with_options() copies, which share the owner's connection pool
        self._closed = False

    def _init_limiter(self, limiter: Limiter | None) -> None:
        self._limiter: Limiter | None = None
        if limiter is not None:
            from kimiflow.limits.pacing import check_limiter

            self._limiter = check_limiter(limiter)

    def _limited_charge(self, spec: RequestSpec[Any]) -> Any:
        """The charge of ``spec`` when a limiter paces this client and Kimi counts the call, else None."""
        if self._limiter is None:
            return None
        from kimiflow.limits.pacing import charge_of

        return charge_of(spec.path, spec.body)

    @staticmethod
    def _counts_as_rate_limit(exc: APIError) -> bool:
        # An overloaded engine is not the account's limit: the limiter is told only of real 429s.
        return isinstance(exc, RateLimitError) and not isinstance(exc, EngineOverloadedError)

    def _apply_config(self, config: ClientConfig) -> None:
        self._config = config
        self._headers = request_headers(config.api_key, config.default_headers, stream=False)
        self._stream_headers = request_headers(config.api_key, config.default_headers, stream=True)

    def _attach_resources(self) -> None:
        raise NotImplementedError

    def _get_transport(self) -> TransportT:
        raise NotImplementedError

    def _copy_with(self, changes: dict[str, Any]) -> Any:
        """A copy with changed configuration that shares this client's transport (and never closes it)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        if "timeout" in changes:
            changes["timeouts"] = coerce_timeouts(changes.pop("timeout"), self._config.timeouts)
        clone._apply_config(self._config.replace(**changes))
        if clone._config.max_retries != self._retry_policy.max_retries:
            clone._retry_policy = resolve_retry_policy(clone._config.max_retries, self._retry_policy)
        clone._transport = self._get_transport()
        clone._owner = False
        clone._attach_resources()
        return clone

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def api_key(self) -> str:
        """The key in use. It is never shown by ``repr``, logs or errors."""
        return self._config.api_key

    @property
    def timeouts(self) -> Timeouts:
        return self._config.timeouts

    @property
    def max_retries(self) -> int:
        """The retries a call makes after its first attempt unless it passes its own ``max_retries=``."""
        return self._config.max_retries

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._config.base_url!r}, api_key={mask_key(self._config.api_key)!r})"

    def _retry_state(self, options: CallOptions) -> RetryState:
        policy = self._retry_policy
        if options.max_retries != policy.max_retries:
            # A per-call or with_options() max_retries: the explicit number wins over the policy's.
            policy = resolve_retry_policy(options.max_retries, policy)
        total = options.timeouts.total
        deadline = None if total is None else self._clock() + total
        return RetryState(policy, deadline=deadline, clock=self._clock)

    def _outgoing(self, spec: RequestSpec[Any], options: CallOptions, retry: RetryState) -> Outgoing:
        headers = self._stream_headers if spec.stream else self._headers
        if spec.extra_headers:
            headers = {**headers, **spec.extra_headers}
        if spec.files or spec.form:
            # The transport sets multipart/form-data with its boundary.
            headers = {k: v for k, v in headers.items() if k != "Content-Type"}
        timeouts = options.timeouts
        return Outgoing(
            spec.method, self._config.base_url + spec.path, headers, body=spec.body, form=spec.form,
            files=spec.files, connect_timeout=timeouts.connect, read_timeout=timeouts.read,
            total_timeout=retry.remaining(), deadline=timeouts.total,
        )

    def _log_attempt(self, spec: RequestSpec[Any], retry: RetryState, status: int | str, rid: str | None) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("kimiflow: %s %s attempt %d -> %s (request id %s)", spec.method, spec.path,
                         retry.attempts, status, rid)


# ---------------------------------------------------------------------------------------------- sync


class Kimi(_BaseClient[SyncTransportProtocol]):
    """The synchronous client (httpx).

    >>> client = Kimi()                        # MOONSHOT_API_KEY, MOONSHOT_BASE_URL from the environment
    >>> client.ask("你好", system="你是一位語言藝術大師")
    >>> resp = client.chat.completions.create(model="moonshot-v1-8k", messages=[{"role": "user", "content": "hi"}])

    Retries: an explicit ``max_retries`` wins (here, in ``with_options`` or per call); without one the
    ``retry_policy``'s own ``max_retries`` applies; without either, 2. ``client.max_retries`` reports
    the number in force. ``Kimi(retry_policy=RetryPolicy(max_retries=5))`` retries five times.

    ``http_client``: your own ``httpx.Client`` (proxies, mounts, event hooks) carries the traffic; it
    stays yours, and ``close()`` leaves it open.

    ``limiter``: any ``kimiflow.limits.Limiter`` (``RateLimiter`` or ``RedisLimiter``) paces every chat
    completion (see ``kimiflow.limits.pacing``); its coroutines run on one private loop thread.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: TimeoutLike = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_connections: int = 1000,
        http_client: httpx.Client | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], Any] | None = None,
        clock: Callable[[], float] | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self._init_config(api_key, base_url, timeout, max_retries, default_headers, max_connections,
                          retry_policy, clock)
        self._init_limiter(limiter)
        self._bridge: SyncBridge | None = None
        if self._limiter is not None:
            from kimiflow.limits.pacing import SyncBridge

            self._bridge = SyncBridge()
        if http_client is not None:
            import httpx  # already loaded: the caller built an httpx.Client

            if not isinstance(http_client, httpx.Client):
                raise ConfigError(f"http_client must be an httpx.Client, got {type(http_client).__name__} "
                                  "(an aiohttp.ClientSession goes to AsyncKimi)")
        self._http_client = http_client
        self._transport = None
        self._sleep = sleep or time.sleep
        self._attach_resources()

    def _attach_resources(self) -> None:
        self.chat = Chat(self)
        self.models = Models(self)
        self.files = Files(self)
        self.tokens = Tokens(self)
        self.batches = Batches(self)

    def _get_transport(self) -> SyncTransportProtocol:
        if self._closed:
            raise client_closed_error("Kimi")
        if self._transport is None:
            from kimiflow.transport.sync import SyncTransport

            self._transport = SyncTransport(self._config, self._http_client)
        return self._transport

    def with_options(self, **changes: Any) -> Kimi:
        """A copy with changed settings (``api_key``, ``base_url``, ``timeout``, ``max_retries``...),
        sharing this client's connection pool.

        >>> fast = client.with_options(timeout=10, max_retries=0)
        """
        copy: Kimi = self._copy_with(changes)
        return copy

    @overload
    def _send_with_retries(self, spec: RequestSpec[T], options: CallOptions, retry: RetryState,
                           open_stream: Literal[False]) -> T: ...

    @overload
    def _send_with_retries(self, spec: RequestSpec[ChatCompletionChunk], options: CallOptions, retry: RetryState,
                           open_stream: Literal[True]) -> SyncStreamResponse: ...

    def _send_with_retries(self, spec: RequestSpec[Any], options: CallOptions, retry: RetryState,
                           open_stream: bool) -> Any:
        """The one retry loop: send until a 2xx arrives (decoded, or a stream with its headers in).

        Each failure goes to ``_pause_before_retry``, which sleeps before the next attempt or gives up.
        """
        transport = self._get_transport()
        while True:
            retry.start_attempt()
            try:
                outgoing = self._outgoing(spec, options, retry)
                if open_stream:
                    stream = transport.open_stream(outgoing, options.timeouts.stream_idle)
                    self._log_attempt(spec, retry, stream.status, request_id_of(stream.headers))
                    if stream.status >= 400:
                        try:
                            body = stream.read()
                        finally:
                            stream.close()
                        raise error_from_response(stream.status, body, stream.headers, api_key=self._config.api_key)
                    return stream
                response = transport.send(outgoing)
                rid = request_id_of(response.headers)
                self._log_attempt(spec, retry, response.status, rid)
                if response.status >= 400:
                    raise error_from_response(response.status, response.body, response.headers,
                                              api_key=self._config.api_key)
                # Inside the loop: a malformed 2xx body is retried like a 5xx.
                return decode_success(spec, response.body, rid, retry.attempts)
            except APIError as exc:
                if not self._pause_before_retry(retry, exc):
                    raise retry.tag(exc) from None

    def _pause_before_retry(self, retry: RetryState, exc: APIError) -> bool:
        """Sleep as long as the retry rules say and return True, or return False to give up."""
        if self._bridge is not None and self._limiter is not None and self._counts_as_rate_limit(exc):
            self._bridge.run(self._limiter.report_rate_limited(getattr(exc, "retry_after", None)))
        delay = retry.next_delay(exc)
        if delay is None:
            return False
        self._sleep(delay)
        return True

    def _call(self, spec: RequestSpec[T], options: CallOptions) -> T:
        charge = self._limited_charge(spec)
        if charge is None:
            return self._send_with_retries(spec, options, self._retry_state(options), False)
        lease = self._acquire(charge)
        try:
            result = self._send_with_retries(spec, options, self._retry_state(options), False)
            self._limiter_run("settle", lease, getattr(result, "usage", None))
            return result
        finally:
            self._limiter_run("release", lease)

    def _acquire(self, charge: Any) -> Lease:
        assert self._bridge is not None and self._limiter is not None
        return self._bridge.run(self._limiter.acquire(charge))

    def _limiter_run(self, method: str, *args: Any) -> None:
        assert self._bridge is not None and self._limiter is not None
        self._bridge.run(getattr(self._limiter, method)(*args))

    def _open_stream(self, spec: RequestSpec[ChatCompletionChunk], options: CallOptions) -> Stream[ChatCompletionChunk]:
        retry = self._retry_state(options)
        charge = self._limited_charge(spec)
        if charge is None:
            response = self._send_with_retries(spec, options, retry, True)
        else:
            lease = self._acquire(charge)
            try:
                response = self._send_with_retries(spec, options, retry, True)
            finally:
                self._limiter_run("release", lease)
        state = StreamState(idle_timeout=options.timeouts.stream_idle, deadline=retry.deadline, clock=self._clock,
                            request_id=request_id_of(response.headers), attempts=retry.attempts)

        def reopen(exc: APIError) -> tuple[SyncStreamResponse, int] | None:
            # None lets the stream raise its own error (with the partial answer) when no retry is due.
            if not self._pause_before_retry(retry, exc):
                return None
            return self._send_with_retries(spec, options, retry, True), retry.attempts

        return Stream(response, state, reopen)

    def ask(self, prompt: str, system: str | None = None, model: str | None = None, **params: Any) -> str:
        """One question, one answer: the seed article's ``chat_kimi()`` in one call.

        >>> Kimi().ask("你好", system="你是一位語言藝術大師")
        """
        endpoints.reject_stream_in_ask(params)
        resp = self.chat.completions.create(model=model or DEFAULT_MODEL,
                                            messages=endpoints.ask_messages(prompt, system),  # type: ignore[arg-type]
                                            **params)
        return resp.choices[0].message.content or "" if resp.choices else ""

    def balance(self, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> Balance:
        """The account balance (``GET /users/me/balance``)."""
        return self._call(endpoints.balance(), CallOptions(self._config, timeout, max_retries))

    def close(self) -> None:
        """Close the connection pool (a ``with`` block does this for you). A caller's own
        ``http_client`` is left open: whoever created it closes it."""
        self._closed = True
        if self._transport is not None and self._owner:
            self._transport.close()
        if self._bridge is not None and self._owner:
            self._bridge.close()

    def __enter__(self) -> Kimi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- async


class AsyncKimi(_BaseClient[AsyncTransportProtocol]):
    """The asynchronous client (aiohttp): the same names as ``Kimi``, awaited.

    >>> async with AsyncKimi() as client:
    ...     resp = await client.chat.completions.create(model="moonshot-v1-8k", messages=msgs)

    Retries follow ``Kimi``'s rule: an explicit ``max_retries`` wins, else the ``retry_policy``'s own,
    else 2. ``http_client``: your own ``aiohttp.ClientSession`` carries the traffic and stays open
    after ``close()``. ``limiter``: any ``kimiflow.limits.Limiter`` paces every chat completion
    (``kimiflow.limits.pacing``).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: TimeoutLike = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_connections: int = 1000,
        http_client: aiohttp.ClientSession | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        clock: Callable[[], float] | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self._init_config(api_key, base_url, timeout, max_retries, default_headers, max_connections,
                          retry_policy, clock)
        self._init_limiter(limiter)
        if http_client is not None:
            import aiohttp  # already loaded: the caller built a ClientSession

            if not isinstance(http_client, aiohttp.ClientSession):
                raise ConfigError(f"http_client must be an aiohttp.ClientSession, got {type(http_client).__name__} "
                                  "(an httpx.Client goes to Kimi)")
        self._http_client = http_client
        self._transport = None
        if sleep is None:
            import asyncio  # here, not at module level: ``import kimiflow`` stays light

            sleep = asyncio.sleep
        self._sleep = sleep
        self._attach_resources()

    def _attach_resources(self) -> None:
        self.chat = AsyncChat(self)
        self.models = AsyncModels(self)
        self.files = AsyncFiles(self)
        self.tokens = AsyncTokens(self)
        self.batches = AsyncBatches(self)

    def _get_transport(self) -> AsyncTransportProtocol:
        if self._closed:
            raise client_closed_error("AsyncKimi")
        if self._transport is None:
            from kimiflow.transport.aio import AsyncTransport

            self._transport = AsyncTransport(self._config, self._http_client)
        return self._transport

    def with_options(self, **changes: Any) -> AsyncKimi:
        """A copy with changed settings, sharing this client's connection pool."""
        copy: AsyncKimi = self._copy_with(changes)
        return copy

    @overload
    async def _send_with_retries(self, spec: RequestSpec[T], options: CallOptions, retry: RetryState,
                                 open_stream: Literal[False]) -> T: ...

    @overload
    async def _send_with_retries(self, spec: RequestSpec[ChatCompletionChunk], options: CallOptions,
                                 retry: RetryState, open_stream: Literal[True]) -> AsyncStreamResponse: ...

    async def _send_with_retries(self, spec: RequestSpec[Any], options: CallOptions, retry: RetryState,
                                 open_stream: bool) -> Any:
        """The one retry loop, awaited: ``Kimi._send_with_retries`` with ``await`` at each send and sleep."""
        transport = self._get_transport()
        while True:
            retry.start_attempt()
            try:
                outgoing = self._outgoing(spec, options, retry)
                if open_stream:
                    stream = await transport.open_stream(outgoing, options.timeouts.stream_idle)
                    self._log_attempt(spec, retry, stream.status, request_id_of(stream.headers))
                    if stream.status >= 400:
                        try:
                            body = await stream.read()
                        finally:
                            stream.close()
                        raise error_from_response(stream.status, body, stream.headers, api_key=self._config.api_key)
                    return stream
                response = await transport.send(outgoing)
                rid = request_id_of(response.headers)
                self._log_attempt(spec, retry, response.status, rid)
                if response.status >= 400:
                    raise error_from_response(response.status, response.body, response.headers,
                                              api_key=self._config.api_key)
                return decode_success(spec, response.body, rid, retry.attempts)
            except APIError as exc:
                if not await self._pause_before_retry(retry, exc):
                    raise retry.tag(exc) from None

    async def _pause_before_retry(self, retry: RetryState, exc: APIError) -> bool:
        if self._limiter is not None and self._counts_as_rate_limit(exc):
            await self._limiter.report_rate_limited(getattr(exc, "retry_after", None))
        delay = retry.next_delay(exc)
        if delay is None:
            return False
        await self._sleep(delay)
        return True

    async def _call(self, spec: RequestSpec[T], options: CallOptions) -> T:
        charge = self._limited_charge(spec)
        if charge is None or self._limiter is None:
            return await self._send_with_retries(spec, options, self._retry_state(options), False)
        limiter = self._limiter
        lease = await limiter.acquire(charge)
        try:
            result = await self._send_with_retries(spec, options, self._retry_state(options), False)
            await limiter.settle(lease, getattr(result, "usage", None))
            return result
        finally:
            await limiter.release(lease)

    async def _open_stream(self, spec: RequestSpec[ChatCompletionChunk],
                           options: CallOptions) -> AsyncStream[ChatCompletionChunk]:
        retry = self._retry_state(options)
        charge = self._limited_charge(spec)
        if charge is None or self._limiter is None:
            response = await self._send_with_retries(spec, options, retry, True)
        else:
            lease = await self._limiter.acquire(charge)
            try:
                response = await self._send_with_retries(spec, options, retry, True)
            finally:
                await self._limiter.release(lease)
        state = StreamState(idle_timeout=options.timeouts.stream_idle, deadline=retry.deadline, clock=self._clock,
                            request_id=request_id_of(response.headers), attempts=retry.attempts)

        async def reopen(exc: APIError) -> tuple[AsyncStreamResponse, int] | None:
            if not await self._pause_before_retry(retry, exc):
                return None
            return await self._send_with_retries(spec, options, retry, True), retry.attempts

        return AsyncStream(response, state, reopen)

    async def ask(self, prompt: str, system: str | None = None, model: str | None = None, **params: Any) -> str:
        """One question, one answer: ``await AsyncKimi().ask("你好")``."""
        endpoints.reject_stream_in_ask(params)
        resp = await self.chat.completions.create(model=model or DEFAULT_MODEL,
                                                  messages=endpoints.ask_messages(prompt, system),  # type: ignore[arg-type]
                                                  **params)
        return resp.choices[0].message.content or "" if resp.choices else ""

    async def balance(self, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> Balance:
        """The account balance (``GET /users/me/balance``)."""
        return await self._call(endpoints.balance(), CallOptions(self._config, timeout, max_retries))

    async def close(self) -> None:
        """Close the connection pool (an ``async with`` block does this for you). A caller's own
        ``http_client`` session is left open."""
        self._closed = True
        if self._transport is not None and self._owner:
            await self._transport.close()

    async def __aenter__(self) -> AsyncKimi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

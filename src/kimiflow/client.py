"""``Kimi`` and ``AsyncKimi``: thin shells over the sans-I/O core and one transport each.

The twins have the same public names and signatures (a test enforces it); they differ only in how
they send, sleep and iterate. Endpoint requests are built by ``core.endpoints``; errors are
classified by ``core.requests``; retry decisions come from ``core.retry``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

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
from kimiflow.core.errors import APIError, client_closed_error
from kimiflow.core.options import CallOptions
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
from kimiflow.transport.base import AsyncStreamResponse, Outgoing, SyncStreamResponse
from kimiflow.types.account import Balance
from kimiflow.types.chat import ChatCompletionChunk

if TYPE_CHECKING:
    from kimiflow.transport.aio import AsyncTransport
    from kimiflow.transport.sync import SyncTransport

logger = logging.getLogger("kimiflow")
T = TypeVar("T")


class _BaseClient:
    """Configuration, request assembly and representation shared by both clients."""

    _config: ClientConfig
    _transport: Any

    def _init_config(
        self,
        api_key: str | None,
        base_url: str | None,
        timeout: TimeoutLike,
        max_retries: int,
        default_headers: Mapping[str, str] | None,
        max_connections: int,
        retry_policy: RetryPolicy | None,
        clock: Callable[[], float] | None,
    ) -> None:
        self._apply_config(resolve_config(api_key=api_key, base_url=base_url, timeout=timeout,
                                          max_retries=max_retries, default_headers=default_headers,
                                          max_connections=max_connections))
        self._retry_policy = retry_policy or RetryPolicy()
        self._clock = clock or time.monotonic
        self._owner = True  # False on with_options() copies, which share the owner's connection pool
        self._closed = False

    def _apply_config(self, config: ClientConfig) -> None:
        self._config = config
        self._headers = request_headers(config.api_key, config.default_headers, stream=False)
        self._stream_headers = request_headers(config.api_key, config.default_headers, stream=True)

    def _attach_resources(self) -> None:
        raise NotImplementedError

    def _get_transport(self) -> Any:
        raise NotImplementedError

    def _copy_with(self, changes: dict[str, Any]) -> Any:
        """A copy with changed configuration that shares this client's transport (and never closes it)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        if "timeout" in changes:
            changes["timeouts"] = coerce_timeouts(changes.pop("timeout"), self._config.timeouts)
        clone._apply_config(self._config.replace(**changes))
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
        return self._config.max_retries

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._config.base_url!r}, api_key={mask_key(self._config.api_key)!r})"

    def _retry_state(self, options: CallOptions) -> RetryState:
        policy = self._retry_policy
        if options.max_retries != policy.max_retries:
            policy = RetryPolicy(options.max_retries, policy.initial_delay, policy.max_delay, policy.jitter)
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
            total_timeout=retry.remaining(),
        )

    def _log_attempt(self, spec: RequestSpec[Any], retry: RetryState, status: int | str, rid: str | None) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("kimiflow: %s %s attempt %d -> %s (request id %s)", spec.method, spec.path,
                         retry.attempts, status, rid)


# ---------------------------------------------------------------------------------------------- sync


class Kimi(_BaseClient):
    """The synchronous client (httpx).

    >>> client = Kimi()                        # MOONSHOT_API_KEY, MOONSHOT_BASE_URL from the environment
    >>> client.ask("你好", system="你是一位語言藝術大師")
    >>> resp = client.chat.completions.create(model="moonshot-v1-8k", messages=[{"role": "user", "content": "hi"}])
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: TimeoutLike = None,
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        max_connections: int = 1000,
        http_client: Any = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], Any] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._init_config(api_key, base_url, timeout, max_retries, default_headers, max_connections,
                          retry_policy, clock)
        self._http_client = http_client
        self._transport: SyncTransport | None = None
        self._sleep = sleep or time.sleep
        self._attach_resources()

    def _attach_resources(self) -> None:
        self.chat = Chat(self)
        self.models = Models(self)
        self.files = Files(self)
        self.tokens = Tokens(self)

    def _get_transport(self) -> SyncTransport:
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

    def _call(self, spec: RequestSpec[T], options: CallOptions) -> T:
        retry = self._retry_state(options)
        transport = self._get_transport()
        while True:
            retry.start_attempt()
            try:
                response = transport.send(self._outgoing(spec, options, retry))
                rid = request_id_of(response.headers)
                self._log_attempt(spec, retry, response.status, rid)
                if response.status >= 400:
                    raise error_from_response(response.status, response.body, response.headers,
                                              api_key=self._config.api_key)
                return decode_success(spec, response.body, rid, retry.attempts)
            except APIError as exc:
                delay = retry.next_delay(exc)
                if delay is None:
                    raise retry.tag(exc) from None
                self._sleep(delay)

    def _open_stream(self, spec: RequestSpec[ChatCompletionChunk], options: CallOptions) -> Stream[ChatCompletionChunk]:
        retry = self._retry_state(options)
        idle = options.timeouts.stream_idle
        response = self._open_response(spec, options, retry, idle)
        state = StreamState(idle_timeout=idle, deadline=retry.deadline, clock=self._clock,
                             request_id=request_id_of(response.headers), attempts=retry.attempts)

        def reopen(exc: APIError) -> tuple[SyncStreamResponse, int] | None:
            delay = retry.next_delay(exc)
            if delay is None:
                return None
            self._sleep(delay)
            return self._open_response(spec, options, retry, idle), retry.attempts

        return Stream(response, state, reopen)

    def _open_response(self, spec: RequestSpec[ChatCompletionChunk], options: CallOptions, retry: RetryState,
                       idle: float) -> SyncStreamResponse:
        """Send a streaming request until a 2xx response's headers arrive (retrying by the usual rules)."""
        transport = self._get_transport()
        while True:
            retry.start_attempt()
            try:
                response = transport.open_stream(self._outgoing(spec, options, retry), idle)
                self._log_attempt(spec, retry, response.status, request_id_of(response.headers))
                if response.status >= 400:
                    try:
                        body = response.read()
                    finally:
                        response.close()
                    raise error_from_response(response.status, body, response.headers, api_key=self._config.api_key)
                return response
            except APIError as exc:
                delay = retry.next_delay(exc)
                if delay is None:
                    raise retry.tag(exc) from None
                self._sleep(delay)

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
        """Close the connection pool (a ``with`` block does this for you)."""
        self._closed = True
        if self._transport is not None and self._owner:
            self._transport.close()

    def __enter__(self) -> Kimi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- async


class AsyncKimi(_BaseClient):
    """The asynchronous client (aiohttp): the same names as ``Kimi``, awaited.

    >>> async with AsyncKimi() as client:
    ...     resp = await client.chat.completions.create(model="moonshot-v1-8k", messages=msgs)
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: TimeoutLike = None,
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        max_connections: int = 1000,
        http_client: Any = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._init_config(api_key, base_url, timeout, max_retries, default_headers, max_connections,
                          retry_policy, clock)
        self._http_client = http_client
        self._transport: AsyncTransport | None = None
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

    def _get_transport(self) -> AsyncTransport:
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

    async def _call(self, spec: RequestSpec[T], options: CallOptions) -> T:
        retry = self._retry_state(options)
        transport = self._get_transport()
        while True:
            retry.start_attempt()
            try:
                response = await transport.send(self._outgoing(spec, options, retry))
                rid = request_id_of(response.headers)
                self._log_attempt(spec, retry, response.status, rid)
                if response.status >= 400:
                    raise error_from_response(response.status, response.body, response.headers,
                                              api_key=self._config.api_key)
                return decode_success(spec, response.body, rid, retry.attempts)
            except APIError as exc:
                delay = retry.next_delay(exc)
                if delay is None:
                    raise retry.tag(exc) from None
                await self._sleep(delay)

    async def _open_stream(self, spec: RequestSpec[ChatCompletionChunk],
                           options: CallOptions) -> AsyncStream[ChatCompletionChunk]:
        retry = self._retry_state(options)
        idle = options.timeouts.stream_idle
        response = await self._open_response(spec, options, retry, idle)
        state = StreamState(idle_timeout=idle, deadline=retry.deadline, clock=self._clock,
                             request_id=request_id_of(response.headers), attempts=retry.attempts)

        async def reopen(exc: APIError) -> tuple[AsyncStreamResponse, int] | None:
            delay = retry.next_delay(exc)
            if delay is None:
                return None
            await self._sleep(delay)
            return await self._open_response(spec, options, retry, idle), retry.attempts

        return AsyncStream(response, state, reopen)

    async def _open_response(self, spec: RequestSpec[ChatCompletionChunk], options: CallOptions,
                             retry: RetryState, idle: float) -> AsyncStreamResponse:
        transport = self._get_transport()
        while True:
            retry.start_attempt()
            try:
                response = await transport.open_stream(self._outgoing(spec, options, retry), idle)
                self._log_attempt(spec, retry, response.status, request_id_of(response.headers))
                if response.status >= 400:
                    try:
                        body = await response.read()
                    finally:
                        response.close()
                    raise error_from_response(response.status, body, response.headers, api_key=self._config.api_key)
                return response
            except APIError as exc:
                delay = retry.next_delay(exc)
                if delay is None:
                    raise retry.tag(exc) from None
                await self._sleep(delay)

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
        """Close the connection pool (an ``async with`` block does this for you)."""
        self._closed = True
        if self._transport is not None and self._owner:
            await self._transport.close()

    async def __aenter__(self) -> AsyncKimi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

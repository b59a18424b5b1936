"""``Kimi`` and ``AsyncKimi``: thin shells over the sans-I/O core and one transport each.

The twins have the same public names and signatures (a test enforces it); they differ only in how
they send, sleep and iterate. Endpoint requests are built by ``core.endpoints``; errors are
classified by ``core.requests``; retry decisions come from ``core.retry``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from typing_extensions import Unpack

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
from kimiflow.core.errors import APIError
from kimiflow.core.requests import (
    RequestSpec,
    decode_success,
    error_from_response,
    request_headers,
    request_id_of,
)
from kimiflow.core.retry import RetryPolicy, RetryState
from kimiflow.streaming import (
    AsyncChatCompletionStream,
    AsyncStream,
    AsyncStreamManager,
    ChatCompletionStream,
    Stream,
    StreamManager,
    _StreamState,
)
from kimiflow.transport.base import AsyncStreamResponse, Outgoing, SyncStreamResponse
from kimiflow.types.account import Balance, TokenCount
from kimiflow.types.chat import ChatCompletion, ChatCompletionChunk
from kimiflow.types.files import FileDeleted, FileList, FileObject
from kimiflow.types.models import ModelList
from kimiflow.types.params import ChatCompletionOptions, MessageParam

if TYPE_CHECKING:
    from kimiflow.transport.aio import AsyncTransport
    from kimiflow.transport.sync import SyncTransport

logger = logging.getLogger("kimiflow")
T = TypeVar("T")
FilePath = str | os.PathLike[str] | bytes


class _CallOptions:
    """Per-call overrides: ``timeout``, ``max_retries``, ``extra_headers``, ``extra_body``."""

    __slots__ = ("max_retries", "timeouts")

    def __init__(self, config: ClientConfig, timeout: TimeoutLike, max_retries: int | None) -> None:
        self.timeouts = coerce_timeouts(timeout, config.timeouts) if timeout is not None else config.timeouts
        self.max_retries = config.max_retries if max_retries is None else max_retries


class _BaseClient:
    """Configuration, request assembly and representation shared by both clients."""

    _config: ClientConfig

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
        self._config = resolve_config(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries,
                                      default_headers=default_headers, max_connections=max_connections)
        self._retry_policy = retry_policy or RetryPolicy()
        self._clock = clock or time.monotonic
        self._headers = request_headers(self._config.api_key, self._config.default_headers, stream=False)
        self._stream_headers = request_headers(self._config.api_key, self._config.default_headers, stream=True)

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

    def _retry_state(self, options: _CallOptions) -> RetryState:
        policy = self._retry_policy
        if options.max_retries != policy.max_retries:
            policy = RetryPolicy(options.max_retries, policy.initial_delay, policy.max_delay, policy.jitter)
        total = options.timeouts.total
        deadline = None if total is None else self._clock() + total
        return RetryState(policy, deadline=deadline, clock=self._clock)

    def _outgoing(self, spec: RequestSpec[Any], options: _CallOptions, retry: RetryState) -> Outgoing:
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


def _chat_params(model: str, messages: Sequence[MessageParam], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"model": model, "messages": list(messages), **params}


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
        self.chat = Chat(self)
        self.models = Models(self)
        self.files = Files(self)
        self.tokens = Tokens(self)

    def _get_transport(self) -> SyncTransport:
        if self._transport is None:
            from kimiflow.transport.sync import SyncTransport

            self._transport = SyncTransport(self._config, self._http_client)
        return self._transport

    def with_options(self, **changes: Any) -> Kimi:
        """A copy with changed settings (``api_key``, ``base_url``, ``timeout``, ``max_retries``...),
        sharing this client's connection pool.

        >>> fast = client.with_options(timeout=10, max_retries=0)
        """
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        if "timeout" in changes:
            changes["timeouts"] = coerce_timeouts(changes.pop("timeout"), self._config.timeouts)
        clone._config = self._config.replace(**changes)
        clone._headers = request_headers(clone._config.api_key, clone._config.default_headers, stream=False)
        clone._stream_headers = request_headers(clone._config.api_key, clone._config.default_headers, stream=True)
        clone._transport = self._get_transport()
        clone._owner = False  # type: ignore[attr-defined]
        clone.chat, clone.models, clone.files, clone.tokens = Chat(clone), Models(clone), Files(clone), Tokens(clone)
        return clone

    def _call(self, spec: RequestSpec[T], options: _CallOptions) -> T:
        retry = self._retry_state(options)
        transport = self._get_transport()
        while True:
            retry.start_attempt()
            try:
                response = transport.send(self._outgoing(spec, options, retry))
                self._log_attempt(spec, retry, response.status, request_id_of(response.headers))
                if response.status >= 400:
                    raise error_from_response(response.status, response.body, response.headers,
                                              api_key=self._config.api_key)
                return decode_success(spec, response.body, response.headers, retry.attempts)
            except APIError as exc:
                delay = retry.next_delay(exc)
                if delay is None:
                    raise retry.tag(exc) from None
                self._sleep(delay)

    def _open_stream(self, spec: RequestSpec[ChatCompletionChunk], options: _CallOptions) -> Stream[ChatCompletionChunk]:
        retry = self._retry_state(options)
        idle = options.timeouts.stream_idle
        response = self._open_response(spec, options, retry, idle)
        state = _StreamState(idle_timeout=idle, deadline=retry.deadline, clock=self._clock,
                             request_id=request_id_of(response.headers), attempts=retry.attempts)

        def reopen(exc: APIError) -> tuple[SyncStreamResponse, int] | None:
            delay = retry.next_delay(exc)
            if delay is None:
                return None
            self._sleep(delay)
            return self._open_response(spec, options, retry, idle), retry.attempts

        return Stream(response, state, reopen)

    def _open_response(self, spec: RequestSpec[ChatCompletionChunk], options: _CallOptions, retry: RetryState,
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
        resp = self.chat.completions.create(model=model or DEFAULT_MODEL,
                                            messages=endpoints.ask_messages(prompt, system),  # type: ignore[arg-type]
                                            **params)
        return resp.choices[0].message.content or "" if resp.choices else ""

    def balance(self, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> Balance:
        """The account balance (``GET /users/me/balance``)."""
        return self._call(endpoints.balance(), _CallOptions(self._config, timeout, max_retries))

    def close(self) -> None:
        """Close the connection pool (a ``with`` block does this for you)."""
        if self._transport is not None and getattr(self, "_owner", True):
            self._transport.close()

    def __enter__(self) -> Kimi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Completions:
    """``client.chat.completions``: ``create()`` and the ``stream()`` helper."""

    def __init__(self, client: Kimi) -> None:
        self._client = client

    @overload
    def create(self, *, model: str, messages: Sequence[MessageParam], stream: Literal[False] = False,
               extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
               timeout: TimeoutLike = None, max_retries: int | None = None,
               **params: Unpack[ChatCompletionOptions]) -> ChatCompletion: ...

    @overload
    def create(self, *, model: str, messages: Sequence[MessageParam], stream: Literal[True],
               extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
               timeout: TimeoutLike = None, max_retries: int | None = None,
               **params: Unpack[ChatCompletionOptions]) -> Stream[ChatCompletionChunk]: ...

    def create(self, *, model: str, messages: Sequence[MessageParam], stream: bool = False,
               extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
               timeout: TimeoutLike = None, max_retries: int | None = None,
               **params: Unpack[ChatCompletionOptions]) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """Create a chat completion; ``stream=True`` returns a ``Stream`` of chunks.

        >>> resp = client.chat.completions.create(model="moonshot-v1-8k", messages=msgs, temperature=0.3)
        >>> resp.choices[0].message.content
        """
        body = _chat_params(model, messages, params)
        options = _CallOptions(self._client._config, timeout, max_retries)
        if stream:
            spec_s = endpoints.chat_completion_stream(body, extra_body=extra_body, extra_headers=extra_headers)
            return self._client._open_stream(spec_s, options)
        spec = endpoints.chat_completion(body, extra_body=extra_body, extra_headers=extra_headers)
        return self._client._call(spec, options)

    def stream(self, *, model: str, messages: Sequence[MessageParam],
               extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
               timeout: TimeoutLike = None, max_retries: int | None = None,
               **params: Unpack[ChatCompletionOptions]) -> StreamManager[ChatCompletionStream]:
        """Stream with helpers: ``text_stream``, ``reasoning_stream``, ``get_final_completion()``.

        >>> with client.chat.completions.stream(model="moonshot-v1-8k", messages=msgs) as s:
        ...     for text in s.text_stream: print(text, end="")
        ...     final = s.get_final_completion()
        """
        body = _chat_params(model, messages, params)
        options = _CallOptions(self._client._config, timeout, max_retries)
        spec = endpoints.chat_completion_stream(body, extra_body=extra_body, extra_headers=extra_headers)
        return StreamManager(lambda: ChatCompletionStream(self._client._open_stream(spec, options)),
                             ChatCompletionStream.close)


class Chat:
    def __init__(self, client: Kimi) -> None:
        self.completions = Completions(client)


class Models:
    """``client.models``."""

    def __init__(self, client: Kimi) -> None:
        self._client = client

    def list(self, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> ModelList:
        """The models this key can use: ``[m.id for m in client.models.list().data]``."""
        return self._client._call(endpoints.list_models(), _CallOptions(self._client._config, timeout, max_retries))


class Tokens:
    """``client.tokens``."""

    def __init__(self, client: Kimi) -> None:
        self._client = client

    def count(self, *, model: str, messages: Sequence[MessageParam], timeout: TimeoutLike = None,
              max_retries: int | None = None) -> TokenCount:
        """Kimi's own token count for a request: ``client.tokens.count(model=..., messages=...).total_tokens``."""
        return self._client._call(endpoints.count_tokens(model, messages),
                                  _CallOptions(self._client._config, timeout, max_retries))


class Files:
    """``client.files``: upload documents, list them, read extracted text, delete them."""

    def __init__(self, client: Kimi) -> None:
        self._client = client

    def _options(self, timeout: TimeoutLike, max_retries: int | None) -> _CallOptions:
        return _CallOptions(self._client._config, timeout, max_retries)

    def upload(self, file: FilePath, *, purpose: str = "file-extract", filename: str | None = None,
               timeout: TimeoutLike = None, max_retries: int | None = None) -> FileObject:
        """Upload a file: ``client.files.upload("report.pdf", purpose="file-extract")``."""
        return self._client._call(endpoints.upload_file(file, purpose, filename), self._options(timeout, max_retries))

    def list(self, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> FileList:
        return self._client._call(endpoints.list_files(), self._options(timeout, max_retries))

    def retrieve(self, file_id: str, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> FileObject:
        return self._client._call(endpoints.retrieve_file(file_id), self._options(timeout, max_retries))

    def content(self, file_id: str, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> str:
        """The extracted text of a ``file-extract`` upload, ready to put into a system message."""
        return self._client._call(endpoints.file_content(file_id), self._options(timeout, max_retries))

    def delete(self, file_id: str, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> FileDeleted:
        return self._client._call(endpoints.delete_file(file_id), self._options(timeout, max_retries))


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
        self.chat = AsyncChat(self)
        self.models = AsyncModels(self)
        self.files = AsyncFiles(self)
        self.tokens = AsyncTokens(self)

    def _get_transport(self) -> AsyncTransport:
        if self._transport is None:
            from kimiflow.transport.aio import AsyncTransport

            self._transport = AsyncTransport(self._config, self._http_client)
        return self._transport

    def with_options(self, **changes: Any) -> AsyncKimi:
        """A copy with changed settings, sharing this client's connection pool."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        if "timeout" in changes:
            changes["timeouts"] = coerce_timeouts(changes.pop("timeout"), self._config.timeouts)
        clone._config = self._config.replace(**changes)
        clone._headers = request_headers(clone._config.api_key, clone._config.default_headers, stream=False)
        clone._stream_headers = request_headers(clone._config.api_key, clone._config.default_headers, stream=True)
        clone._transport = self._get_transport()
        clone._owner = False  # type: ignore[attr-defined]
        clone.chat, clone.models = AsyncChat(clone), AsyncModels(clone)
        clone.files, clone.tokens = AsyncFiles(clone), AsyncTokens(clone)
        return clone

    async def _call(self, spec: RequestSpec[T], options: _CallOptions) -> T:
        retry = self._retry_state(options)
        transport = self._get_transport()
        while True:
            retry.start_attempt()
            try:
                response = await transport.send(self._outgoing(spec, options, retry))
                self._log_attempt(spec, retry, response.status, request_id_of(response.headers))
                if response.status >= 400:
                    raise error_from_response(response.status, response.body, response.headers,
                                              api_key=self._config.api_key)
                return decode_success(spec, response.body, response.headers, retry.attempts)
            except APIError as exc:
                delay = retry.next_delay(exc)
                if delay is None:
                    raise retry.tag(exc) from None
                await self._sleep(delay)

    async def _open_stream(self, spec: RequestSpec[ChatCompletionChunk],
                           options: _CallOptions) -> AsyncStream[ChatCompletionChunk]:
        retry = self._retry_state(options)
        idle = options.timeouts.stream_idle
        response = await self._open_response(spec, options, retry, idle)
        state = _StreamState(idle_timeout=idle, deadline=retry.deadline, clock=self._clock,
                             request_id=request_id_of(response.headers), attempts=retry.attempts)

        async def reopen(exc: APIError) -> tuple[AsyncStreamResponse, int] | None:
            delay = retry.next_delay(exc)
            if delay is None:
                return None
            await self._sleep(delay)
            return await self._open_response(spec, options, retry, idle), retry.attempts

        return AsyncStream(response, state, reopen)

    async def _open_response(self, spec: RequestSpec[ChatCompletionChunk], options: _CallOptions,
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
        resp = await self.chat.completions.create(model=model or DEFAULT_MODEL,
                                                  messages=endpoints.ask_messages(prompt, system),  # type: ignore[arg-type]
                                                  **params)
        return resp.choices[0].message.content or "" if resp.choices else ""

    async def balance(self, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> Balance:
        """The account balance (``GET /users/me/balance``)."""
        return await self._call(endpoints.balance(), _CallOptions(self._config, timeout, max_retries))

    async def close(self) -> None:
        """Close the connection pool (an ``async with`` block does this for you)."""
        if self._transport is not None and getattr(self, "_owner", True):
            await self._transport.close()

    async def __aenter__(self) -> AsyncKimi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncCompletions:
    """``aclient.chat.completions``."""

    def __init__(self, client: AsyncKimi) -> None:
        self._client = client

    @overload
    async def create(self, *, model: str, messages: Sequence[MessageParam], stream: Literal[False] = False,
                     extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
                     timeout: TimeoutLike = None, max_retries: int | None = None,
                     **params: Unpack[ChatCompletionOptions]) -> ChatCompletion: ...

    @overload
    async def create(self, *, model: str, messages: Sequence[MessageParam], stream: Literal[True],
                     extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
                     timeout: TimeoutLike = None, max_retries: int | None = None,
                     **params: Unpack[ChatCompletionOptions]) -> AsyncStream[ChatCompletionChunk]: ...

    async def create(self, *, model: str, messages: Sequence[MessageParam], stream: bool = False,
                     extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
                     timeout: TimeoutLike = None, max_retries: int | None = None,
                     **params: Unpack[ChatCompletionOptions]) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """Create a chat completion; ``stream=True`` returns an ``AsyncStream`` of chunks."""
        body = _chat_params(model, messages, params)
        options = _CallOptions(self._client._config, timeout, max_retries)
        if stream:
            spec_s = endpoints.chat_completion_stream(body, extra_body=extra_body, extra_headers=extra_headers)
            return await self._client._open_stream(spec_s, options)
        spec = endpoints.chat_completion(body, extra_body=extra_body, extra_headers=extra_headers)
        return await self._client._call(spec, options)

    def stream(self, *, model: str, messages: Sequence[MessageParam],
               extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
               timeout: TimeoutLike = None, max_retries: int | None = None,
               **params: Unpack[ChatCompletionOptions]) -> AsyncStreamManager[AsyncChatCompletionStream]:
        """``async with aclient.chat.completions.stream(...) as s: async for text in s.text_stream: ...``"""
        body = _chat_params(model, messages, params)
        options = _CallOptions(self._client._config, timeout, max_retries)
        spec = endpoints.chat_completion_stream(body, extra_body=extra_body, extra_headers=extra_headers)

        async def opener() -> AsyncChatCompletionStream:
            return AsyncChatCompletionStream(await self._client._open_stream(spec, options))

        return AsyncStreamManager(opener, AsyncChatCompletionStream.close)


class AsyncChat:
    def __init__(self, client: AsyncKimi) -> None:
        self.completions = AsyncCompletions(client)


class AsyncModels:
    def __init__(self, client: AsyncKimi) -> None:
        self._client = client

    async def list(self, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> ModelList:
        return await self._client._call(endpoints.list_models(),
                                        _CallOptions(self._client._config, timeout, max_retries))


class AsyncTokens:
    def __init__(self, client: AsyncKimi) -> None:
        self._client = client

    async def count(self, *, model: str, messages: Sequence[MessageParam], timeout: TimeoutLike = None,
                    max_retries: int | None = None) -> TokenCount:
        return await self._client._call(endpoints.count_tokens(model, messages),
                                        _CallOptions(self._client._config, timeout, max_retries))


class AsyncFiles:
    def __init__(self, client: AsyncKimi) -> None:
        self._client = client

    def _options(self, timeout: TimeoutLike, max_retries: int | None) -> _CallOptions:
        return _CallOptions(self._client._config, timeout, max_retries)

    async def upload(self, file: FilePath, *, purpose: str = "file-extract", filename: str | None = None,
                     timeout: TimeoutLike = None, max_retries: int | None = None) -> FileObject:
        return await self._client._call(endpoints.upload_file(file, purpose, filename),
                                        self._options(timeout, max_retries))

    async def list(self, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> FileList:
        return await self._client._call(endpoints.list_files(), self._options(timeout, max_retries))

    async def retrieve(self, file_id: str, *, timeout: TimeoutLike = None,
                       max_retries: int | None = None) -> FileObject:
        return await self._client._call(endpoints.retrieve_file(file_id), self._options(timeout, max_retries))

    async def content(self, file_id: str, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> str:
        return await self._client._call(endpoints.file_content(file_id), self._options(timeout, max_retries))

    async def delete(self, file_id: str, *, timeout: TimeoutLike = None,
                     max_retries: int | None = None) -> FileDeleted:
        return await self._client._call(endpoints.delete_file(file_id), self._options(timeout, max_retries))

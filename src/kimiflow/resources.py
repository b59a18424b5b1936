"""The resources hanging off a client: ``chat.completions``, ``models``, ``files``, ``tokens``.

Each method builds a request with ``core.endpoints`` and hands it to its client; the sync and
async twins differ only in ``await``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from typing_extensions import Unpack

from kimiflow.core import endpoints
from kimiflow.core.config import ClientConfig, TimeoutLike
from kimiflow.core.loops import DEFAULT_MAX_STEPS, DEFAULT_MAX_VALIDATION_RETRIES, StructuredMode
from kimiflow.core.options import CallOptions
from kimiflow.core.requests import RequestSpec
from kimiflow.streaming import (
    AsyncChatCompletionStream,
    AsyncStream,
    AsyncStreamManager,
    ChatCompletionStream,
    Stream,
    StreamManager,
)
from kimiflow.types.account import TokenCount
from kimiflow.types.chat import ChatCompletion, ChatCompletionChunk
from kimiflow.types.files import FileDeleted, FileList, FileObject
from kimiflow.types.models import ModelList
from kimiflow.types.params import ChatCompletionOptions, MessageParam
from kimiflow.types.parsed import ParsedChatCompletion, ParseStreamEvent

if TYPE_CHECKING:
    from kimiflow.parse_loop import AsyncParseStream, ParseLoop, ParseStream
    from kimiflow.tool_loop import ToolEvent, ToolLoop, ToolRunResult

# A step with more calls than this queues the rest: a model asking for 100 calls must not start 100 threads.
MAX_TOOL_THREADS = 16

T = TypeVar("T")
ParsedT = TypeVar("ParsedT")


class SyncSender(Protocol):
    """What a sync resource needs from its client (``Kimi``): named here so resources never import it."""

    _config: ClientConfig

    def _call(self, spec: RequestSpec[T], options: CallOptions) -> T: ...

    def _open_stream(self, spec: RequestSpec[ChatCompletionChunk],
                     options: CallOptions) -> Stream[ChatCompletionChunk]: ...


class AsyncSender(Protocol):
    """What an async resource needs from its client (``AsyncKimi``)."""

    _config: ClientConfig

    async def _call(self, spec: RequestSpec[T], options: CallOptions) -> T: ...

    async def _open_stream(self, spec: RequestSpec[ChatCompletionChunk],
                           options: CallOptions) -> AsyncStream[ChatCompletionChunk]: ...

FilePath = str | os.PathLike[str] | bytes


def chat_params(model: str, messages: Sequence[MessageParam], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"model": model, "messages": list(messages), **params}


class Completions:
    """``client.chat.completions``: ``create()`` and the ``stream()`` helper."""

    def __init__(self, client: SyncSender) -> None:
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
        body = chat_params(model, messages, params)
        options = CallOptions(self._client._config, timeout, max_retries)
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
        body = chat_params(model, messages, params)
        options = CallOptions(self._client._config, timeout, max_retries)
        spec = endpoints.chat_completion_stream(body, extra_body=extra_body, extra_headers=extra_headers)
        return StreamManager(lambda: ChatCompletionStream(self._client._open_stream(spec, options)),
                             ChatCompletionStream.close)

    @overload
    def parse(self, *, model: str, messages: Sequence[MessageParam], response_format: type[ParsedT],
              max_validation_retries: int = DEFAULT_MAX_VALIDATION_RETRIES, token_budget: int | None = None,
              structured_mode: StructuredMode | None = None,
              extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
              timeout: TimeoutLike = None, max_retries: int | None = None,
              **params: Any) -> ParsedChatCompletion[ParsedT]: ...

    @overload
    def parse(self, *, model: str, messages: Sequence[MessageParam], response_format: Mapping[str, Any],
              max_validation_retries: int = DEFAULT_MAX_VALIDATION_RETRIES, token_budget: int | None = None,
              structured_mode: StructuredMode | None = None,
              extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
              timeout: TimeoutLike = None, max_retries: int | None = None,
              **params: Any) -> ParsedChatCompletion[dict[str, Any]]: ...

    def parse(self, *, model: str, messages: Sequence[MessageParam], response_format: Any,
              max_validation_retries: int = DEFAULT_MAX_VALIDATION_RETRIES, token_budget: int | None = None,
              structured_mode: StructuredMode | None = None,
              extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
              timeout: TimeoutLike = None, max_retries: int | None = None,
              **params: Any) -> ParsedChatCompletion[Any]:
        """A completion whose ``choices[i].message.parsed`` is a validated ``response_format`` object.

        ``response_format`` is a msgspec Struct, dataclass, TypedDict, pydantic model or JSON Schema
        dict. An invalid answer is re-asked up to ``max_validation_retries`` times (HTTP errors
        follow ``max_retries`` as usual); ``token_budget`` stops re-asking once that many tokens are
        spent; ``usage`` is the total over all attempts. Raises ``AnswerValidationError``,
        ``TruncatedAnswerError`` or ``AnswerBudgetExceededError`` (each with ``usage`` and
        ``completions``).

        >>> resp = client.chat.completions.parse(model="kimi-k2.6", messages=msgs, response_format=Ticket)
        >>> resp.choices[0].message.parsed.priority
        """
        from kimiflow.parse_loop import ParseLoop  # loaded on first use: keeps `import kimiflow` light

        loop = ParseLoop(model, messages, response_format, params=params, token_budget=token_budget,
                         max_validation_retries=max_validation_retries, structured_mode=structured_mode)
        options = CallOptions(self._client._config, timeout, max_retries)
        for body in loop.bodies():
            spec = endpoints.chat_completion(body, extra_body=extra_body, extra_headers=extra_headers)
            result = loop.feed(self._client._call(spec, options))
            if result is not None:
                return result
        raise loop.failure()

    def parse_stream(self, *, model: str, messages: Sequence[MessageParam], response_format: Any,
                     max_validation_retries: int = DEFAULT_MAX_VALIDATION_RETRIES, token_budget: int | None = None,
                     structured_mode: StructuredMode | None = None,
                     extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
                     timeout: TimeoutLike = None, max_retries: int | None = None,
                     **params: Any) -> ParseStream[Any]:
        """``parse()`` streamed: events with the text and the partial object, then the validated one.

        Each attempt is one streamed request; a re-ask (same rules as ``parse()``) begins with a new
        ``"attempt"`` event. See ``ParseStreamEvent``.

        >>> with client.chat.completions.parse_stream(model="kimi-k2.6", messages=msgs,
        ...                                           response_format=Ticket) as stream:
        ...     for event in stream:
        ...         print(event.kind, event.partial)
        """
        from kimiflow.parse_loop import ParseLoop, ParseStream  # loaded on first use

        loop = ParseLoop(model, messages, response_format, params=params, token_budget=token_budget,
                         max_validation_retries=max_validation_retries, structured_mode=structured_mode)
        options = CallOptions(self._client._config, timeout, max_retries)
        return ParseStream(self._parse_events(loop, extra_body, extra_headers, options))

    def _parse_events(self, loop: ParseLoop, extra_body: Mapping[str, Any] | None,
                      extra_headers: Mapping[str, str] | None, options: CallOptions) -> Generator[ParseStreamEvent[Any], None, None]:
        from kimiflow.parse_loop import PartialAnswer, attempt_event, done_event

        for body in loop.bodies():
            opening = attempt_event(loop)
            yield opening
            answer = PartialAnswer(opening.attempt)
            spec = endpoints.chat_completion_stream(body, extra_body=extra_body, extra_headers=extra_headers)
            chunks = ChatCompletionStream(self._client._open_stream(spec, options))
            try:
                for chunk in chunks:
                    yield from answer.feed(chunk)
                completion = chunks.get_final_completion()
            finally:
                chunks.close()
            result = loop.feed(completion)
            if result is not None:
                yield done_event(result)
                return
        raise loop.failure()

    def run_tools(self, *, model: str, messages: Sequence[MessageParam], tools: Sequence[Any],
                  max_steps: int = DEFAULT_MAX_STEPS, on_event: Callable[[ToolEvent], None] | None = None,
                  stream: bool = False,
                  extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
                  timeout: TimeoutLike = None, max_retries: int | None = None,
                  **params: Any) -> ToolRunResult:
        """Let Kimi call ``tools`` (Python functions, dict specs, ``WEB_SEARCH_TOOL``) until it answers.

        A step's calls run concurrently in threads, their results sent back in call order; a tool's
        exception, an unknown name or bad arguments go back as ``error: ...`` text. Raises
        ``MaxStepsExceededError`` (with ``messages``, ``usage``, ``cost_cny``) after ``max_steps``.
        ``on_event`` receives each ``ToolEvent`` (call started / finished, step done, and with
        ``stream=True`` each step streamed and its text and reasoning reported as they arrive).

        >>> run = client.chat.completions.run_tools(model="kimi-k2.6", messages=msgs, tools=[get_weather])
        >>> run.content, run.steps, run.cost_cny
        """
        from concurrent.futures import ThreadPoolExecutor

        from kimiflow.tool_loop import ToolLoop  # loaded on first use: keeps `import kimiflow` light

        loop = ToolLoop(model, messages, tools, params=params, max_steps=max_steps, on_event=on_event)
        options = CallOptions(self._client._config, timeout, max_retries)
        for body in loop.bodies():
            calls = loop.feed(self._step(loop, body, stream, extra_body, extra_headers, options))
            if not calls:
                return loop.result()
            with ThreadPoolExecutor(max_workers=min(len(calls), MAX_TOOL_THREADS)) as pool:
                loop.deliver(list(pool.map(lambda call: call.call_sync(), calls)))
        raise loop.failure()

    def _step(self, loop: ToolLoop, body: dict[str, Any], stream: bool, extra_body: Mapping[str, Any] | None,
              extra_headers: Mapping[str, str] | None, options: CallOptions) -> ChatCompletion:
        if not stream:
            return self._client._call(endpoints.chat_completion(body, extra_body=extra_body,
                                                                extra_headers=extra_headers), options)
        spec = endpoints.chat_completion_stream(body, extra_body=extra_body, extra_headers=extra_headers)
        chunks = ChatCompletionStream(self._client._open_stream(spec, options))
        try:
            for chunk in chunks:
                loop.feed_chunk(chunk)
            return chunks.get_final_completion()
        finally:
            chunks.close()


class Chat:
    def __init__(self, client: SyncSender) -> None:
        self.completions = Completions(client)


class Models:
    """``client.models``."""

    def __init__(self, client: SyncSender) -> None:
        self._client = client

    def list(self, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> ModelList:
        """The models this key can use: ``[m.id for m in client.models.list().data]``."""
        return self._client._call(endpoints.list_models(), CallOptions(self._client._config, timeout, max_retries))


class Tokens:
    """``client.tokens``."""

    def __init__(self, client: SyncSender) -> None:
        self._client = client

    def count(self, *, model: str, messages: Sequence[MessageParam], timeout: TimeoutLike = None,
              max_retries: int | None = None) -> TokenCount:
        """Kimi's own token count for a request: ``client.tokens.count(model=..., messages=...).total_tokens``."""
        return self._client._call(endpoints.count_tokens(model, messages),
                                  CallOptions(self._client._config, timeout, max_retries))


class Files:
    """``client.files``: upload documents, list them, read extracted text, delete them."""

    def __init__(self, client: SyncSender) -> None:
        self._client = client

    def _options(self, timeout: TimeoutLike, max_retries: int | None) -> CallOptions:
        return CallOptions(self._client._config, timeout, max_retries)

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


class AsyncCompletions:
    """``aclient.chat.completions``."""

    def __init__(self, client: AsyncSender) -> None:
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
        body = chat_params(model, messages, params)
        options = CallOptions(self._client._config, timeout, max_retries)
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
        body = chat_params(model, messages, params)
        options = CallOptions(self._client._config, timeout, max_retries)
        spec = endpoints.chat_completion_stream(body, extra_body=extra_body, extra_headers=extra_headers)

        async def opener() -> AsyncChatCompletionStream:
            return AsyncChatCompletionStream(await self._client._open_stream(spec, options))

        return AsyncStreamManager(opener, AsyncChatCompletionStream.close)

    @overload
    async def parse(self, *, model: str, messages: Sequence[MessageParam], response_format: type[ParsedT],
                    max_validation_retries: int = DEFAULT_MAX_VALIDATION_RETRIES, token_budget: int | None = None,
                    structured_mode: StructuredMode | None = None,
                    extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
                    timeout: TimeoutLike = None, max_retries: int | None = None,
                    **params: Any) -> ParsedChatCompletion[ParsedT]: ...

    @overload
    async def parse(self, *, model: str, messages: Sequence[MessageParam], response_format: Mapping[str, Any],
                    max_validation_retries: int = DEFAULT_MAX_VALIDATION_RETRIES, token_budget: int | None = None,
                    structured_mode: StructuredMode | None = None,
                    extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
                    timeout: TimeoutLike = None, max_retries: int | None = None,
                    **params: Any) -> ParsedChatCompletion[dict[str, Any]]: ...

    async def parse(self, *, model: str, messages: Sequence[MessageParam], response_format: Any,
                    max_validation_retries: int = DEFAULT_MAX_VALIDATION_RETRIES, token_budget: int | None = None,
                    structured_mode: StructuredMode | None = None,
                    extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
                    timeout: TimeoutLike = None, max_retries: int | None = None,
                    **params: Any) -> ParsedChatCompletion[Any]:
        """A completion whose ``choices[i].message.parsed`` is a validated ``response_format`` object.

        ``response_format`` is a msgspec Struct, dataclass, TypedDict, pydantic model or JSON Schema
        dict. An invalid answer is re-asked up to ``max_validation_retries`` times (HTTP errors
        follow ``max_retries`` as usual); ``token_budget`` stops re-asking once that many tokens are
        spent; ``usage`` is the total over all attempts. Raises ``AnswerValidationError``,
        ``TruncatedAnswerError`` or ``AnswerBudgetExceededError`` (each with ``usage`` and
        ``completions``).

        >>> resp = await aclient.chat.completions.parse(model="kimi-k2.6", messages=msgs, response_format=Ticket)
        >>> resp.choices[0].message.parsed.priority
        """
        from kimiflow.parse_loop import ParseLoop  # loaded on first use: keeps `import kimiflow` light

        loop = ParseLoop(model, messages, response_format, params=params, token_budget=token_budget,
                               max_validation_retries=max_validation_retries, structured_mode=structured_mode)
        options = CallOptions(self._client._config, timeout, max_retries)
        for body in loop.bodies():
            spec = endpoints.chat_completion(body, extra_body=extra_body, extra_headers=extra_headers)
            result = loop.feed(await self._client._call(spec, options))
            if result is not None:
                      return result
        raise loop.failure()

    def parse_stream(self, *, model: str, messages: Sequence[MessageParam], response_format: Any,
                     max_validation_retries: int = DEFAULT_MAX_VALIDATION_RETRIES, token_budget: int | None = None,
                     structured_mode: StructuredMode | None = None,
                     extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
                     timeout: TimeoutLike = None, max_retries: int | None = None,
                     **params: Any) -> AsyncParseStream[Any]:
        """``parse()`` streamed (``async with`` / ``async for``); see the sync twin and ``ParseStreamEvent``.

        >>> async with aclient.chat.completions.parse_stream(model="kimi-k2.6", messages=msgs,
        ...                                                  response_format=Ticket) as stream:
        ...     async for event in stream:
        ...         print(event.kind, event.partial)
        """
        from kimiflow.parse_loop import AsyncParseStream, ParseLoop  # loaded on first use

        loop = ParseLoop(model, messages, response_format, params=params, token_budget=token_budget,
                         max_validation_retries=max_validation_retries, structured_mode=structured_mode)
        options = CallOptions(self._client._config, timeout, max_retries)
        return AsyncParseStream(self._parse_events(loop, extra_body, extra_headers, options))

    async def _parse_events(self, loop: ParseLoop, extra_body: Mapping[str, Any] | None,
                            extra_headers: Mapping[str, str] | None,
                            options: CallOptions) -> AsyncGenerator[ParseStreamEvent[Any], None]:
        from kimiflow.parse_loop import PartialAnswer, attempt_event, done_event

        for body in loop.bodies():
            opening = attempt_event(loop)
            yield opening
            answer = PartialAnswer(opening.attempt)
            spec = endpoints.chat_completion_stream(body, extra_body=extra_body, extra_headers=extra_headers)
            chunks = AsyncChatCompletionStream(await self._client._open_stream(spec, options))
            try:
                async for chunk in chunks:
                    for event in answer.feed(chunk):
                        yield event
                completion = await chunks.get_final_completion()
            finally:
                await chunks.close()
            result = loop.feed(completion)
            if result is not None:
                yield done_event(result)
                return
        raise loop.failure()

    async def run_tools(self, *, model: str, messages: Sequence[MessageParam], tools: Sequence[Any],
                        max_steps: int = DEFAULT_MAX_STEPS, on_event: Callable[[ToolEvent], None] | None = None,
                        stream: bool = False,
                        extra_body: Mapping[str, Any] | None = None, extra_headers: Mapping[str, str] | None = None,
                        timeout: TimeoutLike = None, max_retries: int | None = None,
                        **params: Any) -> ToolRunResult:
        """Let Kimi call ``tools`` until it answers; a step's calls run concurrently (``asyncio.gather``).

        >>> run = await aclient.chat.completions.run_tools(model="kimi-k2.6", messages=msgs, tools=[get_weather])
        >>> run.content, run.steps, run.cost_cny
        """
        import asyncio

        from kimiflow.tool_loop import ToolLoop  # loaded on first use: keeps `import kimiflow` light

        loop = ToolLoop(model, messages, tools, params=params, max_steps=max_steps, on_event=on_event)
        options = CallOptions(self._client._config, timeout, max_retries)
        for body in loop.bodies():
            calls = loop.feed(await self._step(loop, body, stream, extra_body, extra_headers, options))
            if not calls:
                return loop.result()
            loop.deliver(list(await asyncio.gather(*(call.call_async() for call in calls))))
        raise loop.failure()

    async def _step(self, loop: ToolLoop, body: dict[str, Any], stream: bool, extra_body: Mapping[str, Any] | None,
                    extra_headers: Mapping[str, str] | None, options: CallOptions) -> ChatCompletion:
        if not stream:
            return await self._client._call(endpoints.chat_completion(body, extra_body=extra_body,
                                                                      extra_headers=extra_headers), options)
        spec = endpoints.chat_completion_stream(body, extra_body=extra_body, extra_headers=extra_headers)
        chunks = AsyncChatCompletionStream(await self._client._open_stream(spec, options))
        try:
            async for chunk in chunks:
                loop.feed_chunk(chunk)
            return await chunks.get_final_completion()
        finally:
            await chunks.close()


class AsyncChat:
    def __init__(self, client: AsyncSender) -> None:
        self.completions = AsyncCompletions(client)


class AsyncModels:
    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def list(self, *, timeout: TimeoutLike = None, max_retries: int | None = None) -> ModelList:
        return await self._client._call(endpoints.list_models(),
                                        CallOptions(self._client._config, timeout, max_retries))


class AsyncTokens:
    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    async def count(self, *, model: str, messages: Sequence[MessageParam], timeout: TimeoutLike = None,
                    max_retries: int | None = None) -> TokenCount:
        return await self._client._call(endpoints.count_tokens(model, messages),
                                        CallOptions(self._client._config, timeout, max_retries))


class AsyncFiles:
    def __init__(self, client: AsyncSender) -> None:
        self._client = client

    def _options(self, timeout: TimeoutLike, max_retries: int | None) -> CallOptions:
        return CallOptions(self._client._config, timeout, max_retries)

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

"""Streams of chat completion chunks, sync and async, and the ``stream()`` helper around them.

A stream always releases its connection: on normal end, on ``break`` (``close()`` from the
generator's cleanup), on exceptions and on garbage collection. It never hangs: an idle timeout
bounds the gap between events (keep-alive comments are not progress) and an optional total
deadline bounds the whole call. It never loses usage: the accumulator reads Kimi's usage from
inside the final choice as well as from a top-level ``usage`` trailer, counting it once.
Only ``data: [DONE]`` means complete (docs/kimi-api.md §4.1); a stream that ends without it raises
``IncompleteStreamError`` carrying the partial completion.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

import msgspec

from kimiflow.core.accumulate import ChatCompletionAccumulator
from kimiflow.core.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    DeadlineExceededError,
    IncompleteStreamError,
    StreamError,
    StreamIdleTimeoutError,
    redact,
)
from kimiflow.core.requests import request_id_of
from kimiflow.core.sse import DEFAULT_MAX_EVENT_SIZE, ServerSentEvent, SSEDecoder
from kimiflow.transport.base import AsyncStreamResponse, SyncStreamResponse
from kimiflow.types._base import decode, set_response_meta
from kimiflow.types.chat import ChatCompletion, ChatCompletionChunk
from kimiflow.types.errors import ErrorBody

T = TypeVar("T")

_DONE = "[DONE]"


class StreamState:
    """What sync and async streams share: parsing events into chunks, timing rules, the accumulator."""

    def __init__(
        self,
        *,
        idle_timeout: float,
        deadline: float | None,
        clock: Callable[[], float],
        request_id: str | None,
        attempts: int,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    ) -> None:
        self.max_event_size = max_event_size
        self.decoder = SSEDecoder(max_event_size)
        self.accumulator = ChatCompletionAccumulator()
        self.idle_timeout = idle_timeout
        self.deadline = deadline
        self.clock = clock
        self.request_id = request_id
        self.attempts = attempts
        self.last_progress = clock()
        self.done = False
        self.yielded = 0

    def check_time(self, progressed: bool) -> None:
        """Raise if the idle timeout or the deadline passed; ``progressed``: an event was dispatched.

        Only a whole event is progress: bytes of a line that never ends (or keep-alive comments)
        prove the connection lives, not that the answer moves.
        """
        now = self.clock()
        if progressed:
            self.last_progress = now
        elif now - self.last_progress > self.idle_timeout:
            raise StreamIdleTimeoutError(
                f"no stream event for {self.idle_timeout:g} s (stream idle timeout; keep-alive comments and "
                "unfinished lines do not count)",
                which="stream_idle", request_id=self.request_id, attempts=self.attempts,
            )
        if self.deadline is not None and now > self.deadline:
            raise DeadlineExceededError("the total deadline passed while streaming", which="total",
                                        request_id=self.request_id, attempts=self.attempts)

    def parse(self, event: ServerSentEvent) -> ChatCompletionChunk:
        data = event.data
        if event.event == "error" or data.startswith('{"error"'):
            raise self.error_event(data)
        try:
            chunk = decode(data, ChatCompletionChunk, keep_raw=False)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Scrub, then cut: a cut key would keep its first characters.
            raise StreamError(
                f"malformed stream chunk ({redact(str(exc))}): {redact(data[:4096])[:200]!r}", partial=self.partial(),
                request_id=self.request_id, attempts=self.attempts,
            ) from None
        if not chunk.choices and chunk.usage is None and not chunk.id:
            # Not a chunk at all: perhaps an error object in another spelling.
            try:
                generic = msgspec.json.decode(data)
            except msgspec.DecodeError:
                generic = None
            if isinstance(generic, dict) and "error" in generic:
                raise self.error_event(data)
        chunk._raw = data  # type: ignore[attr-defined]
        self.accumulator.add(chunk)
        self.yielded += 1
        return chunk

    def error_event(self, data: str) -> StreamError:
        message, error_type = redact(data[:4096])[:300], None
        try:
            body = decode(data, ErrorBody, keep_raw=False)
            message = redact(body.error.message)[:2000] if body.error.message else message
            error_type = redact(body.error.type) if body.error.type else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        return StreamError(f"the server reported an error mid-stream: {message}", type=error_type,
                           partial=self.partial(), request_id=self.request_id, attempts=self.attempts)

    def partial(self) -> ChatCompletion | None:
        return self.accumulator.completion() if self.yielded else None

    def retryable_before_data(self, exc: APIError) -> APIError | None:
        """The error to base a retry decision on, if the caller has seen nothing yet; else ``None``.

        Once a chunk has been yielded the caller may have acted on it, so a retry would duplicate
        output: then the failure is raised instead.
        """
        if self.yielded:
            return None
        if isinstance(exc, IncompleteStreamError):
            return APIConnectionError("the stream ended before any data arrived", request_id=self.request_id)
        if isinstance(exc, APIConnectionError):
            return exc
        return None

    def restart(self, request_id: str | None, attempts: int) -> None:
        """Start over on a fresh response (nothing was yielded from the previous one)."""
        self.decoder = SSEDecoder(self.max_event_size)
        self.accumulator = ChatCompletionAccumulator()
        self.last_progress = self.clock()
        self.request_id = request_id
        self.attempts = attempts

    def incomplete(self, reason: str = "") -> IncompleteStreamError:
        return IncompleteStreamError(
            f"the stream ended without data: [DONE]{reason}; the answer may be cut short (see .partial)",
            partial=self.partial(), request_id=self.request_id, attempts=self.attempts,
        )

    def failed(self, exc: APIError) -> APIError:
        """The error to raise for a failure after the stream started, with the partial answer attached.

        A dropped connection mid-stream is an incomplete stream: only ``[DONE]`` means complete.
        """
        if isinstance(exc, APIConnectionError) and not isinstance(exc, APITimeoutError):
            return self.incomplete(f" (the connection broke: {exc.message})")
        if exc.partial is None:
            exc.partial = self.partial()
        if exc.request_id is None:
            exc.request_id = self.request_id
        exc.attempts = self.attempts
        return exc


class Stream(Generic[T]):
    """An iterator of chunks that is also a context manager; always releases its connection.

    >>> for chunk in client.chat.completions.create(model="moonshot-v1-8k", messages=msgs, stream=True):
    ...     print(chunk.choices[0].delta.content or "", end="")
    """

    def __init__(self, response: SyncStreamResponse, state: StreamState,
                 reopen: Callable[[APIError], tuple[SyncStreamResponse, int] | None] | None = None) -> None:
        self._response = response
        self._state = state
        self._reopen = reopen
        self._closed = False
        self._iterator = self._iterate()

    @property
    def request_id(self) -> str | None:
        return self._state.request_id

    @property
    def accumulator(self) -> ChatCompletionAccumulator:
        return self._state.accumulator

    @property
    def attempts(self) -> int:
        """HTTP attempts it took to open this stream (1 = no retry)."""
        return self._state.attempts

    def _iterate(self) -> Iterator[ChatCompletionChunk]:
        state = self._state
        try:
            while True:
                try:
                    for raw in self._response.iter_raw():
                        events = state.decoder.feed(raw)
                        state.check_time(bool(events))
                        for event in events:
                            if event.data == _DONE:
                                state.done = True
                                return
                            yield state.parse(event)
                    raise state.incomplete()
                except APIError as exc:
                    basis = state.retryable_before_data(exc)
                    replacement = self._reopen(basis) if basis is not None and self._reopen else None
                    if replacement is None:
                        raise state.failed(exc) from None
                    self._response.close()
                    self._response = replacement[0]
                    state.restart(request_id_of(replacement[0].headers), replacement[1])
        finally:
            self.close()

    def __iter__(self) -> Iterator[T]:
        return self._iterator  # type: ignore[return-value]

    def __next__(self) -> T:
        return next(self._iterator)  # type: ignore[return-value]

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection (safe to call more than once)."""
        if not self._closed:
            self._closed = True
            self._response.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


class AsyncStream(Generic[T]):
    """An async iterator of chunks that is also an async context manager.

    >>> async for chunk in await aclient.chat.completions.create(..., stream=True):
    ...     print(chunk.choices[0].delta.content or "", end="")
    """

    def __init__(self, response: AsyncStreamResponse, state: StreamState,
                 reopen: Callable[[APIError], Awaitable[tuple[AsyncStreamResponse, int] | None]] | None = None,
                 ) -> None:
        self._response = response
        self._state = state
        self._reopen = reopen
        self._closed = False
        self._iterator = self._iterate()

    @property
    def request_id(self) -> str | None:
        return self._state.request_id

    @property
    def accumulator(self) -> ChatCompletionAccumulator:
        return self._state.accumulator

    @property
    def attempts(self) -> int:
        """HTTP attempts it took to open this stream (1 = no retry)."""
        return self._state.attempts

    async def _iterate(self) -> AsyncIterator[ChatCompletionChunk]:
        state = self._state
        try:
            while True:
                try:
                    async for raw in self._response.iter_raw():
                        events = state.decoder.feed(raw)
                        state.check_time(bool(events))
                        for event in events:
                            if event.data == _DONE:
                                state.done = True
                                return
                            yield state.parse(event)
                    raise state.incomplete()
                except APIError as exc:
                    basis = state.retryable_before_data(exc)
                    replacement = await self._reopen(basis) if basis is not None and self._reopen else None
                    if replacement is None:
                        raise state.failed(exc) from None
                    self._response.close()
                    self._response = replacement[0]
                    state.restart(request_id_of(replacement[0].headers), replacement[1])
        finally:
            self.close()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterator  # type: ignore[return-value]

    async def __anext__(self) -> T:
        return await self._iterator.__anext__()  # type: ignore[return-value]

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._response.close()

    async def aclose(self) -> None:
        """Stop the generator and release the connection."""
        self.close()
        await self._iterator.aclose()  # type: ignore[attr-defined]

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


class _HelperPieces:
    """Choice 0's text for the helper streams, split into reasoning and answer.

    ``reasoning_stream`` ends where the answer begins; the first answer piece it had to read is held
    so that ``text_stream`` starts with it instead of losing it.
    """

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: list[str] = []

    def reasoning(self, chunk: ChatCompletionChunk) -> tuple[list[str], bool]:
        """Reasoning pieces in ``chunk``, and whether the answer has begun."""
        pieces: list[str] = []
        answer_began = False
        for choice in chunk.choices:
            if choice.index == 0:
                if choice.delta.reasoning_content:
                    pieces.append(choice.delta.reasoning_content)
                if choice.delta.content:
                    self.held.append(choice.delta.content)
                    answer_began = True
        return pieces, answer_began

    def take_held(self) -> list[str]:
        held, self.held = self.held, []
        return held

    @staticmethod
    def text(chunk: ChatCompletionChunk) -> str | None:
        for choice in chunk.choices:
            if choice.index == 0 and choice.delta.content:
                return choice.delta.content
        return None


def _final(completion: ChatCompletion, request_id: str | None, attempts: int) -> ChatCompletion:
    set_response_meta(completion, request_id, attempts)
    return completion


class ChatCompletionStream:
    """The ``stream()`` helper: text as it arrives, then the whole accumulated completion.

    >>> with client.chat.completions.stream(model="kimi-k2-thinking", messages=msgs) as s:
    ...     for thought in s.reasoning_stream:     # thinking models: ends where the answer begins
    ...         print(thought, end="")
    ...     for text in s.text_stream:
    ...         print(text, end="")
    ...     final = s.get_final_completion()
    """

    def __init__(self, stream: Stream[ChatCompletionChunk]) -> None:
        self._stream = stream
        self._pieces = _HelperPieces()

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return iter(self._stream)

    @property
    def text_stream(self) -> Iterator[str]:
        """The answer (choice 0's content), piece by piece."""
        return self._text()

    @property
    def reasoning_stream(self) -> Iterator[str]:
        """Choice 0's ``reasoning_content`` (thinking models), piece by piece, up to where the answer begins."""
        return self._reasoning()

    def _text(self) -> Iterator[str]:
        yield from self._pieces.take_held()
        for chunk in self._stream:
            text = self._pieces.text(chunk)
            if text:
                yield text

    def _reasoning(self) -> Iterator[str]:
        for chunk in self._stream:
            pieces, answer_began = self._pieces.reasoning(chunk)
            yield from pieces
            if answer_began:
                return

    def until_done(self) -> ChatCompletionStream:
        for _ in self._stream:
            pass
        return self

    def get_final_completion(self) -> ChatCompletion:
        """Read the rest of the stream and return the accumulated completion (usage, request id included)."""
        self.until_done()
        return _final(self._stream.accumulator.completion(), self._stream.request_id, self._stream.attempts)

    @property
    def current_completion(self) -> ChatCompletion:
        """What has arrived so far, as a completion."""
        return self._stream.accumulator.completion()

    @property
    def request_id(self) -> str | None:
        return self._stream.request_id

    def close(self) -> None:
        self._stream.close()


class AsyncChatCompletionStream:
    """The async ``stream()`` helper; see ``ChatCompletionStream``.

    >>> async with aclient.chat.completions.stream(model="moonshot-v1-8k", messages=msgs) as s:
    ...     async for text in s.text_stream:
    ...         print(text, end="")
    ...     final = await s.get_final_completion()
    """

    def __init__(self, stream: AsyncStream[ChatCompletionChunk]) -> None:
        self._stream = stream
        self._pieces = _HelperPieces()

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self._stream.__aiter__()

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """The answer (choice 0's content), piece by piece: ``async for text in s.text_stream``."""
        return self._text()

    @property
    def reasoning_stream(self) -> AsyncIterator[str]:
        """Choice 0's ``reasoning_content``, piece by piece, up to where the answer begins."""
        return self._reasoning()

    async def _text(self) -> AsyncIterator[str]:
        for held in self._pieces.take_held():
            yield held
        async for chunk in self._stream:
            text = self._pieces.text(chunk)
            if text:
                yield text

    async def _reasoning(self) -> AsyncIterator[str]:
        async for chunk in self._stream:
            pieces, answer_began = self._pieces.reasoning(chunk)
            for piece in pieces:
                yield piece
            if answer_began:
                return

    async def until_done(self) -> AsyncChatCompletionStream:
        async for _ in self._stream:
            pass
        return self

    async def get_final_completion(self) -> ChatCompletion:
        await self.until_done()
        return _final(self._stream.accumulator.completion(), self._stream.request_id, self._stream.attempts)

    @property
    def current_completion(self) -> ChatCompletion:
        return self._stream.accumulator.completion()

    @property
    def request_id(self) -> str | None:
        return self._stream.request_id

    async def close(self) -> None:
        await self._stream.aclose()


class StreamManager(Generic[T]):
    """Context manager returned by ``chat.completions.stream()``: opens on enter, closes on exit."""

    def __init__(self, opener: Callable[[], T], closer: Callable[[T], None]) -> None:
        self._opener = opener
        self._closer = closer
        self._value: T | None = None

    def __enter__(self) -> T:
        self._value = self._opener()
        return self._value

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._value is not None:
            self._closer(self._value)


class AsyncStreamManager(Generic[T]):
    """Async context manager returned by ``AsyncKimi``'s ``chat.completions.stream()``."""

    def __init__(self, opener: Callable[[], Awaitable[T]], closer: Callable[[T], Awaitable[None]]) -> None:
        self._opener = opener
        self._closer = closer
        self._value: T | None = None

    async def __aenter__(self) -> T:
        self._value = await self._opener()
        return self._value

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._value is not None:
            await self._closer(self._value)

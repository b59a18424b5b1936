"""The re-ask loop behind ``chat.completions.parse()``, sans I/O: bodies out, completions in.

Both clients drive it the same way::

    loop = ParseLoop(model, messages, Ticket, max_validation_retries=2)
    for body in loop.bodies():                  # at most max_validation_retries + 1 bodies
        result = loop.feed(send(body))          # send: the client's call, with its own HTTP retries
        if result is not None:
            return result
    raise loop.failure()

Only a validation failure is re-asked (the invalid answer, with its ``reasoning_content``, and the
errors by JSON path go back to the model). Transport, rate-limit and quota errors never reach the
loop: they are the client's, retried (or not) by its normal rules, and never enter the prompt.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.partial_json import PartialJSON, PartialJSONError
from kimiflow.structured import (
    DEFAULT_MAX_VALIDATION_RETRIES,
    STRUCTURED_MODES,
    AnswerBudgetExceededError,
    AnswerValidationError,
    FieldError,
    StructuredAnswerError,
    StructuredMode,
    TruncatedAnswerError,
    build_parse_request,
    parse_answer,
    reask_messages,
)
from kimiflow.types._base import response_meta, set_response_meta
from kimiflow.types.chat import ChatCompletion, ChatCompletionChunk, CompletionTokensDetails, Usage
from kimiflow.types.parsed import ParsedChatCompletion, ParseStreamEvent, parsed_from

logger = logging.getLogger("kimiflow")

_RESERVED = ("stream", "response_format", "model", "messages")

T = TypeVar("T")


def sum_usage(usages: Sequence[Usage | None]) -> Usage:
    """The token counts of several completions added up (cached and reasoning tokens included)."""
    total = Usage()
    cached = reasoning = 0
    saw_cached = saw_reasoning = False
    for usage in usages:
        if usage is None:
            continue
        total.prompt_tokens += usage.prompt_tokens
        total.completion_tokens += usage.completion_tokens
        total.total_tokens += usage.total_tokens
        if usage.cached_tokens is not None or usage.prompt_tokens_details is not None:
            saw_cached, cached = True, cached + usage.cached
        details = usage.completion_tokens_details
        if details is not None and details.reasoning_tokens is not None:
            saw_reasoning, reasoning = True, reasoning + details.reasoning_tokens
    if saw_cached:
        total.cached_tokens = cached
    if saw_reasoning:
        total.completion_tokens_details = CompletionTokensDetails(reasoning_tokens=reasoning)
    return total


def _check_count(name: str, value: object, minimum: int, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}; e.g. {name}={example}")


class ParseLoop:
    """One ``parse()`` call's state: the conversation so far, the attempts and their usage."""

    def __init__(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        target: Any,
        *,
        params: Mapping[str, Any] | None = None,
        max_validation_retries: int = DEFAULT_MAX_VALIDATION_RETRIES,
        token_budget: int | None = None,
        structured_mode: StructuredMode | None = None,
        modes: Sequence[tuple[str, StructuredMode]] = STRUCTURED_MODES,
    ) -> None:
        _check_count("max_validation_retries", max_validation_retries, 0, "2")
        if token_budget is not None:
            _check_count("token_budget", token_budget, 1, "20000")
        extra = dict(params or {})
        for name in _RESERVED:
            if name in extra:
                hint = "use chat.completions.parse_stream() for streaming" if name == "stream" else "pass it once"
                raise InvalidArgumentError(f"parse() does not take {name!r} among its extra parameters; {hint}")
        self.request = build_parse_request(model, messages, target, mode=structured_mode, modes=modes)
        self.max_attempts = max_validation_retries + 1
        self.token_budget = token_budget
        self.completions: list[ChatCompletion] = []
        self._params = extra
        self._messages = self.request.messages
        self._last_error: AnswerValidationError | None = None
        self._over_budget = False

    @property
    def last_error(self) -> AnswerValidationError | None:
        """Why the previous answer was rejected (``None`` before the first re-ask)."""
        return self._last_error

    @property
    def usage(self) -> Usage:
        """Tokens used so far, over every attempt."""
        return sum_usage([c.usage for c in self.completions])

    def bodies(self) -> Iterator[dict[str, Any]]:
        """The request body of each attempt; ends after the last allowed one or when over budget."""
        for _ in range(self.max_attempts):
            if self._over_budget:
                return
            yield {
                "model": self.request.model,
                "messages": self._messages,
                "response_format": self.request.response_format,
                **self._params,
            }

    def feed(self, completion: ChatCompletion) -> ParsedChatCompletion[Any] | None:
        """The validated completion, or ``None`` when another attempt is due (or ``failure()`` is next).

        Raises ``TruncatedAnswerError`` at once: a larger ``max_tokens`` fixes it, a re-ask does not.
        """
        self.completions.append(completion)
        if not completion.choices:
            self._reject(AnswerValidationError(self.request.name, [FieldError("$", "the response has no choices")],
                                               None), {"content": None})  # fmt: skip
            return None
        values: list[Any] = []
        for choice in completion.choices:
            answer = {"content": choice.message.content, "reasoning_content": choice.message.reasoning_content}
            try:
                values.append(parse_answer(self.request.target, answer, choice.finish_reason))
            except TruncatedAnswerError as exc:
                exc.completion = completion
                raise self._with_cost(exc) from None
            except AnswerValidationError as exc:
                self._reject(exc, answer)
                return None
        result = parsed_from(completion)
        for parsed_choice, value in zip(result.choices, values, strict=True):
            parsed_choice.message._parsed = value  # type: ignore[attr-defined]  # read by .parsed
        result.usage = self.usage
        result._attempts = list(self.completions)  # type: ignore[attr-defined]  # read by .attempt_completions
        meta = response_meta(completion)
        set_response_meta(result, meta.request_id, meta.attempts)
        return result

    def _reject(self, error: AnswerValidationError, answer: Mapping[str, Any]) -> None:
        self._last_error = error
        attempt = len(self.completions)
        # Paths and rules only: the answer itself stays out of logs.
        logger.info("parse attempt %d of %d: %s", attempt, self.max_attempts, error)
        spent = self.usage.total_tokens
        if self.token_budget is not None and spent >= self.token_budget:
            self._over_budget = True
        elif attempt < self.max_attempts:
            self._messages = reask_messages(self._messages, answer, error)

    def failure(self) -> StructuredAnswerError:
        """The error to raise once ``bodies()`` is exhausted without a valid answer, with the total cost."""
        last = self._last_error or AnswerValidationError(
            self.request.name, [FieldError("$", "no attempt was made")], None
        )
        if self._over_budget:
            error: StructuredAnswerError = AnswerBudgetExceededError(
                f"no valid {self.request.name} within token_budget={self.token_budget}: "
                f"{len(self.completions)} attempt(s) used {self.usage.total_tokens} tokens; last error: {last}",
                last,
            )
        else:
            error = last
            if self.max_attempts > 1:
                error.args = (f"{last} (after {len(self.completions)} attempts; raise max_validation_retries "
                              "or simplify the type)",)  # fmt: skip
        return self._with_cost(error)

    def _with_cost(self, error: StructuredAnswerError) -> StructuredAnswerError:
        error.usage = self.usage
        error.completions = list(self.completions)
        return error


class PartialAnswer:
    """One streamed attempt of ``parse_stream()``: chunks in, events with the partial object out.

    Choice 0's answer goes through an incremental ``PartialJSON``, so each chunk costs about its
    own length. Text that is not JSON stops the partial object where it was (the deltas still
    come); the whole answer is then validated, and re-asked, as ``parse()`` does.
    """

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt
        self._parser: PartialJSON | None = PartialJSON()
        self._partial: Any = None

    def feed(self, chunk: ChatCompletionChunk) -> list[ParseStreamEvent[Any]]:
        """The events one chunk makes: its reasoning piece, then its answer piece (choice 0 only)."""
        events: list[ParseStreamEvent[Any]] = []
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.reasoning_content:
                events.append(ParseStreamEvent("reasoning", self.attempt, delta.reasoning_content, self._partial))
            if delta.content:
                if self._parser is not None:
                    try:
                        self._partial = self._parser.feed(delta.content)
                    except PartialJSONError:
                        self._parser = None  # not JSON: the validation of the whole answer says why
                events.append(ParseStreamEvent("content", self.attempt, delta.content, self._partial))
        return events


def attempt_event(loop: ParseLoop) -> ParseStreamEvent[Any]:
    """The event that opens the next attempt of ``loop`` (carrying the error that caused a re-ask)."""
    return ParseStreamEvent("attempt", len(loop.completions) + 1, error=loop.last_error)


def done_event(result: ParsedChatCompletion[Any]) -> ParseStreamEvent[Any]:
    """The last event: the validated completion and choice 0's object."""
    parsed = result.choices[0].message.parsed if result.choices else None
    return ParseStreamEvent("done", len(result.attempt_completions), parsed=parsed, completion=result)


class ParseStream(Generic[T]):
    """What ``chat.completions.parse_stream()`` opens: an iterator of ``ParseStreamEvent``.

    >>> with client.chat.completions.parse_stream(model="kimi-k2.6", messages=msgs,
    ...                                           response_format=Ticket) as stream:
    ...     for event in stream:
    ...         if event.kind == "content":
    ...             render(event.partial)
    ...     ticket = stream.get_final_completion().choices[0].message.parsed

    Iterating raises what ``parse()`` raises (``AnswerValidationError`` once the re-asks are
    spent, ``TruncatedAnswerError``, ``AnswerBudgetExceededError``, HTTP errors).
    """

    def __init__(self, events: Generator[ParseStreamEvent[T], None, None]) -> None:
        self._events = events
        self._final: ParsedChatCompletion[T] | None = None

    def __iter__(self) -> Iterator[ParseStreamEvent[T]]:
        return self

    def __next__(self) -> ParseStreamEvent[T]:
        event = next(self._events)
        if event.kind == "done":
            self._final = event.completion
        return event

    def __enter__(self) -> ParseStream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def until_done(self) -> ParseStream[T]:
        """Read the remaining events."""
        for _ in self:
            pass
        return self

    def get_final_completion(self) -> ParsedChatCompletion[T]:
        """Read the rest and return the validated completion (as ``parse()`` would have)."""
        self.until_done()
        if self._final is None:
            raise StructuredAnswerError("the parse stream was closed before its answer was complete")
        return self._final

    def close(self) -> None:
        """Stop: the open HTTP stream, if any, is closed."""
        self._events.close()


class AsyncParseStream(Generic[T]):
    """The ``AsyncKimi`` twin of ``ParseStream``: ``async with`` / ``async for``."""

    def __init__(self, events: AsyncGenerator[ParseStreamEvent[T], None]) -> None:
        self._events = events
        self._final: ParsedChatCompletion[T] | None = None

    def __aiter__(self) -> AsyncIterator[ParseStreamEvent[T]]:
        return self

    async def __anext__(self) -> ParseStreamEvent[T]:
        event = await self._events.__anext__()
        if event.kind == "done":
            self._final = event.completion
        return event

    async def __aenter__(self) -> AsyncParseStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def until_done(self) -> AsyncParseStream[T]:
        """Read the remaining events."""
        async for _ in self:
            pass
        return self

    async def get_final_completion(self) -> ParsedChatCompletion[T]:
        """Read the rest and return the validated completion (as ``parse()`` would have)."""
        await self.until_done()
        if self._final is None:
            raise StructuredAnswerError("the parse stream was closed before its answer was complete")
        return self._final

    async def close(self) -> None:
        """Stop: the open HTTP stream, if any, is closed."""
        await self._events.aclose()

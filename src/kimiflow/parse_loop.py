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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kimiflow.core.errors import InvalidArgumentError
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
from kimiflow.types.chat import ChatCompletion, CompletionTokensDetails, Usage
from kimiflow.types.parsed import ParsedChatCompletion, parsed_from

logger = logging.getLogger("kimiflow")

_RESERVED = ("stream", "response_format", "model", "messages")


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
                hint = "use chat.completions.stream() for streaming" if name == "stream" else "pass it once"
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

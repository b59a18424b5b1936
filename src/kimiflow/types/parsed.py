"""The completion ``parse()`` returns: the wire completion plus each choice's validated object.

``parsed`` is a property over an attribute set by the parse loop, not a struct field, so the
object still encodes (``to_dict()``, ``to_json()``) as the server's completion, whatever ``T`` is.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Generic, Literal, TypeVar

import msgspec

from kimiflow.types.chat import ChatCompletion, ChatCompletionMessage, Choice

T = TypeVar("T")


class ParsedChatCompletionMessage(ChatCompletionMessage, Generic[T]):
    """The assistant's message with ``parsed``: its content validated as the requested type."""

    @property
    def parsed(self) -> T:
        """The answer as the requested type (a ``dict`` for a JSON Schema dict)."""
        value: T = getattr(self, "_parsed", None)  # type: ignore[assignment]  # set by the parse loop
        return value


class ParsedChoice(Choice, Generic[T]):
    message: ParsedChatCompletionMessage[T] = msgspec.field(default_factory=ParsedChatCompletionMessage)


class ParsedChatCompletion(ChatCompletion, Generic[T]):
    """What ``client.chat.completions.parse()`` returns.

    ``choices[i].message.parsed`` is the validated object; ``usage`` is the total over every
    attempt (re-asks included); ``attempt_completions`` holds each attempt's own completion, with
    its own usage. ``to_dict()`` / ``to_json()`` give the last response as the server sent it.

    >>> resp = client.chat.completions.parse(model="kimi-k2.6", messages=msgs, response_format=Ticket)
    >>> resp.choices[0].message.parsed, resp.usage.total_tokens, len(resp.attempt_completions)
    """

    choices: list[ParsedChoice[T]] = []  # type: ignore[assignment]  # the same wire shape, narrower items

    @property
    def attempt_completions(self) -> list[ChatCompletion]:
        """Every attempt's completion in order (the last is this one's server response)."""
        value: list[ChatCompletion] = getattr(self, "_attempts", [])
        return value


def parsed_from(completion: ChatCompletion) -> ParsedChatCompletion[Any]:
    """``completion`` as a ``ParsedChatCompletion`` (no ``parsed`` values yet), raw bytes kept."""
    raw = getattr(completion, "_raw", None)
    data = bytes(raw) if raw is not None else msgspec.json.encode(completion)
    out: ParsedChatCompletion[Any] = msgspec.json.decode(data, type=ParsedChatCompletion[Any], strict=False)
    out._raw = data  # type: ignore[attr-defined]  # dict=True structs take extra attrs
    return out


ParseEventKind = Literal["attempt", "reasoning", "content", "done"]


@dataclasses.dataclass
class ParseStreamEvent(Generic[T]):
    """One event of ``chat.completions.parse_stream()``.

    - ``"attempt"``: an attempt begins (``attempt`` counts from 1); from the second one on, ``error``
      is the validation error of the previous answer that caused the re-ask, and the partial object
      starts again from nothing.
    - ``"reasoning"``: ``delta`` is the next piece of choice 0's ``reasoning_content``.
    - ``"content"``: ``delta`` is the next piece of choice 0's answer; ``partial`` is the object
      parsed from the answer so far (dicts and lists with their complete members, an unfinished
      string as its prefix; ``None`` before anything is complete).
    - ``"done"``: ``completion`` is the validated ``ParsedChatCompletion`` (usage summed over every
      attempt) and ``parsed`` its choice 0's object, the requested type.

    ``partial`` is the parser's live object, not a copy: later events keep filling it, so reading
    it costs nothing per chunk. Call ``snapshot()`` for a copy that stays as it is.
    """

    kind: ParseEventKind
    attempt: int
    delta: str = ""
    partial: Any = None
    parsed: T | None = None
    completion: ParsedChatCompletion[T] | None = None
    error: Exception | None = None

    def snapshot(self) -> Any:
        """A deep copy of ``partial`` that later events do not change."""
        return copy.deepcopy(self.partial)

"""Stream accumulation: chat completion chunks in, one ``ChatCompletion`` out.

The same accumulator serves the sync and async ``stream()`` helpers, the CLI and the batch runner,
so the merging rules live in exactly one place (docs/kimi-api.md §4.2–4.3):

- chunks are routed by ``choices[i].index`` (``n > 1`` streams interleave choices);
- ``content`` and ``reasoning_content`` are concatenated; ``content`` is ``""`` when none was sent
  (as in a non-streaming tool-call turn), ``reasoning_content`` stays ``None`` if never sent;
- ``role`` comes from the first delta that carries one;
- tool-call fragments merge by their ``index``: ``id``, ``type`` and ``function.name`` from the
  first fragment that has them, ``function.arguments`` concatenated;
- ``finish_reason`` is taken from the chunk that sets it;
- usage: a top-level ``chunk.usage`` (the ``include_usage`` trailer) wins; otherwise Kimi's usage
  inside each choice's final chunk is used. The trailer repeats the choice-level numbers, so the
  two are never added together.

Per-chunk work is a handful of attribute reads and list appends; strings are joined only when
:meth:`ChatCompletionAccumulator.completion` is called.
"""

from __future__ import annotations

from typing import Any

import msgspec

from kimiflow.types import ChatCompletion, ChatCompletionChunk, ChoiceDeltaToolCall, Usage, decode

__all__ = ["ChatCompletionAccumulator", "combine_choice_usage"]


class _ToolCallParts:
    """One tool call being assembled from its fragments."""

    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []


class _ChoiceParts:
    """Everything seen so far for one choice index."""

    __slots__ = ("content", "finish_reason", "reasoning", "role", "tool_calls", "usage")

    def __init__(self) -> None:
        self.role: str | None = None
        self.content: list[str] = []
        self.reasoning: list[str] | None = None  # None = the server never sent reasoning_content
        self.tool_calls: dict[int, _ToolCallParts] | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None


def combine_choice_usage(usages: list[Usage]) -> Usage | None:
    """Usage of a whole request from the per-choice usage Kimi puts in each choice's final chunk.

    With ``n > 1`` every choice reports the same ``prompt_tokens`` (and ``cached_tokens``): the
    prompt is processed once and billed once, so it is counted once. ``completion_tokens`` (and
    ``reasoning_tokens``) are per choice and are summed. ``total_tokens`` is then
    ``prompt + completion``, which is what a non-streaming ``n > 1`` response reports.

    >>> combine_choice_usage([Usage(prompt_tokens=19, completion_tokens=13, total_tokens=32)]).total_tokens
    32
    """
    if not usages:
        return None
    if len(usages) == 1:
        return usages[0]
    prompt = max(u.prompt_tokens for u in usages)
    completion = sum(u.completion_tokens for u in usages)
    cached = [u.cached_tokens for u in usages if u.cached_tokens is not None]
    prompt_details = next((u.prompt_tokens_details for u in usages if u.prompt_tokens_details), None)
    reasoning = [
        u.completion_tokens_details.reasoning_tokens
        for u in usages
        if u.completion_tokens_details is not None and u.completion_tokens_details.reasoning_tokens is not None
    ]
    combined: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        combined["cached_tokens"] = max(cached)
    if prompt_details is not None:
        combined["prompt_tokens_details"] = msgspec.to_builtins(prompt_details)
    if reasoning:
        combined["completion_tokens_details"] = {"reasoning_tokens": sum(reasoning)}
    return msgspec.convert(combined, Usage)


class ChatCompletionAccumulator:
    """Chunks in, final ChatCompletion out. One accumulator serves sync, async, CLI and batch.

    Call :meth:`add` with every chunk in stream order; :meth:`completion` returns what has been
    accumulated so far, also mid-stream (that is how a cut stream's partial result is attached to
    its error).

    >>> acc = ChatCompletionAccumulator()
    >>> for chunk in client.chat.completions.create(..., stream=True):
    ...     acc.add(chunk)
    >>> final = acc.completion()
    >>> final.choices[0].message.content, final.usage.total_tokens
    """

    __slots__ = ("_choices", "_created", "_fingerprint", "_id", "_model", "_top_usage")

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceParts] = {}
        self._id = ""
        self._model = ""
        self._created = 0
        self._fingerprint: str | None = None
        self._top_usage: Usage | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        """Merge one chunk into the accumulated completion."""
        if not self._id:
            # Every chunk of a stream repeats the same metadata; take it once.
            self._id = chunk.id
            self._model = chunk.model
            self._created = chunk.created
        if self._fingerprint is None and chunk.system_fingerprint is not None:
            self._fingerprint = chunk.system_fingerprint
        if chunk.usage is not None:
            self._top_usage = chunk.usage
        choices = self._choices
        for choice in chunk.choices:
            parts = choices.get(choice.index)
            if parts is None:
                parts = choices[choice.index] = _ChoiceParts()
            delta = choice.delta
            content = delta.content
            if content:
                parts.content.append(content)
            reasoning = delta.reasoning_content
            if reasoning is not None:
                if parts.reasoning is None:
                    parts.reasoning = [reasoning]
                else:
                    parts.reasoning.append(reasoning)
            if delta.tool_calls:
                _merge_tool_calls(parts, delta.tool_calls)
            if parts.role is None and delta.role:
                parts.role = delta.role
            if choice.finish_reason is not None:
                parts.finish_reason = choice.finish_reason
            if choice.usage is not None:
                parts.usage = choice.usage

    @property
    def usage(self) -> Usage | None:
        """The stream's usage: the top-level usage if any chunk carried one, else the choices' own.

        ``None`` until a usage-bearing chunk has arrived (normally the last one or two).
        """
        if self._top_usage is not None:
            return self._top_usage
        return combine_choice_usage(
            [parts.usage for _, parts in sorted(self._choices.items()) if parts.usage is not None]
        )

    @property
    def finished(self) -> bool:
        """True when at least one choice was seen and every seen choice has a ``finish_reason``.

        This is not proof of a complete stream — only ``data: [DONE]`` is (docs/kimi-api.md §4.1).
        """
        choices = self._choices
        return bool(choices) and all(parts.finish_reason is not None for parts in choices.values())

    @property
    def text(self) -> str:
        """The content of choice 0 accumulated so far (``""`` if none)."""
        parts = self._choices.get(0)
        return "".join(parts.content) if parts is not None else ""

    def completion(self) -> ChatCompletion:
        """The accumulated completion so far, shaped like a non-streaming response.

        Built as the JSON a non-streaming request would have returned and decoded like one, so
        ``to_dict()`` gives the full wire shape. Costs time proportional to the stream so far;
        call it at the end (or once, on error), not per chunk.
        """
        choices_json: list[dict[str, Any]] = []
        for index, parts in sorted(self._choices.items()):
            message: dict[str, Any] = {"role": parts.role or "assistant", "content": "".join(parts.content)}
            if parts.reasoning is not None:
                message["reasoning_content"] = "".join(parts.reasoning)
            if parts.tool_calls:
                message["tool_calls"] = [
                    {
                        "index": call_index,
                        "id": call.id or "",
                        "type": call.type or "function",
                        "function": {"name": call.name or "", "arguments": "".join(call.arguments)},
                    }
                    for call_index, call in sorted(parts.tool_calls.items())
                ]
            choice: dict[str, Any] = {"index": index, "message": message, "finish_reason": parts.finish_reason}
            if parts.usage is not None:
                # Kept per choice: with n > 1 it is the only place a choice's own token count lives.
                choice["usage"] = parts.usage
            choices_json.append(choice)
        body: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion",
            "created": self._created,
            "model": self._model,
            "choices": choices_json,
        }
        usage = self.usage
        if usage is not None:
            body["usage"] = usage
        if self._fingerprint is not None:
            body["system_fingerprint"] = self._fingerprint
        return decode(msgspec.json.encode(body), ChatCompletion)


def _merge_tool_calls(parts: _ChoiceParts, fragments: list[ChoiceDeltaToolCall]) -> None:
    calls = parts.tool_calls
    if calls is None:
        calls = parts.tool_calls = {}
    for fragment in fragments:
        call = calls.get(fragment.index)
        if call is None:
            call = calls[fragment.index] = _ToolCallParts()
        if call.id is None and fragment.id:
            call.id = fragment.id
        if call.type is None and fragment.type:
            call.type = fragment.type
        function = fragment.function
        if function is not None:
            if call.name is None and function.name:
                call.name = function.name
            if function.arguments:
                call.arguments.append(function.arguments)

"""Chat completion wire types: responses, stream chunks, usage, tool calls.

Shapes follow docs/kimi-api.md §3–4, including Kimi's differences from OpenAI: ``usage`` inside the
final choice of a stream, ``cached_tokens`` at the top level of ``usage``, ``index`` on
non-streaming tool calls, and ``reasoning_content`` on thinking models.
"""

from __future__ import annotations

from typing import Any

import msgspec

from kimiflow.types._base import WireModel, response_meta


class FunctionCall(WireModel):
    """The function a tool call invokes; ``arguments`` is a JSON string."""

    name: str = ""
    arguments: str = ""


class ToolCall(WireModel):
    """A complete tool call in a message. Kimi ids look like ``search:0`` and are turn-scoped."""

    id: str = ""
    type: str = "function"
    function: FunctionCall = msgspec.field(default_factory=FunctionCall)
    index: int | None = None


class PromptTokensDetails(WireModel):
    cached_tokens: int | None = None


class CompletionTokensDetails(WireModel):
    reasoning_tokens: int | None = None


class Usage(WireModel):
    """Token usage. Kimi reports ``cached_tokens`` at the top level (and, since 2026, also nested)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None

    @property
    def cached(self) -> int:
        """Cached prompt tokens, whichever spelling the server used."""
        if self.cached_tokens is not None:
            return self.cached_tokens
        details = self.prompt_tokens_details
        if details is not None and details.cached_tokens is not None:
            return details.cached_tokens
        return 0


class ChatCompletionMessage(WireModel):
    """The assistant's message: ``content`` (``""`` for a tool-call-only turn), reasoning, tool calls."""

    role: str = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None


class Choice(WireModel):
    index: int = 0
    message: ChatCompletionMessage = msgspec.field(default_factory=ChatCompletionMessage)
    finish_reason: str | None = None
    logprobs: Any = None
    usage: Usage | None = None


class ChatCompletion(WireModel):
    """A non-streaming chat completion.

    >>> resp = client.chat.completions.create(model="moonshot-v1-8k", messages=[...])
    >>> resp.choices[0].message.content, resp.usage.total_tokens, resp.request_id
    """

    id: str = ""
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice] = []
    usage: Usage | None = None
    system_fingerprint: str | None = None

    @property
    def request_id(self) -> str | None:
        """The ``Msh-Request-Id`` header of the response that carried this object."""
        return response_meta(self).request_id

    @property
    def attempts(self) -> int:
        """How many HTTP attempts it took to get this response (1 = no retry)."""
        return response_meta(self).attempts


class ChoiceDeltaFunction(WireModel):
    name: str | None = None
    arguments: str | None = None


class ChoiceDeltaToolCall(WireModel):
    """A tool-call fragment in a stream; fragments of one call share ``index``."""

    index: int = 0
    id: str | None = None
    type: str | None = None
    function: ChoiceDeltaFunction | None = None


class ChoiceDelta(WireModel):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None


class ChunkChoice(WireModel):
    """One choice in a stream chunk. Kimi puts ``usage`` here on the final chunk of each choice."""

    index: int = 0
    delta: ChoiceDelta = msgspec.field(default_factory=ChoiceDelta)
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: Any = None


class ChatCompletionChunk(WireModel):
    """One ``data:`` event of a streamed chat completion."""

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = []
    usage: Usage | None = None
    system_fingerprint: str | None = None

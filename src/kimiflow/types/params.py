"""Request parameters as TypedDicts: plain dicts work, type checkers still help (docs/kimi-api.md §2)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict, Union

from typing_extensions import NotRequired, Required


class TextPart(TypedDict):
    type: Literal["text"]
    text: str


class ImageURL(TypedDict):
    url: str


class ImagePart(TypedDict):
    type: Literal["image_url"]
    image_url: ImageURL | str


class VideoPart(TypedDict):
    type: Literal["video_url"]
    video_url: ImageURL | str


ContentPart = Union[TextPart, ImagePart, VideoPart]


class FunctionCallParam(TypedDict):
    name: str
    arguments: str


class ToolCallParam(TypedDict, total=False):
    id: Required[str]
    type: str
    function: Required[FunctionCallParam]
    index: int


class MessageParam(TypedDict, total=False):
    """A chat message. ``partial=True`` on a final assistant message enables Partial Mode."""

    role: Required[Literal["system", "user", "assistant", "tool", "cache"]]
    content: str | list[ContentPart] | None
    name: str
    partial: bool
    tool_calls: list[ToolCallParam]
    tool_call_id: str
    reasoning_content: str


class FunctionDefinition(TypedDict, total=False):
    name: Required[str]
    description: str
    parameters: dict[str, Any]
    strict: bool


class ToolParam(TypedDict, total=False):
    """``{"type": "function", "function": {...}}`` or the ``$web_search`` builtin."""

    type: Required[Literal["function", "builtin_function"]]
    function: Required[FunctionDefinition]


class ResponseFormat(TypedDict, total=False):
    type: Required[Literal["text", "json_object", "json_schema"]]
    json_schema: dict[str, Any]


class StreamOptions(TypedDict, total=False):
    include_usage: bool


class ThinkingParam(TypedDict, total=False):
    type: Required[Literal["enabled", "disabled"]]
    keep: Literal["all"] | None


WEB_SEARCH_TOOL: ToolParam = {"type": "builtin_function", "function": {"name": "$web_search"}}
"""Kimi's built-in web search tool, ready to put in ``tools=[...]``."""


class ChatCompletionOptions(TypedDict, total=False):
    """Every optional chat-completion parameter of docs/kimi-api.md §2.1 (all may be omitted)."""

    max_tokens: int
    max_completion_tokens: int
    temperature: float
    top_p: float
    n: int
    presence_penalty: float
    frequency_penalty: float
    stop: str | list[str]
    stream_options: StreamOptions
    response_format: ResponseFormat
    tools: list[ToolParam]
    tool_choice: str | dict[str, Any] | None
    thinking: ThinkingParam
    prompt_cache_key: str
    safety_identifier: str
    seed: int
    logprobs: bool
    top_logprobs: int
    user: NotRequired[str]


class ChatCompletionCreateParams(ChatCompletionOptions, total=False):
    """A whole chat-completion request body, as a plain dict."""

    model: Required[str]
    messages: Required[list[MessageParam]]

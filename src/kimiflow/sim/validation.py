"""Validating a chat-completion request the way Kimi does (docs/kimi-api.md §2.1, §2.2, §5).

The output is a ``ChatRequest`` with every parameter resolved, so generation never re-checks input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import msgspec

from kimiflow.core.catalog import ModelInfo, model_info
from kimiflow.core.tokens import estimate_message_tokens
from kimiflow.sim import errors
from kimiflow.sim.rules import (
    check_conversation,
    check_fixed_sampling,
    check_tool_choice,
    check_tool_name,
    check_tools_allowed,
    fixed_temperature,
    resolve_thinking,
)
from kimiflow.sim.structured import schema_error

if TYPE_CHECKING:
    from kimiflow.sim.config import SimConfig

_ROLES = frozenset({"system", "user", "assistant", "tool", "cache"})
_decoder = msgspec.json.Decoder()


@dataclass(frozen=True)
class ToolSpec:
    """A declared tool: a function (name + JSON-schema parameters) or the ``$web_search`` builtin."""

    name: str
    builtin: bool
    parameters: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completion request.

    ``model`` is the catalog entry as this request runs it: its ``reasoning`` is whether thinking is
    on for this request (``thinking: {"type": "disabled"}`` on kimi-k2.6 turns it off), so everything
    downstream emits ``reasoning_content`` exactly when Kimi would.
    """

    model: ModelInfo
    messages: list[dict[str, Any]]
    prompt_tokens: int
    max_tokens: int | None
    n: int
    stream: bool
    include_usage: bool
    stop: list[str]
    tools: list[ToolSpec]
    tool_choice: Any
    response_format: dict[str, Any] | None = None
    """A ``json_object`` or ``json_schema`` format (its schema checked as MFJS); None for text."""
    keep_all_reasoning: bool = False
    """``thinking.keep == "all"`` on a model that accepts it (preserved thinking)."""
    cached_tokens: int | None = None
    """Prompt tokens served from the automatic prefix cache; None on a model without one (set by the chat endpoint)."""

    def with_counts(self, *, prompt_tokens: int | None = None, cached_tokens: int | None = None) -> ChatRequest:
        """A copy with the endpoint's token counts set: much cheaper than ``dataclasses.replace`` (which re-runs
        ``__init__``) or ``copy.copy``, both of which sat on every request's path (``bench/bench_sim.py --against``)."""
        clone = object.__new__(ChatRequest)
        clone.__dict__.update(self.__dict__)  # what copy.copy does, without its protocol lookups
        if prompt_tokens is not None:
            object.__setattr__(clone, "prompt_tokens", prompt_tokens)
        if cached_tokens is not None:
            object.__setattr__(clone, "cached_tokens", cached_tokens)
        return clone

    @property
    def thinking(self) -> bool:
        """Whether this request reasons before it answers."""
        return self.model.reasoning


def decode_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or 400 "Invalid request: ..." saying why not."""
    if not body:
        raise errors.invalid_request("the request body is empty; send a JSON object")
    try:
        data = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise errors.invalid_request(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise errors.invalid_request("the request body must be a JSON object")
    return data


def resolve_model(data: dict[str, Any], catalog: str = "full") -> ModelInfo:
    """The catalog entry for ``data["model"]``: 400 when missing, 404 when unknown, or retired when
    ``catalog`` is ``"online"``."""
    model = data.get("model")
    if model is None or model == "":
        raise errors.invalid_request("model is required")
    if not isinstance(model, str):
        raise errors.invalid_request("model must be a string")
    info = model_info(model)
    if info is None or (catalog == "online" and not info.online_2026):
        raise errors.model_not_found(model)
    return info


def _content_is_empty(content: Any) -> bool:
    if content is None:
        return True
    if isinstance(content, str):
        return content == ""
    if isinstance(content, list):
        return len(content) == 0
    return False


def validate_messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    """``data["messages"]`` checked for shape, roles and non-empty content."""
    return _validate_messages(data)[0]


def _validate_messages(data: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """``validate_messages``, and whether any message is a tool message or carries ``tool_calls`` (only those
    are subject to ``check_conversation``)."""
    messages = data.get("messages")
    if messages is None:
        raise errors.invalid_request("messages is required")
    if not isinstance(messages, list) or not messages:
        raise errors.invalid_request("messages must be a non-empty array")
    tool_traffic = False
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise errors.invalid_request(f"messages[{i}] must be an object with role and content")
        role = message.get("role")
        if role not in _ROLES:
            raise errors.invalid_request(
                f"messages[{i}].role must be one of system, user, assistant, tool; got {role!r}"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise errors.invalid_request(f"messages[{i}].content must be a string or an array of parts")
        partial = message.get("partial")
        if partial is not None and not isinstance(partial, bool):
            raise errors.invalid_request(f"messages[{i}].partial must be a boolean")
        if partial and (role != "assistant" or i != len(messages) - 1):
            raise errors.invalid_request(
                f"messages[{i}] has partial=true: Partial Mode is only for the last message, "
                "and it must be an assistant message"
            )
        # An assistant turn that only calls tools may carry content "" (docs/kimi-api.md §2.2), and so may a
        # Partial Mode prefix that is only a ``name`` (docs/kimi-api.md §2.3).
        tool_calls = message.get("tool_calls")
        if role == "tool" or (role == "assistant" and tool_calls):
            tool_traffic = True
        allowed_empty = role == "assistant" and (tool_calls or (partial and message.get("name")))
        if _content_is_empty(content) and not allowed_empty:
            raise errors.invalid_request(f"messages[{i}] with role '{role}' must not have empty content")
    return messages, tool_traffic


def _response_format(data: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON format asked for, if any; its schema must be MFJS, and it excludes Partial Mode (§2.3, D8)."""
    response_format = data.get("response_format")
    if response_format is None:
        return None
    if not isinstance(response_format, dict) or response_format.get("type") not in ("text", "json_object",
                                                                                     "json_schema"):
        raise errors.invalid_request(
            "response_format must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or a json_schema object"
        )
    if response_format["type"] != "text" and messages[-1].get("partial"):
        raise errors.invalid_request("Partial Mode cannot be used together with response_format json_object")
    if response_format["type"] == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise errors.invalid_request(
                "response_format.json_schema must be an object with name and schema, "
                "like {\"name\": \"ticket\", \"schema\": {\"type\": \"object\", ...}}"
            )
        if "name" in spec and not isinstance(spec["name"], str):
            raise errors.invalid_request("response_format.json_schema.name must be a string")
        problem = schema_error(spec["schema"], "response_format")
        if problem is not None:
            raise problem
    return response_format if response_format["type"] != "text" else None


def _number(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.invalid_request(f"{name} must be a number, got {value!r}")
    return float(value)


def _integer(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.invalid_request(f"{name} must be an integer, got {value!r}")
    return value


def _format_temperature(value: float) -> str:
    return f"{value:g}"


def _tools(data: dict[str, Any]) -> list[ToolSpec]:
    raw = data.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise errors.invalid_request("tools must be an array")
    if len(raw) > 128:
        raise errors.invalid_request(f"tools must have at most 128 entries, got {len(raw)}")
    specs: list[ToolSpec] = []
    seen: set[str] = set()
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
            raise errors.invalid_request(f"tools[{i}] must be an object with type and function")
        kind = tool.get("type")
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise errors.invalid_request(f"tools[{i}].function.name is required")
        if kind == "builtin_function":
            if name != "$web_search":
                raise errors.invalid_request(f"unknown builtin_function {name!r}; only $web_search exists")
            specs.append(ToolSpec(name, True, {}))
        elif kind == "function":
            check_tool_name(i, name)
            parameters = function.get("parameters") or {"type": "object", "properties": {}}
            problem = schema_error(parameters, "tools")
            if problem is not None:
                raise problem
            description = function.get("description")
            specs.append(ToolSpec(name, False, parameters, description if isinstance(description, str) else ""))
        else:
            raise errors.invalid_request(f"tools[{i}].type must be 'function' or 'builtin_function'")
        if name in seen:
            raise errors.invalid_request(f"function name {name} is duplicated")
        seen.add(name)
    return specs


def _stop(data: dict[str, Any]) -> list[str]:
    stop = data.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise errors.invalid_request("stop must be a string or an array of strings")
    if len(stops) > 5:
        raise errors.invalid_request(f"stop accepts at most 5 strings, got {len(stops)}")
    for s in stops:
        if len(s.encode()) > 32:
            raise errors.invalid_request(f"each stop string must be at most 32 bytes, {s!r} is longer")
    return stops


def validate_chat_request(data: dict[str, Any], config: SimConfig | None = None) -> ChatRequest:
    """Check a decoded chat-completion body; raise ``SimError`` with Kimi's status/type/message.

    ``config`` chooses the catalog (full or online) and whether the conversation rules apply.
    """
    info = resolve_model(data, config.catalog if config is not None else "full")
    messages, tool_traffic = _validate_messages(data)
    if data.keys() <= _PLAIN_KEYS:
        return _plain_request(info, messages, tool_traffic, config)
    response_format = _response_format(data, messages)
    if "functions" in data or "function_call" in data:
        raise errors.invalid_request("functions and function_call are not supported, use tools instead")
    thinking = resolve_thinking(data, info)

    temperature = _number(data, "temperature")
    n = _integer(data, "n")
    check_fixed_sampling(info, thinking.enabled, {
        "temperature": temperature,
        "top_p": _number(data, "top_p"),
        "n": n,
        "presence_penalty": _number(data, "presence_penalty"),
        "frequency_penalty": _number(data, "frequency_penalty"),
    })
    if temperature is not None and not 0 <= temperature <= 1:
        raise errors.invalid_request(
            f"temperature {_format_temperature(temperature)} is out of range, it must be in [0, 1]"
        )
    fixed = fixed_temperature(info, thinking.enabled)
    if temperature is not None:
        effective_temperature = temperature
    else:
        effective_temperature = fixed if fixed is not None else info.default_temperature

    n = 1 if n is None else n
    if not 1 <= n <= 5:
        raise errors.invalid_request(f"n must be between 1 and 5, got {n}")
    if n > 1 and effective_temperature < 0.3:
        raise errors.invalid_request(
            f"n={n} needs temperature >= 0.3: when temperature is close to 0 only one result can be returned"
        )

    # max_completion_tokens is the 2026 name; prefer it when both are sent.
    max_tokens = _integer(data, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _integer(data, "max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise errors.invalid_request(f"max_tokens must be a positive integer, got {max_tokens}")

    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise errors.invalid_request("stream must be a boolean")
    stream_options = data.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise errors.invalid_request("stream_options must be an object like {\"include_usage\": true}")
        include_usage = bool(stream_options.get("include_usage", False))

    tools = _tools(data)
    check_tools_allowed(info, bool(tools))
    tool_choice = data.get("tool_choice")
    check_tool_choice(tool_choice, info, thinking.enabled)
    if tool_traffic and (config is None or config.strict_conversations):
        check_conversation(messages, thinking.enabled)

    prompt_tokens = _prompt_tokens(info, messages, max_tokens)

    return ChatRequest(
        model=info if info.reasoning == thinking.enabled else replace(info, reasoning=thinking.enabled),
        messages=messages,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        n=n,
        stream=stream,
        include_usage=include_usage,
        stop=_stop(data),
        tools=tools,
        tool_choice=tool_choice,
        response_format=response_format,
        keep_all_reasoning=thinking.keep_all,
    )


_PLAIN_KEYS = frozenset({"model", "messages"})
"""A body with only these keys takes ``_plain_request``: every other parameter at its default."""


def _prompt_tokens(info: ModelInfo, messages: list[dict[str, Any]], max_tokens: int | None) -> int:
    """The request's estimated prompt tokens, or the 400 Kimi sends when they (and ``max_tokens``) do not fit."""
    prompt_tokens = estimate_message_tokens(messages)
    if prompt_tokens > info.context_length:
        raise errors.bad_request("Input token length too long")
    if max_tokens is not None and prompt_tokens + max_tokens > info.context_length:
        raise errors.bad_request(f"Your request exceeded model token limit : {info.context_length}")
    return prompt_tokens


def _plain_request(
    info: ModelInfo, messages: list[dict[str, Any]], tool_traffic: bool, config: SimConfig | None
) -> ChatRequest:
    """``validate_chat_request`` for a body of only model and messages (most traffic), with the same answers.

    No sampling value, tool, tool_choice, format, stop or thinking was sent, so those checks cannot fail:
    thinking is the model's default, n is 1, and only the conversation rules and the context length remain.
    """
    thinking = info.thinks(None)
    if tool_traffic and (config is None or config.strict_conversations):
        check_conversation(messages, thinking)
    return ChatRequest(
        model=info if info.reasoning == thinking else replace(info, reasoning=thinking),
        messages=messages,
        prompt_tokens=_prompt_tokens(info, messages, None),
        max_tokens=None,
        n=1,
        stream=False,
        include_usage=False,
        stop=[],
        tools=[],
        tool_choice=None,
    )

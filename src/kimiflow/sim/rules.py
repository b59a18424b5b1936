"""Kimi's per-model rules: thinking, fixed sampling, tool support and ``tool_choice``, and the
conversation rules it enforces on a request's messages (docs/kimi-api.md §2.1, §2.2, §2.5; docs/kimi-api.md §2.6).

Texts marked LIVE in the reference are Kimi's verbatim; the others follow their pattern and say how
to fix the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kimiflow.core.catalog import ModelInfo
from kimiflow.sim import errors

_TOOL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_-]{2,63}")
"""Kimi's function-name pattern (D3): a letter or _ first, 3..64 characters of letters, digits, _ and -."""


@dataclass(frozen=True)
class Thinking:
    """Whether a request reasons, and whether it asked to keep all earlier reasoning (``keep: "all"``)."""

    enabled: bool
    keep_all: bool


def resolve_thinking(data: dict[str, Any], info: ModelInfo) -> Thinking:
    """The ``thinking`` parameter checked against the model (docs/kimi-api.md §2.1 ``thinking``)."""
    raw = data.get("thinking")
    if raw is None:
        return Thinking(info.thinks(None), False)
    if not isinstance(raw, dict) or raw.get("type") not in ("enabled", "disabled"):
        raise errors.invalid_request(
            'thinking must be an object like {"type": "enabled"} or {"type": "disabled"}, '
            f"got {raw!r}"
        )
    keep = raw.get("keep")
    if keep not in (None, "all"):
        raise errors.invalid_request(f'thinking.keep must be "all" or null, got {keep!r}')
    if info.thinking == "never":
        # Plain models have no thinking to switch; Kimi ignores the parameter there [UNCONFIRMED].
        return Thinking(False, False)
    requested = raw["type"] == "enabled"
    if not requested and info.thinking == "always":
        # LIVE for kimi-k2.7-code; the other always-thinking models are assumed to answer alike.
        raise errors.bad_request("invalid thinking: only type=enabled is allowed for this model")
    if keep == "all" and not info.keep_all:
        raise errors.bad_request(
            "invalid thinking: keep=all is not supported for this model; drop thinking.keep "
            "or use kimi-k2.6, kimi-k2.7-code or kimi-k3"
        )
    enabled = info.thinks(requested)
    return Thinking(enabled, keep == "all" and enabled)


def _fixed(name: str, value: float | None, only: float | None) -> None:
    if value is not None and only is not None and value != only:
        raise errors.bad_request(f"invalid {name}: only {only:g} is allowed for this model")


def fixed_temperature(info: ModelInfo, thinking: bool) -> float | None:
    """The only temperature the model accepts in this mode, or None when any in [0, 1] is fine."""
    if not thinking and info.fixed_temperature_off is not None:
        return info.fixed_temperature_off
    return info.fixed_temperature


def check_fixed_sampling(info: ModelInfo, thinking: bool, numbers: dict[str, float | None]) -> None:
    """400 with Kimi's ``invalid NAME: only V is allowed for this model`` for a fixed sampling value.

    ``numbers`` holds the already type-checked temperature, top_p, n and penalties (None: not sent).
    The temperature text is LIVE (1 and 0.6); the top_p, n and penalty texts follow it [UNCONFIRMED].
    """
    _fixed("temperature", numbers["temperature"], fixed_temperature(info, thinking))
    _fixed("top_p", numbers["top_p"], info.fixed_top_p)
    _fixed("n", numbers["n"], info.fixed_n)
    _fixed("presence_penalty", numbers["presence_penalty"], info.fixed_penalty)
    _fixed("frequency_penalty", numbers["frequency_penalty"], info.fixed_penalty)


def check_tool_name(index: int, name: str) -> None:
    """A function name Kimi accepts, or a 400 saying what the pattern is."""
    if name[0].isdigit():
        raise errors.invalid_request(
            f"tools[{index}].function.name {name!r} must not start with a digit; start it with a letter or _"
        )
    if _TOOL_NAME.fullmatch(name) is None:
        raise errors.invalid_request(
            f"tools[{index}].function.name {name!r} is invalid: use 3 to 64 letters, digits, _ or -, "
            "starting with a letter or _ (^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$)"
        )


def check_tools_allowed(info: ModelInfo, has_tools: bool) -> None:
    """400 for tools sent to a model without tool support (kimi-thinking-preview, docs/kimi-api.md §2.5)."""
    if has_tools and not info.tools:
        raise errors.invalid_request(
            f"model {info.id} does not support tools; drop tools or use a model with tool calls such as kimi-k2.6"
        )


def check_tool_choice(tool_choice: Any, info: ModelInfo, thinking: bool) -> None:
    """``tool_choice`` as the model takes it: forced choices clash with thinking except on kimi-k3."""
    if tool_choice is None or tool_choice in ("auto", "none"):
        return
    if tool_choice == "required":
        if thinking and not info.forced_tool_choice:
            raise errors.bad_request("tool_choice 'required' is incompatible with thinking enabled")
        if info.thinking == "never":
            raise errors.invalid_request("tool_choice 'required' is not supported, use 'auto' or 'none'")
        return
    if isinstance(tool_choice, dict):
        if thinking and not info.forced_tool_choice:
            raise errors.bad_request("tool_choice 'specified' is incompatible with thinking enabled")
        return
    raise errors.invalid_request("tool_choice must be 'auto', 'none' or a {\"type\":\"function\"} object")


def _call_ids(message: dict[str, Any]) -> list[str]:
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return []
    return [call["id"] for call in calls if isinstance(call, dict) and isinstance(call.get("id"), str)]


def _tool_call_id(message: dict[str, Any], index: int) -> str:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise errors.invalid_request(
            f"messages[{index}] with role 'tool' must have a tool_call_id: copy the id of the tool call it answers"
        )
    return tool_call_id


def check_conversation(messages: list[dict[str, Any]], thinking: bool) -> None:
    """Kimi's conversation rules (docs/kimi-api.md §2.2): every tool call answered, no id twice, tool messages
    with their ``tool_call_id``, and ``reasoning_content`` carried back on thinking requests."""
    seen: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            _tool_call_id(message, i)
            continue
        if role != "assistant" or not message.get("tool_calls"):
            continue
        ids = _call_ids(message)
        for call_id in ids:
            if call_id in seen:
                raise errors.invalid_request(f"tool call id {call_id} is duplicated")
            seen.add(call_id)
        if thinking and message.get("reasoning_content") is None:
            raise errors.bad_request(
                f"thinking is enabled but reasoning_content is missing in assistant tool call message at index {i}"
            )
        answered: set[str] = set()
        j = i + 1
        while j < len(messages) and messages[j].get("role") == "tool":
            answered.add(_tool_call_id(messages[j], j))
            j += 1
        missing = [call_id for call_id in ids if call_id not in answered]
        if missing:
            raise errors.bad_request(
                "an assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(missing)}"
            )

"""``$web_search`` accounting (kimi-api.md §2.4): result tokens count as the next prompt, calls cost a fee.

The simulator's search call carries ``usage.total_tokens`` in its arguments; the client echoes the
arguments back as the ``tool`` message, and that request's ``prompt_tokens`` grows by those tokens, as
Moonshot bills the results it inserts. Every answer ending in ``$web_search`` calls is charged
``WEB_SEARCH_FEE_CNY`` per call.

>>> web_search_result_tokens([{"role": "user", "content": "搜索"},
...     {"role": "tool", "name": "$web_search", "tool_call_id": "$web_search:0",
...      "content": '{"usage": {"total_tokens": 321}}'}])
321
"""

from __future__ import annotations

import json
from typing import Any

WEB_SEARCH = "$web_search"
WEB_SEARCH_FEE_CNY = 0.03
"""Per call, China price list (kimi-api.md §8)."""


def _result_tokens(content: Any) -> int:
    try:
        echoed = json.loads(content) if isinstance(content, str) else None
    except ValueError:
        return 0
    usage = echoed.get("usage") if isinstance(echoed, dict) else None
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 else 0


def web_search_result_tokens(messages: list[dict[str, Any]]) -> int:
    """Tokens the search results add to this request: the trailing ``$web_search`` tool messages' usage."""
    total = 0
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        if message.get("name") == WEB_SEARCH:
            total += _result_tokens(message.get("content"))
    return total


def web_search_calls(tool_call_names: list[str]) -> int:
    """How many of an answer's tool calls are ``$web_search`` (each one is charged the fee)."""
    return sum(1 for name in tool_call_names if name == WEB_SEARCH)

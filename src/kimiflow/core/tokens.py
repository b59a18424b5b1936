"""Token estimates close to Kimi's tokenizer, without the tokenizer.

About one token per CJK character and about 0.75 English words per token (docs/kimi-api.md, issue #2);
the server's ``estimate-token-count`` endpoint is the authority when exactness matters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

# CJK ideographs, kana, hangul and full-width punctuation: one token each.
_CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_WORD = re.compile(r"[A-Za-z0-9_']+")
_SYMBOL = re.compile(r"[^\sA-Za-z0-9_'\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")

MESSAGE_OVERHEAD = 3
"""Tokens added per message for role and separators."""
REQUEST_OVERHEAD = 3

_MEMO_MAX_CHARS = 4_000_000
"""Bound of the count memo: the characters of all texts it remembers (a few MB), then it starts over."""
_memo: dict[str, int] = {}
_memo_chars = 0


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens in ``text``: CJK characters + words / 0.75 + symbols / 2.

    >>> estimate_text_tokens("你好")
    2
    """
    if not text:
        return 0
    # The same texts come back on every turn of a chat (system prompt, earlier turns): count each once.
    known = _memo.get(text)
    if known is not None:
        return known
    count = _count_text_tokens(text)
    global _memo_chars
    if _memo_chars + len(text) > _MEMO_MAX_CHARS:
        _memo.clear()
        _memo_chars = 0
    if len(text) <= _MEMO_MAX_CHARS:
        _memo[text] = count
        _memo_chars += len(text)
    return count


def _count_text_tokens(text: str) -> int:
    if text.isascii():
        words = len(_WORD.findall(text))
        symbols = len(_SYMBOL.findall(text))
        return math.ceil(words / 0.75 + symbols / 2)
    cjk = len(_CJK.findall(text))
    words = len(_WORD.findall(text))
    symbols = len(_SYMBOL.findall(text))
    return cjk + math.ceil(words / 0.75 + symbols / 2)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
        return " ".join(parts)
    return str(content)


def estimate_one_message_tokens(message: Mapping[str, Any]) -> int:
    """Estimated tokens of one message, without the request's overhead:
    ``estimate_message_tokens(ms) == REQUEST_OVERHEAD + sum(estimate_one_message_tokens(m) for m in ms)``.

    >>> estimate_one_message_tokens({"role": "user", "content": "你好"})
    5
    """
    content = message.get("content")
    total = MESSAGE_OVERHEAD + estimate_text_tokens(content if isinstance(content, str) else _content_text(content))
    reasoning = message.get("reasoning_content")
    if reasoning:
        total += estimate_text_tokens(str(reasoning))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        total += 3 + estimate_text_tokens(str(function.get("name", "")))
        total += estimate_text_tokens(str(function.get("arguments", "")))
    name = message.get("name")
    if name:
        total += estimate_text_tokens(str(name))
    return total


def estimate_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Estimated prompt tokens for a chat request's ``messages``."""
    total = REQUEST_OVERHEAD
    for message in messages:
        total += estimate_one_message_tokens(message)
    return total

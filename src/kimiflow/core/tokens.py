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


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens in ``text``: CJK characters + words / 0.75 + symbols / 2.

    >>> estimate_text_tokens("你好")
    2
    """
    if not text:
        return 0
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


def estimate_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Estimated prompt tokens for a chat request's ``messages``."""
    total = REQUEST_OVERHEAD
    for message in messages:
        total += MESSAGE_OVERHEAD + estimate_text_tokens(_content_text(message.get("content")))
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

"""Canned Kimi responses for the client benchmark, and the answers every peer must reproduce.

The non-streaming body has the shape of docs/kimi-api.md §10 R2 (usage included). The stream follows
§4.2: a role-first chunk, one chunk per token (``{"content":"词"}``), a final chunk with
``finish_reason`` and Kimi's usage *inside the choice*, then ``data: [DONE]``. Tokens mix CJK,
ASCII and an escaped newline so every peer really decodes JSON strings.

>>> stream_text(3)
'你好，李雷'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL = "moonshot-v1-8k"
API_KEY = "sk-bench-not-a-real-key"
MESSAGES: list[dict[str, str]] = [
    {"role": "system", "content": "你是 Kimi，由 Moonshot AI 提供的人工智能助手。"},
    {"role": "user", "content": "你好，我叫李雷，1+1等于多少？"},
]
REPLY = " 你好，李雷！1+1等于2。如果你有其他问题，请随时提问！"
USAGE = {"prompt_tokens": 19, "completion_tokens": 21, "total_tokens": 40}
PROMPT_TOKENS = USAGE["prompt_tokens"]
TOKENS = ("你好", "，", "李雷", "！", "1", "+", "1", "等于", "2", "。", " Kimi", " says", " hi", "词", "\n")

_CHUNK_ID = "chatcmpl-67500eb0c51af667d5968f74"
_CREATED = 1698999575


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def completion_body() -> bytes:
    """The non-streaming ``chat.completion`` JSON (R2 shape, usage included)."""
    return _dumps({
        "id": "cmpl-04ea926191a14749b7f2c7a48a68abc6",
        "object": "chat.completion",
        "created": 1698999496,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
        "usage": USAGE,
    }).encode()


def stream_tokens(chunks: int) -> list[str]:
    """The content of each of the ``chunks`` content chunks, in order."""
    return [TOKENS[i % len(TOKENS)] for i in range(chunks)]


def stream_text(chunks: int) -> str:
    """The text a correct consumer of a ``chunks``-chunk stream ends up with."""
    return "".join(stream_tokens(chunks))


def stream_usage(chunks: int) -> dict[str, int]:
    """The usage in the stream's final choice: one completion token per content chunk."""
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks, "total_tokens": PROMPT_TOKENS + chunks}


def _chunk(choice: dict[str, Any]) -> str:
    body = {"id": _CHUNK_ID, "object": "chat.completion.chunk", "created": _CREATED, "model": MODEL,
            "choices": [choice]}
    return f"data: {_dumps(body)}\n\n"


def stream_body(chunks: int) -> bytes:
    """The whole SSE body: role chunk, ``chunks`` one-token content chunks, usage-in-choice end, [DONE]."""
    parts = [_chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})]
    parts.extend(
        _chunk({"index": 0, "delta": {"content": token}, "finish_reason": None}) for token in stream_tokens(chunks)
    )
    parts.append(_chunk({"index": 0, "delta": {}, "finish_reason": "stop", "usage": stream_usage(chunks)}))
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


def write_files(directory: Path, chunks: int) -> None:
    """Write ``completion.json`` and ``stream.sse`` (a ``chunks``-chunk stream) into ``directory``."""
    (directory / "completion.json").write_bytes(completion_body())
    (directory / "stream.sse").write_bytes(stream_body(chunks))

"""Encoding chat-completion chunks as SSE ``data:`` events, cheaply.

Content and reasoning chunks are the hot path (tens of thousands per stream): they are built by
concatenating a pre-built prefix, the piece's pre-encoded JSON string and a constant suffix, so a
chunk costs one bytes join instead of a dict and an encoder call. Rare chunks (role, tool calls,
final, usage) go through msgspec.
"""

from __future__ import annotations

from typing import Any

import msgspec

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"

_encode = msgspec.json.Encoder().encode
_CHUNK_SUFFIX = b'},"finish_reason":null}]}\n\n'


def sse_event(payload: Any) -> bytes:
    """``data: <compact JSON>`` plus the blank line that ends the event."""
    return b"data: " + _encode(payload) + b"\n\n"


class ChunkEncoder:
    """Builds the SSE events of one streamed completion.

    >>> enc = ChunkEncoder("chatcmpl-1", 1700000000, "moonshot-v1-8k")
    >>> enc.content(0, b'"\\u4f60"')   # a piece already encoded as a JSON string
    """

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self._head = (
            b'data: {"id":' + _encode(completion_id) + b',"object":"chat.completion.chunk","created":'
            + str(created).encode() + b',"model":' + _encode(model) + b',"choices":[{"index":'
        )
        self._content_prefix: dict[int, bytes] = {}
        self._reasoning_prefix: dict[int, bytes] = {}

    def _envelope(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return chunk

    def content(self, index: int, encoded_piece: bytes) -> bytes:
        """A ``delta.content`` chunk for a piece already encoded as a JSON string."""
        prefix = self._content_prefix.get(index)
        if prefix is None:
            prefix = self._content_prefix[index] = self._head + str(index).encode() + b',"delta":{"content":'
        return prefix + encoded_piece + _CHUNK_SUFFIX

    def reasoning(self, index: int, encoded_piece: bytes) -> bytes:
        """A ``delta.reasoning_content`` chunk (thinking models, before any content)."""
        prefix = self._reasoning_prefix.get(index)
        if prefix is None:
            prefix = self._reasoning_prefix[index] = (
                self._head + str(index).encode() + b',"delta":{"reasoning_content":'
            )
        return prefix + encoded_piece + _CHUNK_SUFFIX

    def role(self, index: int) -> bytes:
        """The first chunk of a choice: ``{"role":"assistant","content":""}``."""
        delta = {"role": "assistant", "content": ""}
        return sse_event(self._envelope([{"index": index, "delta": delta, "finish_reason": None}]))

    def tool_call_start(self, index: int, call_index: int, call_id: str, kind: str, name: str) -> bytes:
        """The first fragment of a tool call: index, id, type, name and empty arguments."""
        call = {"index": call_index, "id": call_id, "type": kind, "function": {"name": name, "arguments": ""}}
        delta = {"tool_calls": [call]}
        return sse_event(self._envelope([{"index": index, "delta": delta, "finish_reason": None}]))

    def tool_call_arguments(self, index: int, call_index: int, fragment: str) -> bytes:
        """A later fragment of a tool call: only index and an arguments piece."""
        delta = {"tool_calls": [{"index": call_index, "function": {"arguments": fragment}}]}
        return sse_event(self._envelope([{"index": index, "delta": delta, "finish_reason": None}]))

    def final(self, index: int, finish_reason: str, usage: dict[str, Any]) -> bytes:
        """The last chunk of a choice: empty delta, finish_reason and Kimi's usage inside the choice."""
        choice = {"index": index, "delta": {}, "finish_reason": finish_reason, "usage": usage}
        return sse_event(self._envelope([choice]))

    def usage_only(self, usage: dict[str, Any]) -> bytes:
        """The ``stream_options.include_usage`` trailer: ``choices: []`` and top-level usage."""
        return sse_event(self._envelope([], usage))

"""Watching a relayed SSE stream for Kimi's usage, without holding the stream.

The bytes are forwarded unchanged by the caller of ``StreamWatch.feed``; the watch only runs them
through the core's ``SSEDecoder`` and looks at each event's text. An event is decoded as JSON
only when it mentions ``"usage"`` or ``"error"`` (the final chunk of a choice, the
``include_usage`` trailer, a mid-stream error), so the per-chunk cost is one substring test and
memory stays O(1): a running count and the last usage seen, never the text.

Kimi puts usage inside the final choice (``choices[i].usage``); with ``stream_options.include_usage``
a trailer chunk (``choices: []``) carries the total at the top level, which wins when present.
"""

from __future__ import annotations

from typing import Any

import msgspec

from kimiflow.core.sse import SSEDecoder

_json = msgspec.json.Decoder()


class StreamUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


def usage_from(raw: Any) -> StreamUsage | None:
    """Kimi's usage object (``cached_tokens`` top level or in ``prompt_tokens_details``) as counts."""
    if not isinstance(raw, dict):
        return None
    cached = raw.get("cached_tokens")
    if cached is None:
        details = raw.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    try:
        return StreamUsage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0), int(cached or 0))
    except (TypeError, ValueError):
        return None


class StreamWatch:
    """Counts a stream's events and finds its usage; ``done`` once ``data: [DONE]`` went by.

    >>> watch = StreamWatch()
    >>> watch.feed(b'data: {"choices":[{"index":0,"delta":{},"usage":{"prompt_tokens":5}}]}\\n\\ndata: [DONE]\\n\\n')
    >>> watch.done, watch.usage.prompt_tokens
    (True, 5)
    """

    __slots__ = ("_choice_usage", "_decoder", "_top_usage", "content_events", "done", "error", "events")

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._choice_usage: dict[int, StreamUsage] = {}
        self._top_usage: StreamUsage | None = None
        self.content_events = 0
        self.events = 0
        self.done = False
        self.error: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        for event in self._decoder.feed(chunk):
            self.events += 1
            data = event.data
            if data == "[DONE]":
                self.done = True
                continue
            if '"usage"' in data or '"error"' in data:
                self._inspect(data)
            else:
                self.content_events += 1

    def _inspect(self, data: str) -> None:
        try:
            obj = _json.decode(data)
        except msgspec.DecodeError:
            return
        if not isinstance(obj, dict):
            return
        if isinstance(obj.get("error"), dict):
            self.error = obj["error"]
            return
        top = usage_from(obj.get("usage"))
        if top is not None:
            self._top_usage = top
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict):
                usage = usage_from(choice.get("usage"))
                if usage is not None:
                    self._choice_usage[int(choice.get("index") or 0)] = usage
                elif choice.get("delta"):
                    self.content_events += 1

    @property
    def usage(self) -> StreamUsage | None:
        """The stream's usage as Kimi reported it, or ``None`` if none came (yet)."""
        if self._top_usage is not None:
            return self._top_usage
        if not self._choice_usage:
            return None
        choices = list(self._choice_usage.values())
        # Every choice's usage repeats the prompt; the completions add up.
        return StreamUsage(choices[0].prompt_tokens, sum(c.completion_tokens for c in choices), choices[0].cached_tokens)

"""Counters of what a simulator served, readable in-process (``sim.stats``) or at ``GET /_sim/stats``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimStats:
    """Running totals. All counters only grow, except ``in_flight``.

    >>> sim.stats.requests, sim.stats.by_status[200], sim.stats.stream_chunks
    """

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    chat_completions: int = 0
    streams: int = 0
    stream_chunks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_cny: float = 0.0
    rate_limited: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    resets: int = 0
    in_flight: int = 0
    files_uploaded: int = 0
    batches_created: int = 0
    batch_lines: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The counters as JSON-ready data (status codes become string keys)."""
        return {
            "requests": self.requests,
            "by_status": {str(code): n for code, n in sorted(self.by_status.items())},
            "chat_completions": self.chat_completions,
            "streams": self.streams,
            "stream_chunks": self.stream_chunks,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_cny": self.cost_cny,
            "rate_limited": self.rate_limited,
            "faults": dict(sorted(self.faults.items())),
            "resets": self.resets,
            "in_flight": self.in_flight,
            "files_uploaded": self.files_uploaded,
            "batches_created": self.batches_created,
            "batch_lines": self.batch_lines,
        }

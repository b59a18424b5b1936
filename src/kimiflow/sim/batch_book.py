"""The simulator's batches as data: the Batch object and the account's book of them, on a compressed clock.

The life cycle and the endpoints are ``kimiflow.sim.batches``; this module only holds state, so that
``SimState`` can own a book without importing the chat engine.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kimiflow.sim.errors import SimError

if TYPE_CHECKING:
    from kimiflow.sim.config import SimConfig

BATCH_ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})


@dataclass
class SimBatch:
    """One batch and everything it has produced so far."""

    id: str
    input_file_id: str
    completion_window: str
    created_at: float
    expires_at: float
    metadata: dict[str, str] | None
    key: str
    status: str = "validating"
    stamps: dict[str, float] = field(default_factory=dict)
    lines: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    done: int = 0
    completed: int = 0
    failed: int = 0
    output: list[bytes] = field(default_factory=list)
    error_lines: list[bytes] = field(default_factory=list)
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The Batch object (docs/kimi-api.md §7.5)."""
        stamp = self.stamps.get
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": BATCH_ENDPOINT,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            **{f"{name}_at": _int_or_none(stamp(name)) for name in (
                "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")},
            "expires_at": int(self.expires_at),
            "request_counts": {"total": len(self.lines), "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
        }


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


class BatchBook:
    """Every batch of the account, on the simulator's compressed Batch API clock."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._wall0 = time.time()
        self._clock0 = config.clock()
        self._batches: dict[str, SimBatch] = {}

    def now(self) -> float:
        """Simulated epoch seconds: real time since start, stretched by ``3600 / batch_hour_s``."""
        return self._wall0 + (self.config.clock() - self._clock0) * 3600.0 / self.config.batch_hour_s

    def create(self, input_file_id: str, window: str, window_s: int, metadata: dict[str, str] | None,
               key: str) -> SimBatch:
        now = self.now()
        batch = SimBatch("batch_" + uuid.uuid4().hex[:24], input_file_id, window, now, now + window_s, metadata, key)
        self._batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> SimBatch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise SimError(404, "resource_not_found_error", f"Not found the batch {batch_id} or Permission denied")
        return batch

    def newest_first(self) -> list[SimBatch]:
        return list(reversed(self._batches.values()))

    def unfinished(self) -> list[SimBatch]:
        return [b for b in self._batches.values() if b.status not in TERMINAL]

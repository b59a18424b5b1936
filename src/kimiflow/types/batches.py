"""Batch API objects (docs/kimi-api.md §7.5)."""

from __future__ import annotations

from kimiflow.types._base import WireModel

BATCH_TERMINAL_STATUSES = frozenset({"failed", "completed", "expired", "cancelled"})


class BatchRequestCounts(WireModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(WireModel):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(WireModel):
    object: str = "list"
    data: list[BatchError] = []


class Batch(WireModel):
    id: str = ""
    object: str = "batch"
    endpoint: str = ""
    input_file_id: str = ""
    completion_window: str = ""
    status: str = ""
    errors: BatchErrors | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int = 0
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts | None = None
    metadata: dict[str, str] | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the batch will not change any more (failed, completed, expired or cancelled)."""
        return self.status in BATCH_TERMINAL_STATUSES


class BatchList(WireModel):
    object: str = "list"
    data: list[Batch] = []
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

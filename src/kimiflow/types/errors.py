"""Moonshot's error body: ``{"error": {"message": ..., "type": ...}}`` (kimi-api.md §5.1)."""

from __future__ import annotations

import msgspec

from kimiflow.types._base import WireModel


class ErrorDetail(WireModel):
    message: str = ""
    type: str = ""
    code: str | None = None
    param: str | None = None


class ErrorBody(WireModel):
    error: ErrorDetail = msgspec.field(default_factory=ErrorDetail)

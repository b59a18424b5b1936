"""Moonshot's error body: ``{"error": {"message": ..., "type": ...}}`` (docs/kimi-api.md §5.1)."""

from __future__ import annotations

from typing import Any

import msgspec

from kimiflow.types._base import WireModel


class ErrorDetail(WireModel):
    message: str = ""
    type: str = ""
    code: Any = None
    """A string in Moonshot's schema; OpenAI-compatible gateways also send numbers."""
    param: Any = None


class ErrorBody(WireModel):
    error: ErrorDetail = msgspec.field(default_factory=ErrorDetail)

"""``GET /v1/models`` (docs/kimi-api.md §7.1)."""

from __future__ import annotations

from kimiflow.types._base import WireModel


class Model(WireModel):
    id: str = ""
    object: str = "model"
    created: int = 0
    owned_by: str = "moonshot"
    context_length: int | None = None
    supports_image_in: bool | None = None
    supports_video_in: bool | None = None
    supports_reasoning: bool | None = None


class ModelList(WireModel):
    object: str = "list"
    data: list[Model] = []

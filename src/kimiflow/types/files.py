"""Files API objects (docs/kimi-api.md §7.4)."""

from __future__ import annotations

from kimiflow.types._base import WireModel


class FileObject(WireModel):
    id: str = ""
    object: str = "file"
    bytes: int = 0
    created_at: int = 0
    filename: str = ""
    purpose: str = ""
    status: str = ""
    status_details: str = ""


class FileList(WireModel):
    object: str = "list"
    data: list[FileObject] = []


class FileDeleted(WireModel):
    id: str = ""
    object: str = "file"
    deleted: bool = False

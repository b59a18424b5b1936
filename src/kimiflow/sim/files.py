"""The simulator's file store and text extraction (docs/kimi-api.md §7.4, errors §5.2).

Uploads live in memory. ``content`` returns what Kimi returns for ``file-extract`` files: a JSON
string ``{"content", "file_type", "filename", "title", "type"}`` meant to be pasted into a system
message. Text is extracted from txt/md/csv/json/html (tags stripped, scripts and styles dropped)
and from any other upload that is valid UTF-8 text; binary files get status ``error``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import msgspec

from kimiflow.sim import errors

PURPOSES = ("file-extract", "image", "video", "batch")
RAW_PURPOSES = ("batch", "batch_output")
"""Purposes whose content is the file itself: uploaded batch input, and the output/error files of a batch."""

_FILE_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".csv": "text/csv",
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".html": "text/html",
    ".htm": "text/html",
}
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"


class _TextOfHtml(HTMLParser):
    """Collects the visible text of an HTML document."""

    _SKIP = frozenset({"script", "style", "head", "title", "noscript"})
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        if tag == "title":
            self._in_title = True
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        if tag == "title":
            self._in_title = False
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self._skipping:
            self.parts.append(data)


def extract_text(filename: str, data: bytes) -> tuple[str, str, str] | None:
    """``(text, file_type, title)`` extracted from an upload, or ``None`` if it is not text."""
    ext = os.path.splitext(filename.lower())[1]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    file_type = _FILE_TYPES.get(ext, "text/plain")
    if file_type == "text/html":
        parser = _TextOfHtml()
        parser.feed(text)
        parser.close()
        lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
        return "\n".join(line for line in lines if line), file_type, parser.title.strip()
    return text, file_type, ""


@dataclass
class StoredFile:
    """One uploaded file: metadata plus the extracted text (``None`` when extraction failed)."""

    id: str
    filename: str
    purpose: str
    size: int
    created_at: int
    text: str | None
    file_type: str
    title: str

    def as_dict(self) -> dict[str, Any]:
        """The FileObject Kimi returns."""
        failed = self.purpose == "file-extract" and self.text is None
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "error" if failed else "ok",
            "status_details": "Failed to extract file: not a supported text document" if failed else "",
        }


class FileStore:
    """In-memory uploads with Kimi's limits on count and size.

    >>> store = FileStore(max_files=1000, max_bytes=100 * 1024 * 1024)
    >>> store.add("a.txt", b"hello", "file-extract").id
    """

    def __init__(self, max_files: int, max_bytes: int) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._files: dict[str, StoredFile] = {}

    def check_purpose(self, purpose: str | None) -> str:
        """The purpose, or the 400 Kimi gives for a bad one."""
        if purpose not in PURPOSES:
            accepted = ", ".join(f"'{p}'" for p in PURPOSES)
            raise errors.bad_request(f"Invalid purpose: only {accepted} accepted")
        return purpose

    def too_large(self) -> errors.SimError:
        return errors.bad_request(
            f"File size is too large, max file size is {errors.format_size(self.max_bytes)}, "
            "please confirm and re-upload the file"
        )

    def add(self, filename: str, data: bytes, purpose: str) -> StoredFile:
        """Store an upload after the size and count checks."""
        self.check_purpose(purpose)
        if not data:
            raise errors.bad_request("File size is zero, please confirm and re-upload the file")
        if len(data) > self.max_bytes:
            raise self.too_large()
        if purpose == "batch" and not filename.lower().endswith(".jsonl"):
            raise errors.invalid_request(
                f"a batch file must be JSONL named *.jsonl, got {filename!r}: one request per line, "
                '{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}'
            )
        if len(self._files) >= self.max_files:
            raise errors.bad_request(
                f"The number of files you have uploaded exceeded the max file count {self.max_files}, "
                "please delete previous uploaded files"
            )
        extracted = extract_text(filename, data)
        text, file_type, title = extracted if extracted is not None else (None, "application/octet-stream", "")
        file_id = "cl" + "".join(_ID_ALPHABET[b % 32] for b in os.urandom(18))
        stored = StoredFile(file_id, filename, purpose, len(data), int(time.time()), text, file_type, title)
        self._files[file_id] = stored
        return stored

    def add_generated(self, filename: str, data: bytes, purpose: str) -> StoredFile:
        """A file the simulator writes itself (a batch's output or error file): no purpose or count check."""
        file_id = "cl" + "".join(_ID_ALPHABET[b % 32] for b in os.urandom(18))
        stored = StoredFile(file_id, filename, purpose, len(data), int(time.time()), data.decode("utf-8"),
                            "application/jsonl", "")
        self._files[file_id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile:
        """The file, or 404 ``resource_not_found_error``."""
        stored = self._files.get(file_id)
        if stored is None:
            raise errors.SimError(404, "resource_not_found_error", f"Not found the file {file_id} or Permission denied")
        return stored

    def delete(self, file_id: str) -> dict[str, Any]:
        """Remove a file; the deletion object Kimi answers with."""
        self.get(file_id)
        del self._files[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    def list(self) -> dict[str, Any]:
        return {"object": "list", "data": [f.as_dict() for f in self._files.values()]}

    def content(self, file_id: str) -> bytes:
        """Kimi's extracted-content JSON string for a ``file-extract`` upload."""
        stored = self.get(file_id)
        if stored.purpose in RAW_PURPOSES:
            # Batch input, output and error files come back as they are (JSONL), not as extracted text.
            if stored.text is None:
                raise errors.SimError(500, "server_error", "Failed to read file: not UTF-8 text")
            return stored.text.encode("utf-8")
        if stored.purpose != "file-extract":
            raise errors.invalid_request(
                f"file {file_id} has purpose '{stored.purpose}'; only 'file-extract' files have content"
            )
        if stored.text is None:
            raise errors.SimError(500, "server_error", "Failed to extract file: not a supported text document")
        return msgspec.json.encode(
            {
                "content": stored.text,
                "file_type": stored.file_type,
                "filename": stored.filename,
                "title": stored.title,
                "type": "file",
            }
        )

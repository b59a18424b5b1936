"""Batch output files: the line shapes, and the file operations crash repair is built from.

What is written in which order, and what repair does after a crash, is decided in one place:
``kimiflow.batch.store`` (its docstring draws it). This module only knows bytes and files: every
function here that changes a file has made the change durable (fsync) when it returns.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from kimiflow.batch.journal import DoneStats

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def success_record(
    custom_id: str, status_code: int, request_id: str | None, body: dict[str, Any], *,
    attempts: int, latency_ms: float, cost_cny: float,
) -> dict[str, Any]:
    """One output line: the Batch API output object plus attempts, latency and cost."""
    return {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
        "attempts": attempts,
        "latency_ms": round(latency_ms, 1),
        "cost_cny": round(cost_cny, 8),
    }


def failure_record(
    custom_id: str, reason: str, *, code: str, status_code: int | None = None,
    request_id: str | None = None, body: Any = None, attempts: int, latency_ms: float,
) -> dict[str, Any]:
    """One errors-file line: Batch API shape with ``error{code, message}`` and a plain ``reason``."""
    response = None
    if status_code is not None:
        response = {"status_code": status_code, "request_id": request_id, "body": body}
    return {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": custom_id,
        "response": response,
        "error": {"code": code, "message": reason},
        "reason": reason,
        "attempts": attempts,
        "latency_ms": round(latency_ms, 1),
    }


def stats_from_record(record: dict[str, Any]) -> DoneStats:
    """The journal figures of an output line (used when adopting a line after a crash)."""
    body = (record.get("response") or {}).get("body") or {}
    usage = body.get("usage") or {}
    if not usage:
        for choice in body.get("choices") or ():
            usage = choice.get("usage") or usage
    return DoneStats(
        attempts=int(record.get("attempts") or 1),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cost_cny=float(record.get("cost_cny") or 0.0),
        latency_ms=float(record.get("latency_ms") or 0.0),
    )


def encode_line(record: dict[str, Any]) -> bytes:
    """A record as one output line (compact JSON, newline-terminated)."""
    return _encoder.encode(record) + b"\n"


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def truncate_durably(fd: int, size: int) -> None:
    """Cut the file back to ``size`` bytes and make the cut survive a crash."""
    os.ftruncate(fd, size)
    os.fsync(fd)


def replace_durably(temp: Path, path: Path) -> None:
    """``os.replace`` whose result survives a power cut: the directory entry is fsynced too."""
    os.replace(temp, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, lines: Iterable[bytes]) -> int:
    """Write ``lines`` to a new file at ``path`` and fsync it; returns its size."""
    with path.open("wb") as f:
        for line in lines:
            f.write(line)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def parse_record(raw: bytes) -> dict[str, Any] | None:
    """The record on an output line, or ``None`` for a blank, torn or foreign-shaped line."""
    if not raw.strip():
        return None
    try:
        record = _decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
        return None
    return record


def line_number(path: Path, offset: int) -> int:
    """1-based number of the line that starts at byte ``offset`` (only for error messages)."""
    count = 1
    with path.open("rb") as f:
        while offset > 0:
            block = f.read(min(offset, 1 << 20))
            if not block:
                break
            count += block.count(b"\n")
            offset -= len(block)
    return count



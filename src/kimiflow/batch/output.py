"""Batch output files: result lines in Batch API output form, the errors file, and crash repair.

Order of a success, chosen so a kill -9 at any point loses nothing and duplicates nothing:

1. append the line to the output (one ``write`` on an ``O_APPEND`` descriptor);
2. commit ``done`` in the journal together with the output's new size (``output_bytes``).

Killed between 1 and 2, the output holds one line past ``output_bytes`` for a request the
journal still calls in flight. ``reconcile`` adopts it (the result is real, no need to pay for it
twice), drops a line whose id is already done, and truncates a torn last line. The errors file
is a view of the journal's failed rows: appended live, and rebuilt whole by ``rebuild_errors``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from kimiflow.batch.journal import DONE, DoneStats, Journal, OutputConflictError

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


class ResultWriter:
    """Appends result lines and commits them to the journal in the crash-safe order.

    >>> writer = ResultWriter("out.jsonl", "out.errors.jsonl", journal)
    >>> writer.write_success(record, stats)
    """

    def __init__(self, output: str | Path, errors: str | Path, journal: Journal) -> None:
        self.output = Path(output)
        self.errors = Path(errors)
        self.journal = journal
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._out = os.open(self.output, flags, 0o644)
        self._err = os.open(self.errors, flags, 0o644)

    def write_success(self, record: dict[str, Any], stats: DoneStats) -> None:
        line = _encoder.encode(record) + b"\n"
        _write_all(self._out, line)
        size = os.fstat(self._out).st_size
        self.journal.mark_done(record["custom_id"], stats, size)

    def write_failure(self, record: dict[str, Any], attempts: int) -> None:
        # Journal first: the errors file is rebuilt from it, so a torn line here is harmless.
        self.journal.mark_failed(record["custom_id"], attempts, record)
        _write_all(self._err, _encoder.encode(record) + b"\n")

    def close(self) -> None:
        for fd in (self._out, self._err):
            try:
                os.close(fd)
            except OSError:
                pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@dataclass
class ReconcileReport:
    """What ``reconcile`` repaired in the output file."""

    adopted: list[str] = field(default_factory=list)
    dropped_duplicates: int = 0
    torn_bytes: int = 0
    lost: int = 0
    full_scan: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.adopted or self.dropped_duplicates or self.torn_bytes or self.lost)


def reconcile(output: str | Path, journal: Journal, *, verify: bool = False) -> ReconcileReport:
    """Make the output file and the journal agree before a resumed run appends to it.

    Only the bytes past the journal's ``output_bytes`` can disagree after a crash, so only they are
    read — unless the file is shorter than the journal expects (edited or truncated by hand); then
    the whole file is checked and results missing from it are marked pending to be produced again.
    ``verify=True`` forces that whole-file check.
    """
    path = Path(output)
    report = ReconcileReport()
    if not path.exists():
        path.touch()
    size = path.stat().st_size
    committed = journal.output_bytes
    if size < committed or verify:
        report.full_scan = True
        _full_scan(path, journal, report)
        return report
    if size == committed:
        return report
    with path.open("rb") as f:
        f.seek(committed)
        tail = f.read()
    kept: list[bytes] = []
    seen: set[str] = set()
    lines = tail.split(b"\n")
    report.torn_bytes += len(lines.pop())  # bytes after the last newline: a torn write
    adopt: list[tuple[str, DoneStats]] = []
    for index, raw in enumerate(lines):
        record = _parse_record(raw)
        if record is None:
            report.torn_bytes += len(raw) + 1
            continue
        cid = record["custom_id"]
        status = journal.status(cid)
        if status is None:
            raise _foreign_id(path, journal, cid, _line_number(path, committed) + index)
        if cid in seen or status == DONE:
            report.dropped_duplicates += 1
            continue
        seen.add(cid)
        adopt.append((cid, stats_from_record(record)))
        kept.append(raw + b"\n")
    # Adopted only once every line is known: a refused file must stay exactly as it was.
    for cid, stats in adopt:
        journal.adopt_done(cid, stats)
        report.adopted.append(cid)
    with path.open("r+b") as f:
        f.truncate(committed)
        f.seek(committed)
        for raw in kept:
            f.write(raw)
        f.flush()
        os.fsync(f.fileno())
        journal.set_output_bytes(f.tell())
    return report


def _parse_record(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        record = _decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
        return None
    return record


def _line_number(path: Path, offset: int) -> int:
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


def _foreign_id(path: Path, journal: Journal, cid: str, line: int) -> OutputConflictError:
    return OutputConflictError(
        f"{path} line {line}: custom_id {cid!r} is not a request of this batch (journal {journal.path}); "
        "the file holds other results: choose a new -o, or delete that line"
    )


def _full_scan(path: Path, journal: Journal, report: ReconcileReport) -> None:
    """Rewrite the output keeping the first valid line per id; re-queue results it lacks."""
    temp = path.with_name(path.name + ".reconcile")
    seen: set[str] = set()
    adopt: list[tuple[str, DoneStats]] = []
    try:
        with path.open("rb") as src, temp.open("wb") as dst:
            for number, raw in enumerate(src, start=1):
                record = _parse_record(raw)
                if record is None or not raw.endswith(b"\n"):
                    report.torn_bytes += len(raw)
                    continue
                cid = record["custom_id"]
                status = journal.status(cid)
                if status is None:
                    raise _foreign_id(path, journal, cid, number)
                if cid in seen:
                    report.dropped_duplicates += 1
                    continue
                seen.add(cid)
                if status != DONE:
                    adopt.append((cid, stats_from_record(record)))
                dst.write(raw)
            dst.flush()
            os.fsync(dst.fileno())
            size = dst.tell()
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    for cid, stats in adopt:
        journal.adopt_done(cid, stats)
        report.adopted.append(cid)
    os.replace(temp, path)
    missing = [cid for cid in journal.done_ids() if cid not in seen]
    report.lost = journal.reset_done(missing)
    journal.set_output_bytes(size)


def rebuild_errors(errors: str | Path, journal: Journal) -> int:
    """Rewrite the errors file from the journal (atomically); returns the number of lines."""
    path = Path(errors)
    temp = path.with_name(path.name + ".rebuild")
    n = 0
    with temp.open("wb") as f:
        for record in journal.failed_records():
            f.write(_encoder.encode(record) + b"\n")
            n += 1
    os.replace(temp, path)
    return n

"""The end-of-run summary (``OUT.summary.json``): counts, tokens, cost, throughput, latency, 429s.

Counts, tokens, cost and latency cover the whole batch (every run of it, from the journal);
``this_run`` covers the run that just ended.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kimiflow.batch.journal import Journal

COMPLETED, INTERRUPTED, QUOTA_EXCEEDED = "completed", "interrupted", "quota_exceeded"
AUTH_FAILED, PERMISSION_DENIED, UNREACHABLE = "auth_failed", "permission_denied", "unreachable"
"""Statuses of a run stopped because the key was rejected, lacked permission, or the server was down."""
STORE_FAILED, INPUT_CHANGED = "store_failed", "input_changed"
"""Statuses of a run stopped by its own files: a result could not be made durable (disk full, journal
unusable), or the input file changed while the run read it."""
STATUSES = frozenset({COMPLETED, INTERRUPTED, QUOTA_EXCEEDED, AUTH_FAILED, PERMISSION_DENIED, UNREACHABLE,
                      STORE_FAILED, INPUT_CHANGED})
"""Every value ``BatchSummary.status`` takes."""


@dataclass
class RunStats:
    """Figures of one run of the batch."""

    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    rate_limited: int = 0
    elapsed_s: float = 0.0

    @property
    def requests_per_minute(self) -> float:
        return self.succeeded / self.elapsed_s * 60.0 if self.elapsed_s > 0 else 0.0


@dataclass
class BatchSummary:
    """What ``run_batch`` returns and writes as JSON.

    >>> summary = await run_batch("in.jsonl", "out.jsonl", tier=2, model="moonshot-v1-8k")
    >>> summary.status, summary.succeeded, summary.cost_cny
    """

    status: str
    input: str
    output: str
    errors: str
    journal: str
    total: int
    succeeded: int
    failed: int
    pending: int
    prompt_tokens: int
    completion_tokens: int
    cost_cny: float
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    rate_limited_total: int
    this_run: RunStats = field(default_factory=RunStats)
    limits: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    resume_command: str | None = None
    top_failure: dict[str, Any] | None = None
    """The most common failure: ``{"kind", "count", "example"}`` (``None`` without failures)."""
    remote: dict[str, Any] | None = None
    """With ``--remote``: the Batch API batch (``batch_id``, ``status``, ``request_counts``); else ``None``."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        run = data.pop("this_run")
        run["requests_per_minute"] = round(self.this_run.requests_per_minute, 2)
        run["requests_per_second"] = round(self.this_run.requests_per_minute / 60.0, 3)
        run["elapsed_s"] = round(run["elapsed_s"], 3)
        data["this_run"] = run
        data["counts"] = {"total": self.total, "succeeded": self.succeeded, "failed": self.failed,
                          "pending": self.pending}
        data["tokens"] = {"prompt": self.prompt_tokens, "completion": self.completion_tokens,
                          "total": self.total_tokens}
        data["latency_ms"] = {"p50": self.latency_ms_p50, "p95": self.latency_ms_p95}
        data["cost_cny"] = round(self.cost_cny, 6)
        return data

    def write(self, path: str | Path) -> None:
        """Write the JSON atomically (a crash never leaves half a summary)."""
        path = Path(path)
        temp = path.with_name(path.name + ".tmp")
        temp.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(temp, path)

    @classmethod
    def empty(cls, paths: dict[str, str], message: str) -> BatchSummary:
        """The summary of an input without a single request (nothing is written)."""
        return cls(status=COMPLETED, input=paths["input"], output=paths["output"], errors=paths["errors"],
                   journal=paths["journal"], total=0, succeeded=0, failed=0, pending=0, prompt_tokens=0,
                   completion_tokens=0, cost_cny=0.0, latency_ms_p50=None, latency_ms_p95=None,
                   rate_limited_total=0, message=message)

    def describe(self) -> str:
        """A few human lines for the end of a CLI run."""
        if self.total == 0:
            return f"warning: {self.message}"
        run = self.this_run
        lines = [
            f"{self.status}: {self.succeeded}/{self.total} succeeded, {self.failed} failed, {self.pending} not done",
            f"tokens {self.total_tokens} (prompt {self.prompt_tokens}, completion {self.completion_tokens}), "
            f"cost ¥{self.cost_cny:.4f}",
            f"this run: {run.succeeded} in {run.elapsed_s:.1f}s ({run.requests_per_minute:.0f}/min), "
            f"{run.rate_limited} rate-limited responses, latency p50 {_ms(self.latency_ms_p50)} "
            f"p95 {_ms(self.latency_ms_p95)}",
        ]
        if self.failed:
            lines.append(f"failures: {self.errors}")
            if self.top_failure:
                top = self.top_failure
                lines.append(f"most common failure: {top['kind']} ({top['count']} of {self.failed}), "
                             f"e.g. {top['example']}")
            again = (f"{self.resume_command} --retry-failed" if self.resume_command
                     else "the same call with retry_failed=True")
            lines.append(f"re-run only the failures with: {again}")
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def build_summary(
    journal: Journal, *, status: str, paths: dict[str, str], run: RunStats, limits: dict[str, Any],
    message: str = "", resume_command: str | None = None,
) -> BatchSummary:
    """Summarise the batch from its journal plus this run's figures."""
    counts = journal.counts()
    totals = journal.totals()
    p50, p95 = journal.latency_percentiles(0.50, 0.95)
    return BatchSummary(
        status=status,
        input=paths["input"],
        output=paths["output"],
        errors=paths["errors"],
        journal=paths["journal"],
        total=sum(counts.values()),
        succeeded=counts["done"],
        failed=counts["failed"],
        pending=counts["pending"] + counts["in_flight"],
        prompt_tokens=int(totals["prompt_tokens"]),
        completion_tokens=int(totals["completion_tokens"]),
        cost_cny=float(totals["cost_cny"]),
        latency_ms_p50=p50,
        latency_ms_p95=p95,
        rate_limited_total=int(journal.get_meta("rate_limited") or 0),
        this_run=run,
        limits=limits,
        message=message,
        resume_command=resume_command,
        top_failure=most_common_failure(journal) if counts["failed"] else None,
    )


def most_common_failure(journal: Journal, example_chars: int = 200) -> dict[str, Any] | None:
    """The commonest kind of failure (status and error code) with its count and one example reason."""
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for record in journal.failed_records():
        status = (record.get("response") or {}).get("status_code")
        code = (record.get("error") or {}).get("code") or "error"
        kind = f"HTTP {status} {code}" if status is not None else str(code)
        kinds[kind] += 1
        if kind not in examples:
            reason = str(record.get("reason") or "")
            examples[kind] = reason if len(reason) <= example_chars else reason[: example_chars - 1] + "…"
    if not kinds:
        return None
    kind, count = kinds.most_common(1)[0]
    return {"kind": kind, "count": count, "example": examples[kind]}

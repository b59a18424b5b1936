"""Where a batch writes, derived from its output path, and the guard against adopting files it did not write."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from kimiflow.batch.journal import Journal, OutputConflictError


@dataclass(frozen=True)
class BatchPaths:
    """Where a batch writes: output, errors, journal and summary, all derived from the output."""

    input: Path
    output: Path
    errors: Path
    journal: Path
    summary: Path

    @classmethod
    def for_output(cls, input: str | Path, output: str | Path, errors: str | Path | None = None) -> BatchPaths:
        """``OUT.jsonl`` → ``OUT.errors.jsonl``, ``OUT.journal.sqlite``, ``OUT.summary.json``."""
        out = Path(output)
        stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
        base = out.with_name(stem)
        return cls(
            input=Path(input),
            output=out,
            errors=Path(errors) if errors is not None else base.with_name(stem + ".errors.jsonl"),
            journal=base.with_name(stem + ".journal.sqlite"),
            summary=base.with_name(stem + ".summary.json"),
        )

    def as_strings(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def refuse_files_of_another_run(paths: BatchPaths, journal: Journal, *, created: bool) -> None:
    """A new batch must not adopt, or truncate, a non-empty output or errors file it did not write.

    Without a journal nothing tells this run's results from someone's notes or another batch's
    answers (adopting those would skip requests and bypass the changed-parameters check).
    """
    for path, flag in ((paths.output, "-o"), (paths.errors, "--errors")):
        if path.exists() and path.stat().st_size > 0:
            journal.close()
            if created:  # leave the directory as it was
                for suffix in ("", "-wal", "-shm"):
                    Path(str(paths.journal) + suffix).unlink(missing_ok=True)
            raise OutputConflictError(
                f"{path} exists but has no journal {paths.journal}: choose a new {flag} or delete the file"
            )

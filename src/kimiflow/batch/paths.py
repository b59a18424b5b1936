"""Where a batch writes, derived from its output path, and the guard against adopting files it did not write."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from kimiflow.batch.journal import Journal, OutputConflictError
from kimiflow.core.errors import InvalidArgumentError


class PathConflictError(InvalidArgumentError):
    """Two of a batch's files are one file (e.g. ``errors=`` equal to ``output=``); nothing was sent."""


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
        paths = cls(
            input=Path(input),
            output=out,
            errors=Path(errors) if errors is not None else base.with_name(stem + ".errors.jsonl"),
            journal=base.with_name(stem + ".journal.sqlite"),
            summary=base.with_name(stem + ".summary.json"),
        )
        paths.refuse_overlaps()
        return paths

    @property
    def lock(self) -> Path:
        """The file whose OS lock says a run is writing this batch (it holds the holder's pid)."""
        return Path(str(self.journal) + ".lock")

    def refuse_overlaps(self) -> None:
        """``PathConflictError`` if two of the batch's files are one (same path, symlink or hard link).

        The errors file and the summary are rewritten whole: equal to the output, the journal or the
        input they would destroy it.
        """
        named = [("the input", self.input), ("output=", self.output), ("errors=", self.errors),
                 ("the journal", self.journal), ("the summary", self.summary), ("the lock file", self.lock)]
        for i, (name_a, a) in enumerate(named):
            for name_b, b in named[i + 1:]:
                if _same_file(a, b):
                    raise PathConflictError(
                        f"{name_a} {a} and {name_b} {b} are the same file; every file of a batch must be "
                        "its own: choose another " + ("errors=" if "errors=" in (name_a, name_b) else "output=")
                    )

    def as_strings(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):  # hard links and symlinks to one inode
            return True
    except OSError:
        pass  # one of them does not exist yet: compare where they would be
    return os.path.realpath(a) == os.path.realpath(b)


def refuse_files_of_another_run(paths: BatchPaths, journal: Journal, *, created: bool) -> None:
    """A new batch must not adopt, or truncate, a non-empty output or errors file it did not write.

    Without a journal nothing tells this run's results from someone's notes or another batch's
    answers (adopting those would skip requests and bypass the changed-parameters check).
    """
    for path, flag in ((paths.output, "output="), (paths.errors, "errors=")):
        if path.exists() and path.stat().st_size > 0:
            journal.close()
            if created:  # leave the directory as it was
                for suffix in ("", "-wal", "-shm"):
                    Path(str(paths.journal) + suffix).unlink(missing_ok=True)
            raise OutputConflictError(
                f"{path} exists but has no journal {paths.journal}: choose a new {flag} or delete the file"
            )

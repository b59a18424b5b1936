"""``kimiflow batch IN.jsonl -o OUT.jsonl``: run a file of requests at the account's limits, resumably."""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from kimiflow.batch.options import BatchOptions
    from kimiflow.batch.progress import Progress
    from kimiflow.batch.summary import BatchSummary

FLAGS = {
    "api_key": "--api-key", "concurrency": "--concurrency", "errors": "--errors", "grace_seconds": "--grace",
    "max_attempts": "--max-attempts", "max_tokens": "--max-tokens", "model": "--model", "output": "-o",
    "retry_failed": "--retry-failed", "rpm": "--rpm", "skip_invalid": "--skip-invalid", "system": "--system",
    "tier": "--tier", "timeout": "--timeout", "tpd": "--tpd", "tpm": "--tpm", "schema": "--schema",
    "completion_window": "--completion-window", "poll_interval": "--poll-interval",
}
"""The library's parameter names (as its messages write them, ``name=``) and the flags they are here."""
OUTAGE_WAIT = 120.0
"""With ``--limits URL``, seconds the run waits for an unreachable Redis before the requests left fail."""
_PARAMETER = re.compile(r"\b([a-z_]+)=(True\b|N\b)?")


def in_flags(message: str) -> str:
    """A library message in the command's words: ``skip_invalid=True`` -> ``--skip-invalid``, ``tier=N`` -> ``--tier N``.

    >>> in_flags("Fix the lines, or pass skip_invalid=True to run the valid ones only.")
    'Fix the lines, or pass --skip-invalid to run the valid ones only.'
    """

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if name not in FLAGS:
            return match.group(0)
        return FLAGS[name] + (" N" if value == "N" else "")

    return _PARAMETER.sub(flag, message)


class _InFlags:
    """The run's display, with the notes it is given translated by ``in_flags``."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def start(self, total: int, already_done: int, *, failed: int = 0, tokens: int = 0,
              cost_cny: float = 0.0) -> None:
        self._progress.start(total, already_done, failed=failed, tokens=tokens, cost_cny=cost_cny)

    def advance(self, *, ok: bool, tokens: int, cost_cny: float) -> None:
        self._progress.advance(ok=ok, tokens=tokens, cost_cny=cost_cny)

    def tick(self) -> None:
        self._progress.tick()

    def note(self, message: str) -> None:
        self._progress.note(in_flags(message))

    def stop(self) -> None:
        self._progress.stop()


async def _run(input_path: Path, output: Path, options: BatchOptions, progress: Progress, limits_url: str | None,
               key: str) -> BatchSummary:
    """The run, paced by the in-process limiter or, with ``--limits URL``, by the account's shared one."""
    from kimiflow.batch.runner import run_batch

    if limits_url is None:
        return await run_batch(input_path, output, options=options, progress=progress)
    from kimiflow.limits import RedisLimiter

    # Keyed by the API key (hashed, never stored): every process spending that key shares its books.
    # A batch is the class that yields first near the limits, so online traffic on the key goes on.
    # A Redis restart pauses the run (nothing is admitted meanwhile) instead of failing what is left.
    async with RedisLimiter(limits_url, options.rate_limits, key=key, priority="batch",
                            outage_wait=OUTAGE_WAIT) as limiter:
        await limiter.ping()
        return await run_batch(input_path, output, options=options.with_limiter(limiter), progress=progress)


def _resume_command(ctx: click.Context) -> str:
    """The same command line again (without ``--retry-failed``); the API key is never included."""
    args = [str(ctx.params["input_path"])]
    for name, value in ctx.params.items():
        if name in ("input_path", "api_key", "retry_failed") or value is None or value is False:
            continue
        param = next(p for p in ctx.command.params if p.name == name)
        if value == param.default:
            continue
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return shlex.join(["kimiflow", "batch", *args])


@click.command(name="batch")
@click.argument("input_path", metavar="IN.jsonl",
                type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Results, one JSON line per finished request (Batch API output form).")
@click.option("--errors", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Failed requests with a reason (default: OUT.errors.jsonl).")
@click.option("--tier", type=click.IntRange(0, 5), default=None,
              help="Kimi account tier 0..5: sets concurrency, RPM and TPM (default 0 unless all three are given).")
@click.option("--concurrency", type=click.IntRange(1), default=None, help="Maximum requests in flight.")
@click.option("--rpm", type=click.IntRange(1), default=None, help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(1), default=None, help="Tokens per minute (prompt + max_tokens).")
@click.option("--tpd", type=click.IntRange(1), default=None, help="Tokens per day.")
@click.option("--limits", "limits_url", default=None, metavar="URL",
              help="Share these limits with every process on the same key through Redis: redis://HOST:PORT/0, "
                   "rediss://... or unix:///path/redis.sock (needs kimiflow[redis]).")
@click.option("-m", "--model", default=None, help="Model for lines that name none.")
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="max_tokens for lines that set none.")
@click.option("-s", "--system", default=None, help="System prompt for lines that have none.")
@click.option("--max-attempts", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Attempts per request for transient failures (5xx, resets, timeouts).")
@click.option("--retry-failed", is_flag=True, help="Re-run the requests that failed last time (only those).")
@click.option("--skip-invalid", is_flag=True, help="Run the valid lines even if some lines are invalid.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None, help="Per-request timeout in seconds.")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds in-flight requests get to finish after Ctrl-C.")
@click.option("--base-url", default=None, help="API base URL (default: MOONSHOT_BASE_URL or api.moonshot.cn).")
@click.option("--api-key", default=None, help="API key (default: MOONSHOT_API_KEY). Prefer the environment.")
@click.option("--quiet", is_flag=True, help="No progress display, only the final summary.")
@click.option("--remote", is_flag=True,
              help="Run through Kimi's Batch API (40 % cheaper, results within the completion window); "
                   "same files, resumable: a re-run polls the batch already submitted.")
@click.option("--poll-interval", type=click.FloatRange(min=0.01), default=10.0, show_default=True,
              help="With --remote: seconds between status checks of the batch.")
@click.option("--completion-window", default="24h", show_default=True,
              help="With --remote: how long Kimi may take, 12h to 7d (e.g. 24h, 3d).")
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Every answer must match this JSON Schema file: re-asked if invalid, validated object in \"parsed\".")
def batch(
    input_path: Path, output: Path, errors: Path | None, tier: int | None, concurrency: int | None,
    rpm: int | None, tpm: int | None, tpd: int | None, limits_url: str | None, model: str | None,
    max_tokens: int | None, system: str | None, max_attempts: int, retry_failed: bool, skip_invalid: bool, timeout: float | None,
    grace: float, base_url: str | None, api_key: str | None, quiet: bool, remote: bool, poll_interval: float,
    completion_window: str, schema_file: str | None,
) -> None:
    """Run a JSONL file of chat requests at the account's limits; re-run the same command to resume.

    Lines are Batch API requests ({"custom_id", "method", "url", "body"}) or short ones
    ({"custom_id"?, "messages" | "prompt", params...}). Writes OUT.jsonl, OUT.errors.jsonl,
    OUT.summary.json and the journal OUT.journal.sqlite.

    \b
    kimiflow batch tickets.jsonl -o out.jsonl --tier 2 -m moonshot-v1-8k
    kimiflow batch tickets.jsonl -o out.jsonl --concurrency 50 --rpm 200 --tpm 2000000
    kimiflow batch tickets.jsonl -o out.jsonl --tier 2 --limits redis://127.0.0.1:6379/0

    \b
    Exit status: 0 all done, 2 some requests failed (re-run with --retry-failed),
    3 quota exhausted, 4 key rejected or not permitted, 5 server unreachable, 6 stopped because a
    result could not be recorded (disk full, journal unusable) or the input changed, 130 interrupted.
    """
    from kimiflow.batch.options import BatchOptions
    from kimiflow.batch.paths import BatchPaths
    from kimiflow.batch.progress import NullProgress, PlainProgress, default_progress
    from kimiflow.batch.summary import (
        AUTH_FAILED,
        INPUT_CHANGED,
        INTERRUPTED,
        PERMISSION_DENIED,
        QUOTA_EXCEEDED,
        STORE_FAILED,
        UNREACHABLE,
    )
    from kimiflow.cli.main import remember_base_url
    from kimiflow.cli.settings import require_api_key, resolve
    from kimiflow.core.errors import KimiflowError
    from kimiflow.limits import RateLimits

    explicit = (concurrency, rpm, tpm)
    if tier is None and any(v is not None for v in explicit) and None in explicit:
        raise click.UsageError("without --tier, give all three of --concurrency, --rpm and --tpm "
                               "(or add --tier N to take the rest from that tier)")
    if remote and limits_url is not None:
        raise click.UsageError("--limits paces requests this machine sends; with --remote Kimi runs them: drop one")
    if remote and schema_file is not None:
        raise click.UsageError("--schema re-asks invalid answers, which Kimi's Batch API cannot do: "
                               "drop --remote, or drop --schema and validate the output yourself")
    from kimiflow.cli.chat import _load_schema

    schema = _load_schema(schema_file) if schema_file else None
    key = api_key or require_api_key()
    url = base_url or resolve("base_url")
    if url:
        remember_base_url(url)
    progress = NullProgress() if quiet else default_progress(sys.stderr)
    if isinstance(progress, PlainProgress):
        progress.interval = 5.0
    try:
        if tier is None and None not in explicit:
            limits: dict[str, object] = {"limits": RateLimits(concurrency=concurrency, rpm=rpm, tpm=tpm, tpd=tpd)}
        else:
            limits = {"tier": tier, "concurrency": concurrency, "rpm": rpm, "tpm": tpm, "tpd": tpd}
        options = BatchOptions(
            **limits, errors=errors, api_key=key, base_url=url, timeout=timeout, model=model,  # type: ignore[arg-type]
            max_tokens=max_tokens, system=system, max_attempts=max_attempts, retry_failed=retry_failed,
            skip_invalid=skip_invalid, grace_seconds=grace, handle_signals=True,
            resume_command=_resume_command(click.get_current_context()), schema=schema,
        )
        chosen = options.rate_limits
        limits_note = (f"{chosen.concurrency} in flight, {chosen.rpm} RPM, {chosen.tpm} TPM" if tier is None
                       and None not in explicit else
                       f"tier {tier or 0}: {chosen.concurrency} in flight, {chosen.rpm} RPM, {chosen.tpm} TPM")
        if limits_url is not None:
            limits_note += ", shared through Redis"
        if remote:
            from kimiflow.batch.remote import run_remote

            if not quiet:
                click.echo(f"batch: {input_path} -> {output} (Kimi's Batch API)", err=True)
            summary = run_remote(input_path, output, options=options, poll_interval=poll_interval,
                                 completion_window=completion_window,
                                 note=(lambda text: None) if quiet else (lambda text: click.echo(in_flags(text),
                                                                                                 err=True)))
        else:
            if not quiet:
                click.echo(f"batch: {input_path} -> {output} ({limits_note})", err=True)
            summary = asyncio.run(_run(input_path, output, options, _InFlags(progress), limits_url, key))
    except (KimiflowError, ValueError, OSError) as exc:
        # The CLI's one translation point: the library names its parameters, the user typed flags.
        raise click.ClickException(in_flags(str(exc))) from None
    click.echo(in_flags(summary.describe()), err=True)
    if summary.total == 0:
        return
    click.echo(f"summary: {BatchPaths.for_output(input_path, output, errors).summary}", err=True)
    if summary.status == QUOTA_EXCEEDED:
        raise click.exceptions.Exit(3)
    if summary.status in (AUTH_FAILED, PERMISSION_DENIED):
        raise click.exceptions.Exit(4)
    if summary.status == UNREACHABLE:
        raise click.exceptions.Exit(5)
    if summary.status in (STORE_FAILED, INPUT_CHANGED):
        raise click.exceptions.Exit(6)
    if summary.status == INTERRUPTED:
        raise click.exceptions.Exit(130)
    if summary.failed:
        raise click.exceptions.Exit(2)

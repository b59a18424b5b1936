"""``kimiflow batch IN.jsonl -o OUT.jsonl --remote``: the same batch through Kimi's Batch API (docs/kimi-api.md §7.5).

Same input, same output, errors and summary files, same journal as a live run (``run_batch``); the
requests run at Kimi, 40 % cheaper, within a completion window. The steps, each journaled before the
next so that a killed run resumes where it was and never submits twice::

    validate (size, one model, batch models, fixed sampling) ─▶ print the cost, batch beside real time
    ─▶ journal a run token ─▶ upload the pending requests (purpose="batch") ─▶ journal the file id
    ─▶ create the batch (metadata kimiflow_run=token) ─▶ journal the batch id ─▶ poll until it ends
    ─▶ download output and error files ─▶ record each custom_id once, in input order ─▶ clear the batch

A run killed after the create but before the batch id was journaled finds its batch again by the
token in its metadata. Every end gives its own outcome: completed (exit 0, or 2 when lines failed),
expired or cancelled (what ran is kept; the rest fail with ``batch_expired`` / ``batch_cancelled``:
``--retry-failed`` submits them again), failed validation (``RemoteBatchError`` with Kimi's errors).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from kimiflow.batch.inputs import BatchRequest, InputDefaults, iter_requests, scan_input
from kimiflow.batch.journal import DONE, DoneStats
from kimiflow.batch.options import BatchOptions
from kimiflow.batch.output import failure_record, success_record
from kimiflow.batch.paths import BatchPaths
from kimiflow.batch.runner import BatchInputError
from kimiflow.batch.stops import access_denied, quota_exhausted, unreachable
from kimiflow.batch.store import BatchStore
from kimiflow.batch.summary import (
    COMPLETED,
    INTERRUPTED,
    BatchSummary,
    RunStats,
    build_summary,
)
from kimiflow.core.catalog import BATCH_DISCOUNT, BATCH_MODELS, model_info
from kimiflow.core.errors import (
    APIConnectionError,
    AuthenticationError,
    KimiflowError,
    PermissionDeniedError,
    QuotaExceededError,
)
from kimiflow.core.pricing import cost_cny
from kimiflow.core.tokens import estimate_message_tokens

if TYPE_CHECKING:
    from kimiflow.client import Kimi
    from kimiflow.types.batches import Batch

MAX_FILE_BYTES = 100 * 1024 * 1024
"""Kimi's limit on an uploaded file, batch input included (docs/kimi-api.md §7.4, §7.5)."""
META_TOKEN, META_FILE, META_BATCH = "remote_token", "remote_input_file_id", "remote_batch_id"
"""Journal meta keys of the batch in progress (cleared once its results are recorded)."""
_SAMPLING = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")
_decoder = msgspec.json.Decoder()
_WINDOW = re.compile(r"^([1-9][0-9]{0,3})([hd])$")
POLL_SLACK_S = 3600.0
"""Polling gives up this long after the completion window should have ended (a re-run polls again)."""


class RemoteBatchError(KimiflowError):
    """Kimi's Batch API refused the batch (failed validation): nothing ran; the message lists why."""


def _fixed_values(model: str, body: dict[str, Any]) -> dict[str, float]:
    info = model_info(model)
    if info is None:
        return {}
    thinking = body.get("thinking")
    off = isinstance(thinking, dict) and thinking.get("type") == "disabled"
    fixed: dict[str, float] = {}
    temperature = info.fixed_temperature_off if off and info.fixed_temperature_off is not None else info.fixed_temperature
    for name, value in (("temperature", temperature), ("top_p", info.fixed_top_p), ("n", info.fixed_n),
                        ("presence_penalty", info.fixed_penalty), ("frequency_penalty", info.fixed_penalty)):
        if value is not None:
            fixed[name] = float(value)
    return fixed


def check_requests(requests: list[BatchRequest]) -> list[str]:
    """What Kimi's Batch API would refuse in these requests, one message a problem (empty: fine)."""
    problems: list[str] = []
    model = None
    for request in requests:
        body = request.body
        line_model = str(body.get("model"))
        if line_model not in BATCH_MODELS:
            problems.append(f"line {request.line}: model {line_model!r} cannot be batched; Kimi's Batch API takes "
                            f"{' or '.join(BATCH_MODELS)} (set model= or the line's model)")
            continue
        if model is None:
            model = line_model
        elif line_model != model:
            problems.append(f"line {request.line}: model {line_model!r}, but earlier lines use {model!r}; a batch "
                            "file holds one model: split the input by model")
            continue
        for name, value in _fixed_values(line_model, body).items():
            sent = body.get(name)
            if sent is not None and sent != value:
                problems.append(f"line {request.line}: {line_model} fixes {name} at {value:g}, the line sends "
                                f"{sent!r}; remove {name!r} from the line")
        if body.get("stream"):
            problems.append(f"line {request.line}: stream cannot be used in a batch; remove it")
    return problems


def batch_line(request: BatchRequest) -> bytes:
    """The request as a line of the uploaded file (the Batch API form)."""
    return msgspec.json.encode({"custom_id": request.custom_id, "method": "POST", "url": "/v1/chat/completions",
                                "body": request.body}) + b"\n"


def cost_estimate(requests: list[BatchRequest]) -> str:
    """The cost of the requests at real-time prices and with the batch discount, prompt-only to every budget spent."""
    low = high = 0.0
    prompt = budget = 0
    for request in requests:
        model = str(request.body.get("model"))
        info = model_info(model)
        tokens = estimate_message_tokens(request.body["messages"])
        limit = request.body.get("max_completion_tokens") or request.body.get("max_tokens")
        out = int(limit) if isinstance(limit, int) else (info.default_max_tokens if info else 0)
        prompt += tokens
        budget += out
        low += cost_cny(model, tokens, 0)
        high += cost_cny(model, tokens, out)
    keep = 1.0 - BATCH_DISCOUNT
    return (f"{len(requests)} request(s), about {prompt:,} prompt tokens, at most {budget:,} completion tokens: "
            f"real-time ¥{low:.4f}–¥{high:.4f}; Batch API (−{BATCH_DISCOUNT:.0%}) ¥{low * keep:.4f}–¥{high * keep:.4f}")


def window_seconds(window: str) -> int:
    """Seconds of a completion window, ``"12h"`` to ``"7d"``; ``BatchInputError`` for anything else."""
    match = _WINDOW.match(window) if isinstance(window, str) else None
    hours = None if match is None else int(match.group(1)) * (24 if match.group(2) == "d" else 1)
    if hours is None or not 12 <= hours <= 7 * 24:
        raise BatchInputError(f"completion_window= must be from 12h to 7d, written like 24h or 3d, got {window!r}")
    return hours * 3600


def run_remote(input: str | Path, output: str | Path, *, options: BatchOptions, client: Kimi | None = None,
               poll_interval: float = 10.0, completion_window: str = "24h",
               note: Callable[[str], None] = lambda message: None) -> BatchSummary:
    """Run ``input`` through Kimi's Batch API and write what ``run_batch`` writes; resumable.

    ``note`` receives the human lines (the cost before submitting, status changes). Ctrl-C while
    polling leaves the batch running at Kimi; the same command resumes polling it.
    """
    if poll_interval <= 0:
        raise BatchInputError(f"poll_interval= must be positive seconds, got {poll_interval!r}")
    window_s = window_seconds(completion_window)
    paths = BatchPaths.for_output(input, output, options.errors)
    defaults: InputDefaults = options.defaults
    scan = scan_input(paths.input, defaults)
    if not scan.ok and not options.skip_invalid:
        raise BatchInputError(f"{paths.input}: {scan.problem_count} invalid line(s), nothing was sent:\n"
                              f"{scan.describe()}\nFix the lines, or pass skip_invalid=True to run the valid ones only.")
    if scan.requests == 0:
        return BatchSummary.empty(paths.as_strings(), f"no requests in {paths.input}; nothing was sent")
    requests = list(iter_requests(paths.input, defaults, skip_lines=scan.bad_lines))
    problems = check_requests(requests)
    if problems:
        shown = "\n".join(problems[:20]) + (f"\n... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise BatchInputError(f"{paths.input}: {len(problems)} problem(s) for Kimi's Batch API, nothing was sent:\n"
                              f"{shown}")
    store = BatchStore.open(
        paths, fingerprint=scan.fingerprint, params={**defaults.as_params(), "skip_invalid": options.skip_invalid},
        requests=lambda: ((r.custom_id, r.line) for r in requests), retry_failed=options.retry_failed,
    )
    own_client = client is None
    if client is None:
        from kimiflow.client import Kimi

        client = Kimi(api_key=options.api_key, base_url=options.base_url, timeout=options.timeout)
    run = RunStats()
    started = time.monotonic()
    status, message, remote = COMPLETED, "", None
    try:
        try:
            batch = _active_or_new_batch(client, store, requests, paths, completion_window, note)
            if batch is not None:
                batch = _poll(client, batch, poll_interval, window_s + POLL_SLACK_S, note)
                remote = {"batch_id": batch.id, "status": batch.status,
                          "request_counts": _counts(batch)}
                status, message = _merge(client, store, batch, requests, run)
        except KeyboardInterrupt:
            batch_id = store.journal.get_meta(META_BATCH)
            status = INTERRUPTED
            message = (f"interrupted: batch {batch_id} keeps running at Kimi; run the same command to resume polling"
                       if batch_id else "interrupted before a batch was created; run the same command to start again")
        except QuotaExceededError as exc:
            status, message = quota_exhausted(exc)
        except (AuthenticationError, PermissionDeniedError) as exc:
            status, message = access_denied(exc, client.base_url)
        except APIConnectionError as exc:
            status, message = unreachable(client.base_url, exc)
        run.elapsed_s = time.monotonic() - started
        summary = build_summary(store.journal, status=status, paths=paths.as_strings(), run=run, limits={},
                                message=message, resume_command=options.resume_command)
        summary.remote = remote
    finally:
        store.close()
        if own_client:
            client.close()
    if summary.status == COMPLETED and summary.pending:
        summary.status = INTERRUPTED
    if summary.pending and options.resume_command:
        summary.message = (summary.message + "\n" if summary.message else "") + f"resume with: {options.resume_command}"
    summary.write(paths.summary)
    return summary


def _counts(batch: Batch) -> dict[str, int] | None:
    counts = batch.request_counts
    return None if counts is None else {"total": counts.total, "completed": counts.completed, "failed": counts.failed}


def _active_or_new_batch(client: Kimi, store: BatchStore, requests: list[BatchRequest], paths: BatchPaths,
                         window: str, note: Callable[[str], None]) -> Batch | None:
    """The batch this output is waiting for (journaled, or found by its token), else a new one; None: nothing to do."""
    journal = store.journal
    batch_id = journal.get_meta(META_BATCH)
    if batch_id:
        note(f"resuming batch {batch_id} submitted earlier (not submitting again)")
        return client.batches.retrieve(batch_id)
    token = journal.get_meta(META_TOKEN)
    if token and journal.get_meta(META_FILE):
        found = _find_by_token(client, token)
        if found is not None:
            note(f"found batch {found.id} created by the interrupted run (not submitting again)")
            _journal(store, {META_BATCH: found.id})
            return found
    statuses = store.statuses([r.custom_id for r in requests])
    pending = [r for r in requests if statuses.get(r.custom_id) != DONE and statuses.get(r.custom_id) != "failed"]
    if not pending:
        return None
    content = b"".join(batch_line(r) for r in pending)
    if len(content) > MAX_FILE_BYTES:
        raise BatchInputError(f"the batch file would be {len(content) / 1e6:.1f} MB; Kimi takes at most 100 MB a "
                              "file: split the input")
    note("cost estimate: " + cost_estimate(pending))
    token = uuid.uuid4().hex
    _journal(store, {META_TOKEN: token})
    uploaded = client.files.upload(content, purpose="batch", filename=paths.output.stem + ".batch-input.jsonl")
    _journal(store, {META_FILE: uploaded.id})
    batch = client.batches.create(input_file_id=uploaded.id, completion_window=window,
                                  metadata={"kimiflow_run": token})
    store.crash_point("remote-after-create")
    _journal(store, {META_BATCH: batch.id})
    store.crash_point("remote-after-submit")
    note(f"submitted batch {batch.id} ({len(pending)} request(s), window {window}); polling it")
    return batch


def _journal(store: BatchStore, values: dict[str, str]) -> None:
    with store.journal.transaction():
        for key, value in values.items():
            store.journal.set_meta(key, value)


def _find_by_token(client: Kimi, token: str, pages: int = 50) -> Batch | None:
    after = None
    for _ in range(pages):  # bounded: 50 pages of 100 batches
        page = client.batches.list(after=after, limit=100)
        for batch in page.data:
            if (batch.metadata or {}).get("kimiflow_run") == token:
                return batch
        if not page.has_more or not page.data:
            return None
        after = page.data[-1].id
    return None


def _poll(client: Kimi, batch: Batch, interval: float, limit_s: float, note: Callable[[str], None]) -> Batch:
    """Retrieve the batch every ``interval`` seconds until it ends, for at most ``limit_s`` seconds."""
    last = ""
    deadline = time.monotonic() + limit_s
    while not batch.is_terminal:
        if batch.status != last:
            counts = batch.request_counts
            note(f"batch {batch.id}: {batch.status}" + (f" ({counts.completed + counts.failed}/{counts.total})"
                                                        if counts and counts.total else ""))
            last = batch.status
        if time.monotonic() > deadline:
            raise RemoteBatchError(f"batch {batch.id} is still {batch.status} an hour after its completion window; "
                                   "run the same command later to poll it again")
        time.sleep(interval)
        batch = client.batches.retrieve(batch.id)
    return batch


def _download(client: Kimi, file_id: str | None) -> dict[str, dict[str, Any]]:
    if not file_id:
        return {}
    results: dict[str, dict[str, Any]] = {}
    for raw in client.files.content(file_id).splitlines():
        if not raw.strip():
            continue
        record = _decoder.decode(raw)
        if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
            results.setdefault(record["custom_id"], record)  # a custom_id twice: the first result counts
    return results


def _merge(client: Kimi, store: BatchStore, batch: Batch, requests: list[BatchRequest],
           run: RunStats) -> tuple[str, str]:
    """Record every result of the ended batch once, in input order; the summary status and message."""
    journal = store.journal
    if batch.status == "failed":
        errors = batch.errors.data if batch.errors else []
        listed = "\n".join(f"line {e.line}: {e.message} ({e.code})" if e.line else f"{e.message} ({e.code})"
                           for e in errors[:20])
        with journal.transaction():
            for key in (META_TOKEN, META_FILE, META_BATCH):
                journal.delete_meta(key)
        raise RemoteBatchError(f"Kimi's Batch API refused batch {batch.id} (failed validation), nothing ran:\n"
                               f"{listed}\nFix the input and run it again to a new output")
    outputs = _download(client, batch.output_file_id)
    failures = _download(client, batch.error_file_id)
    statuses = store.statuses([r.custom_id for r in requests])
    model_of = {r.custom_id: str(r.body.get("model")) for r in requests}
    for request in requests:
        cid = request.custom_id
        if statuses.get(cid) in (DONE, "failed"):
            continue  # recorded already: by an earlier run, or before a crash during this merge
        record = outputs.get(cid)
        if record is not None and (record.get("response") or {}).get("status_code") == 200:
            response = record["response"]
            body = response.get("body") or {}
            usage = body.get("usage") or {}
            prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            cached = int(usage.get("cached_tokens") or 0)
            cost = cost_cny(model_of[cid], prompt, completion, cached) * (1.0 - BATCH_DISCOUNT)
            store.mark_sent(cid)
            store.record_success(success_record(cid, 200, response.get("request_id"), body, attempts=1,
                                                latency_ms=0.0, cost_cny=cost),
                                 DoneStats(attempts=1, prompt_tokens=prompt, completion_tokens=completion,
                                           cost_cny=cost, latency_ms=0.0))
            run.succeeded += 1
            continue
        failed = failures.get(cid) or record
        if failed is None:
            continue  # not in either file (left pending: the next run submits it again)
        response = failed.get("response")
        error = failed.get("error") or {}
        if response:
            err_body = response.get("body") or {}
            detail = (err_body.get("error") or {}) if isinstance(err_body, dict) else {}
            code = str(detail.get("type") or "error")
            reason = f"HTTP {response.get('status_code')} {code}: {detail.get('message') or err_body}"
        else:
            code = str(error.get("code") or "error")
            reason = f"{code}: {error.get('message') or 'not run'}"
            if code in ("batch_expired", "batch_cancelled"):
                reason += " (re-run with retry_failed=True to submit it in a new batch)"
        store.mark_sent(cid)
        store.record_failure(failure_record(cid, reason, code=code,
                                            status_code=response.get("status_code") if response else None,
                                            request_id=response.get("request_id") if response else None,
                                            body=response.get("body") if response else None,
                                            attempts=1, latency_ms=0.0), 1)
        run.failed += 1
    with journal.transaction():
        for key in (META_TOKEN, META_FILE, META_BATCH):
            journal.delete_meta(key)
    counts = batch.request_counts
    ran = f"{counts.completed} answered, {counts.failed} refused of {counts.total}" if counts else ""
    if batch.status == "expired":
        return COMPLETED, (f"batch {batch.id} expired (window {batch.completion_window}): {ran}; the requests it "
                           "did not run failed with batch_expired: re-run with retry_failed=True to submit them again")
    if batch.status == "cancelled":
        return COMPLETED, (f"batch {batch.id} was cancelled: {ran}; the requests it did not run failed with "
                           "batch_cancelled: re-run with retry_failed=True to submit them again")
    return COMPLETED, f"batch {batch.id} completed: {ran}"

"""Run a JSONL file of chat requests at the account's limits, resumably: ``run_batch``.

The run: validate the input (nothing is sent if a line is bad, unless told to skip bad lines),
open the store (journal + output, repaired after a crash), then stream the pending requests through
a bounded queue to a fixed pool of workers. Each worker sends through ``AsyncKimi`` with the
client's own retries off: the limiter decides when to send, the worker decides what to retry with
the one ``RetryPolicy`` backoff (5xx, resets, timeouts, a malformed 200, up to ``max_attempts``;
429s after the pause the limiter imposes). A quota error or a stop request (Ctrl-C) stops taking
new work; requests in flight get ``grace_seconds`` to finish, the rest are recorded as not done.
A request that cannot succeed becomes a failed line with its reason; a store that cannot record a
result, or an input that changes under the run, stops it cleanly. The summary is always written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kimiflow.batch import stops
from kimiflow.batch.inputs import BatchRequest, InputDefaults, InputError, iter_requests, scan_input
from kimiflow.batch.journal import PENDING, DoneStats, JournalError
from kimiflow.batch.options import MAX_RATE_LIMITED_RETRIES, UNREACHABLE_AFTER, BatchOptions
from kimiflow.batch.output import failure_record, success_record
from kimiflow.batch.paths import BatchPaths
from kimiflow.batch.progress import NullProgress, Progress
from kimiflow.batch.store import BatchStore, BatchStoreError
from kimiflow.batch.summary import (
    COMPLETED,
    INTERRUPTED,
    STORE_FAILED,
    BatchSummary,
    RunStats,
    build_summary,
)
from kimiflow.core.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    InvalidArgumentError,
    MalformedResponseError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
)
from kimiflow.core.pricing import usage_cost_cny
from kimiflow.core.retry import RetryPolicy, is_retryable
from kimiflow.limits import Limiter, RateLimiter, RequestTooLargeError, request_charge
from kimiflow.parse_loop import ParseLoop
from kimiflow.structured import AnswerValidationError, StructuredAnswerError, redacted_message
from kimiflow.types.parsed import ParsedChatCompletion

if TYPE_CHECKING:
    from kimiflow.client import AsyncKimi
    from kimiflow.types.chat import ChatCompletion

__all__ = ["MAX_RATE_LIMITED_RETRIES", "UNREACHABLE_AFTER", "BatchInputError", "run_batch", "run_batch_sync"]

DEFAULT_WORKERS = 64
"""Workers when no concurrency limit is set."""
MAX_WORKERS = 1000
STORE_FAILURES: tuple[type[BaseException], ...] = (BatchStoreError, OSError, sqlite3.Error, JournalError)
"""What the store raises when a result cannot be made durable: the run stops, it does not fail the request."""


class BatchInputError(InvalidArgumentError):
    """The input file has invalid lines; nothing was sent."""


@dataclass
class _Held:
    """A request that gave up unable to connect, its verdict held until the server answers again."""

    request: BatchRequest
    exc: APIConnectionError
    attempts: int
    latency_ms: float


@dataclass
class _RunState:
    """What changes while the run goes: its figures, why it stopped, who is on the wire."""

    stats: RunStats = field(default_factory=RunStats)
    status: str = COMPLETED
    message: str = ""
    probing: bool = False
    sending: set[asyncio.Task[Any]] = field(default_factory=set)
    """Workers whose request is on the wire right now: only these get the grace period on a stop."""
    unreachable: list[_Held] = field(default_factory=list)
    """Requests that gave up unable to connect since the server last answered: failed once it answers
    again (or the run ends), left pending if ``unreachable_after`` of them pile up and the run stops."""


@dataclass
class _Run:
    """The fixed collaborators of one run, and its state."""

    options: BatchOptions
    paths: BatchPaths
    store: BatchStore
    limiter: Limiter
    client: AsyncKimi
    progress: Progress
    policy: RetryPolicy
    base_url: str
    bad_lines: set[int]
    input_stamp: tuple[int, int]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the run's first request has finished: until then it goes alone (see ``_worker``)."""
    rng: random.Random = field(default_factory=random.Random)
    state: _RunState = field(default_factory=_RunState)


async def run_batch(
    input: str | Path,
    output: str | Path,
    *,
    options: BatchOptions | None = None,
    client: AsyncKimi | None = None,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    **keywords: Any,
) -> BatchSummary:
    """Run every request of ``input`` (JSONL) and write the results to ``output``; resumable.

    >>> summary = await run_batch("tickets.jsonl", "out.jsonl", options=BatchOptions(tier=2, model="moonshot-v1-8k"))
    >>> summary = await run_batch("tickets.jsonl", "out.jsonl", tier=2, model="moonshot-v1-8k")  # the same
    >>> print(summary.describe())

    Running it again with the same arguments finishes only what is missing. ``keywords`` are
    ``BatchOptions`` fields, for callers that pass no ``options``. ``stop`` (an event) or, with
    ``handle_signals``, Ctrl-C stops the run gracefully. A rejected key (401), a permission error
    (403), a quota error, ``unreachable_after`` requests in a row unable to connect, a store that
    cannot record a result or an input changed during the run stop it too, leaving the requests not
    yet done pending for the next run. ``progress.tick()`` is called every ``heartbeat_seconds``.
    """
    if options is not None and keywords:
        raise InvalidArgumentError(f"give run_batch() either options= or keyword options, not both "
                                   f"(got options= and {', '.join(sorted(keywords))})")
    opts = options if options is not None else BatchOptions.from_keywords(**keywords)
    paths = BatchPaths.for_output(input, output, opts.errors)  # refuses two of its files being one
    defaults = opts.defaults
    scan = scan_input(paths.input, defaults)
    if not scan.ok and not opts.skip_invalid:
        raise BatchInputError(
            f"{paths.input}: {scan.problem_count} invalid line(s), nothing was sent:\n{scan.describe()}\n"
            "Fix the lines, or pass skip_invalid=True to run the valid ones only."
        )
    if scan.requests == 0:
        # Nothing to run: create no journal or output files, just say so.
        skipped = f" ({scan.problem_count} invalid line(s) skipped)" if scan.problem_count else ""
        return BatchSummary.empty(paths.as_strings(), f"no requests in {paths.input}{skipped}; nothing was sent")
    stamp = _stamp(paths.input)
    own_limiter = opts.limiter is None
    limiter: Limiter = opts.limiter or RateLimiter(opts.rate_limits, clock=opts.clock, sleep=opts.sleep)

    store = BatchStore.open(
        paths, fingerprint=scan.fingerprint, params={**defaults.as_params(), "skip_invalid": opts.skip_invalid,
                                                     **_schema_params(opts)},
        requests=lambda: ((r.custom_id, r.line) for r in iter_requests(paths.input, defaults,
                                                                       skip_lines=scan.bad_lines)),
        retry_failed=opts.retry_failed,
    )
    closed = False
    try:
        if own_limiter and isinstance(limiter, RateLimiter):  # a limiter of the caller's already counts its sends
            _seed_recent_sends(limiter, store)
        own_client = client is None
        if client is None:
            from kimiflow import AsyncKimi

            client = AsyncKimi(api_key=opts.api_key, base_url=opts.base_url, timeout=opts.timeout, max_retries=0)
        else:
            client = client.with_options(max_retries=0)
        run = _Run(opts, paths, store, limiter, client, progress or NullProgress(), opts.retry_policy,
                   base_url=client.base_url, bad_lines=scan.bad_lines, input_stamp=stamp,
                   stop=stop or asyncio.Event())
        if store.repair.changed:
            repair = store.repair
            run.progress.note(
                f"repaired the output after an interrupted run: {len(repair.adopted)} result(s) kept, "
                f"{repair.dropped_duplicates} duplicate(s) and {repair.torn_bytes} torn byte(s) removed, "
                f"{repair.lost} missing result(s) queued again"
            )
        started = opts.clock()
        try:
            await _execute(run, defaults)
        finally:
            run.state.stats.elapsed_s = opts.clock() - started
            if own_client:
                await client.close()
        summary = _finish(run)
        closed = True
        return summary
    finally:
        if not closed:
            with contextlib.suppress(*STORE_FAILURES):
                store.close()


def _finish(run: _Run) -> BatchSummary:
    """Record the run's totals, close the store and write the summary (also after a store failure)."""
    state, store = run.state, run.store
    try:
        store.add_rate_limited(state.stats.rate_limited)
    except STORE_FAILURES as exc:
        _store_failed(run, exc)
    summary = build_summary(
        store.journal, status=state.status, paths=run.paths.as_strings(), run=state.stats,
        limits=dict(asdict(run.limiter.limits)), message=state.message,
    )
    try:
        store.close()
    except STORE_FAILURES as exc:
        if summary.status != STORE_FAILED:
            summary.status, summary.message = stops.store_failed(run.paths.output, exc)
    if summary.status == COMPLETED and summary.pending:
        summary.status = INTERRUPTED
        summary.message = summary.message or "stopped before every request was done"
    resume = run.options.resume_command
    summary.resume_command = resume
    if summary.pending and resume:
        summary.message = (summary.message + "\n" if summary.message else "") + f"resume with: {resume}"
    summary.write(run.paths.summary)
    return summary


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


async def _heartbeat(progress: Progress, every: float) -> None:
    """Tick the display on real time: the run may wait minutes for the limiter without finishing anything."""
    while True:
        await asyncio.sleep(every)
        progress.tick()


async def _execute(run: _Run, defaults: InputDefaults) -> None:
    counts = run.store.counts()
    totals = run.store.totals()
    run.progress.start(sum(counts.values()), counts["done"] + counts["failed"], failed=counts["failed"],
                       tokens=int(totals["prompt_tokens"] + totals["completion_tokens"]),
                       cost_cny=float(totals["cost_cny"]))
    pending = counts[PENDING]
    if pending == 0:
        run.progress.stop()
        return
    opts = run.options
    if opts.tier_defaulted:
        run.progress.note(stops.default_tier_note(run.limiter.limits, pending))
    limit = run.limiter.limits.concurrency
    workers_n = max(1, min(limit or DEFAULT_WORKERS, MAX_WORKERS, pending))
    queue: asyncio.Queue[BatchRequest | None] = asyncio.Queue(maxsize=workers_n * 2)
    loop = asyncio.get_running_loop()
    workers = [asyncio.create_task(_worker(run, queue)) for _ in range(workers_n)]
    producer = asyncio.create_task(_produce(run, queue, defaults, workers_n))
    heartbeat = asyncio.create_task(_heartbeat(run.progress, opts.heartbeat_seconds))
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            _request_stop(run, INTERRUPTED, "interrupted: stopped taking new requests")
            run.progress.note(f"stopping: letting {len(run.state.sending)} request(s) in flight finish "
                              f"(up to {opts.grace_seconds:.0f}s); press Ctrl-C again to abort now")
        elif interrupts == 2:
            abort = (f"aborted: {len(run.state.sending)} request(s) in flight were dropped (recorded as not done); "
                     "they will be sent again when you resume")
            run.progress.note(abort)
            run.state.message = f"{run.state.message}\n{abort}" if run.state.message else abort
            for task in workers:
                task.cancel()

    if opts.handle_signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, on_sigint)
    stop_wait = asyncio.ensure_future(run.stop.wait())
    all_workers = asyncio.gather(*workers, return_exceptions=True)
    try:
        # Waiting on the workers, not the producer: were every worker to end, a producer blocked on a
        # full queue would otherwise wait forever.
        first: set[asyncio.Future[Any]] = {stop_wait, all_workers}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        producer.cancel()
        if not all_workers.done():
            for task in workers:
                if task not in run.state.sending:
                    task.cancel()  # waiting for the limiter or a backoff: nothing to finish
            _, still = await asyncio.wait(workers, timeout=opts.grace_seconds)
            for task in still:
                task.cancel()
        await asyncio.gather(all_workers, producer, return_exceptions=True)
    finally:
        stop_wait.cancel()
        if opts.handle_signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        heartbeat.cancel()
        _settle_unreachable(run)
        run.progress.stop()


def _seed_recent_sends(limiter: RateLimiter, store: BatchStore) -> None:
    """Count the last minute's sends of an earlier run: the server still does, so a resume must not burst.

    Only the request window is seeded: the journal records when each attempt was sent, not what it was
    charged, so a resume right after a token-heavy minute may still meet a TPM 429 (retried, never lost).
    """
    window = limiter.limits.window_seconds + limiter.limits.guard_seconds
    wall = time.time()
    limiter.seed_sent([wall - at for at in store.sent_since(wall - window)])


def _request_stop(run: _Run, status: str, message: str) -> None:
    if not run.stop.is_set():
        run.state.status = status
        run.state.message = message
        run.stop.set()


def _store_failed(run: _Run, exc: BaseException) -> None:
    _request_stop(run, *stops.store_failed(run.paths.output, exc))


class _InputChanged(Exception):
    """The input file is not the one the run validated."""


def _pending_requests(run: _Run, defaults: InputDefaults, chunk: int = 256) -> Iterator[list[BatchRequest]]:
    batch: list[BatchRequest] = []
    try:
        for request in iter_requests(run.paths.input, defaults, skip_lines=run.bad_lines):
            batch.append(request)
            if len(batch) >= chunk:
                yield _only_pending(run, batch)
                batch = []
    except InputError as exc:
        raise _InputChanged(f"a line no longer parses ({exc})") from None
    if batch:
        yield _only_pending(run, batch)


def _only_pending(run: _Run, batch: list[BatchRequest]) -> list[BatchRequest]:
    if _stamp(run.paths.input) != run.input_stamp:
        raise _InputChanged("its size or modification time changed")
    states = run.store.statuses([r.custom_id for r in batch])
    unknown = [r for r in batch if r.custom_id not in states]
    if unknown:
        raise _InputChanged(f"line {unknown[0].line} has custom_id {unknown[0].custom_id!r}, which the journal "
                            "does not know")
    return [r for r in batch if states[r.custom_id] == PENDING]


async def _produce(run: _Run, queue: asyncio.Queue[BatchRequest | None], defaults: InputDefaults,
                   workers_n: int) -> None:
    try:
        for batch in _pending_requests(run, defaults):
            for request in batch:
                if run.stop.is_set():
                    return  # workers watch the stop event, they need no end markers
                await queue.put(request)
            await asyncio.sleep(0)  # reading the file is synchronous: let the workers run
    except _InputChanged as exc:
        _request_stop(run, *stops.input_changed(run.paths.input, str(exc)))
        return
    except STORE_FAILURES as exc:
        _store_failed(run, exc)
        return
    for _ in range(workers_n):
        await queue.put(None)  # one end marker per worker


async def _worker(run: _Run, queue: asyncio.Queue[BatchRequest | None]) -> None:
    while not run.stop.is_set():
        get = asyncio.ensure_future(queue.get())
        stop = asyncio.ensure_future(run.stop.wait())
        try:
            await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not get.done():
                get.cancel()
        if not get.done() or get.cancelled():
            return
        request = get.result()
        if request is None or run.stop.is_set():
            return
        if not run.opened.is_set():
            # The first request goes alone: a wrong key (401), a key without permission (403) or an
            # unreachable server then stops the run after one request, not a whole concurrency window.
            if not run.state.probing:
                run.state.probing = True
                try:
                    await _process_safely(run, request)
                finally:
                    run.opened.set()
                continue
            await _first_of(run.opened, run.stop)
            if run.stop.is_set():
                return  # never marked sent: it simply stays pending
        await _process_safely(run, request)


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _process_safely(run: _Run, request: BatchRequest) -> None:
    """``_process``, so that no exception ends a worker: the store's stop the run, others fail the request."""
    try:
        await _process(run, request)
    except STORE_FAILURES as exc:
        _store_failed(run, exc)
    except Exception as exc:  # a worker must outlive any one request's surprise
        try:
            run.store.mark_sent(request.custom_id)  # the journal records failures of sent requests only
            _fail(run, request, exc, 0, 0.0, reason=f"unexpected error: {type(exc).__name__}: {exc}")
        except STORE_FAILURES as store_exc:
            _store_failed(run, store_exc)
        except Exception:  # e.g. the journal refused the move: leave it pending
            _release(run, request.custom_id)


async def _process(run: _Run, request: BatchRequest) -> None:
    cid = request.custom_id
    state = run.state
    state.stats.sent += 1
    # With a schema, parse()'s sans-I/O loop supplies each body (the line, then its re-asks) and judges
    # each answer; every attempt stays inside this one journal entry.
    parse = _parse_loop(run.options, request.body) if run.options.schema is not None else None
    bodies = parse.bodies() if parse is not None else iter([request.body])
    body = next(bodies)
    attempts = 0  # HTTP attempts, whatever their outcome
    transient_failures = 0  # counted against max_attempts
    rate_limited = 0
    latency = 0.0
    finished = False
    resp: ChatCompletion | None = None
    parsed: ParsedChatCompletion[Any] | None = None
    try:
        while True:
            charge = request_charge(body)
            while resp is None:
                delay = 0.0
                try:
                    lease = await run.limiter.acquire(charge)
                except RequestTooLargeError as exc:
                    # Never sent: the journal records a failure only for a sent request, so mark it first.
                    run.store.mark_sent(cid)
                    _fail(run, request, exc, attempts, latency)
                    finished = True
                    return
                try:
                    if run.stop.is_set():
                        return
                    # Recorded at each send, not when the worker picked the request up: a resume seeds its
                    # request window from these times, and a wait in the limiter is not a send.
                    run.store.mark_sent(cid)
                    attempts += 1
                    state.stats.attempts += 1
                    sent_at = run.options.clock()
                    task = asyncio.current_task()
                    if task is not None:
                        state.sending.add(task)
                    try:
                        resp = await _send(run.client, body)
                    except QuotaExceededError as exc:
                        _request_stop(run, *stops.quota_exhausted(exc))
                        return
                    except (AuthenticationError, PermissionDeniedError) as exc:
                        # The same key fails every request alike: stop instead of failing the whole input.
                        _request_stop(run, *stops.access_denied(exc, run.base_url))
                        return
                    except RateLimitError as exc:
                        latency = (run.options.clock() - sent_at) * 1000
                        _server_answered(run)
                        state.stats.rate_limited += 1
                        rate_limited += 1
                        await run.limiter.report_rate_limited(exc.retry_after)
                        if rate_limited > MAX_RATE_LIMITED_RETRIES:
                            _fail(run, request, exc, attempts, latency)
                            finished = True
                            return
                        # With a retry-after the limiter pauses everyone; without one, back off too.
                        delay = 0.0 if exc.retry_after is not None else run.policy.backoff(rate_limited, run.rng)
                    except (APIStatusError, APIConnectionError, MalformedResponseError) as exc:
                        latency = (run.options.clock() - sent_at) * 1000
                        if not isinstance(exc, APIConnectionError):
                            _server_answered(run)
                        transient_failures += 1
                        # Rate limits and quota were handled above, so the core's table decides the rest.
                        if not is_retryable(exc) or transient_failures > run.policy.max_retries:
                            if isinstance(exc, APIConnectionError) and _cannot_connect(exc):
                                _unreachable(run, request, exc, attempts, latency)
                            else:
                                _fail(run, request, exc, attempts, latency)
                            finished = True
                            return
                        delay = run.policy.backoff(transient_failures, run.rng)
                    else:
                        latency = (run.options.clock() - sent_at) * 1000
                        await run.limiter.settle(lease, resp.usage)
                        _server_answered(run)
                    finally:
                        if task is not None:
                            state.sending.discard(task)
                finally:
                    await run.limiter.release(lease)
                if resp is None:
                    if delay > 0:
                        await run.options.sleep(delay)
                    if run.stop.is_set():
                        return
            if parse is None:
                break
            try:
                parsed = parse.feed(resp)
            except StructuredAnswerError as exc:  # truncated: a larger max_tokens fixes it, a re-ask does not
                _fail_structured(run, request, exc, attempts, latency)
                finished = True
                return
            if parsed is not None:
                break
            next_body = next(bodies, None)
            if next_body is None:
                _fail_structured(run, request, parse.failure(), attempts, latency)
                finished = True
                return
            body, resp, transient_failures, rate_limited = next_body, None, 0, 0
        _record_success(run, request, resp, attempts, latency, parse=parse, parsed=parsed)
        finished = True
    finally:
        if not finished:
            # Stopped, quota, or cancelled after the grace period: not done, sent again on resume.
            _release(run, cid)


async def _send(client: AsyncKimi, body: dict[str, Any]) -> ChatCompletion:
    """Send the line's body as the request body: no key of it can become a client option."""
    params = {k: v for k, v in body.items() if k not in ("model", "messages")}
    return await client.chat.completions.create(model=body["model"], messages=body["messages"], extra_body=params)


def _record_success(run: _Run, request: BatchRequest, resp: ChatCompletion, attempts: int, latency: float, *,
                    parse: ParseLoop | None = None, parsed: ParsedChatCompletion[Any] | None = None) -> None:
    model = str(request.body.get("model", ""))
    body = resp.to_dict()
    if parse is None:
        usage = resp.usage
        cost = usage_cost_cny(resp.model or model, usage)
    else:
        # Every attempt is billed: the line's usage and cost are summed over its re-asks.
        usage = parse.usage
        cost = sum(usage_cost_cny(c.model or model, c.usage) for c in parse.completions)
        body["usage"] = usage.to_dict()
    record = success_record(request.custom_id, 200, resp.request_id, body, attempts=attempts,
                            latency_ms=latency, cost_cny=cost)
    if parse is not None and parsed is not None:
        record["parsed"] = parsed.choices[0].message.parsed
        record["validation_attempts"] = len(parse.completions)
    run.store.record_success(record, DoneStats(
        attempts=attempts,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cost_cny=cost,
        latency_ms=latency,
    ))
    run.state.stats.succeeded += 1
    run.progress.advance(ok=True, tokens=usage.total_tokens if usage else 0, cost_cny=cost)


def _schema_params(options: BatchOptions) -> dict[str, Any]:
    """What a resume must keep, with a schema: its lines are all validated alike. Absent without one, so
    journals begun before ``schema=`` existed still resume."""
    if options.schema is None:
        return {}
    return {"schema": options.schema, "max_validation_retries": options.max_validation_retries}


def _parse_loop(options: BatchOptions, body: dict[str, Any]) -> ParseLoop:
    """parse()'s re-ask loop for one line: its messages, its other parameters kept as they are."""
    params = {k: v for k, v in body.items() if k not in ("model", "messages")}
    return ParseLoop(str(body.get("model", "")), body["messages"], options.schema, params=params,
                     max_validation_retries=options.max_validation_retries)


def _fail_structured(run: _Run, request: BatchRequest, exc: StructuredAnswerError, attempts: int,
                     latency: float) -> None:
    """An answer that never matched the schema (or was cut off): the errors file gets the errors by JSON path."""
    model = str(request.body.get("model", ""))
    cost = sum(usage_cost_cny(c.model or model, c.usage) for c in exc.completions)
    usage = exc.usage
    record = failure_record(request.custom_id, str(exc), code=type(exc).__name__, attempts=attempts,
                            latency_ms=latency)
    errors = exc.errors if isinstance(exc, AnswerValidationError) else []
    record["validation_errors"] = [{"path": e.path, "message": redacted_message(e.message)} for e in errors]
    record["validation_attempts"] = len(exc.completions)
    record["usage"] = usage.to_dict() if usage is not None else None
    record["cost_cny"] = round(cost, 8)
    run.store.record_failure(record, attempts)
    run.state.stats.failed += 1
    run.progress.advance(ok=False, tokens=usage.total_tokens if usage else 0, cost_cny=cost)


def _release(run: _Run, custom_id: str) -> None:
    """Back to pending (not done, sent again on resume); a store that cannot say so stops the run."""
    try:
        run.store.release(custom_id)
    except STORE_FAILURES as exc:
        _store_failed(run, exc)


def _cannot_connect(exc: APIConnectionError) -> bool:
    # A timeout means the server was reached but slow; only refused/reset/DNS failures count here.
    return not isinstance(exc, APITimeoutError)


def _server_answered(run: _Run) -> None:
    """An HTTP response arrived: the connection failures before it were the requests' own, so fail them."""
    if run.state.unreachable:
        _settle_unreachable(run)


def _unreachable(run: _Run, request: BatchRequest, exc: APIConnectionError, attempts: int, latency: float) -> None:
    """A request gave up unable to connect: hold its verdict until the server answers or the run stops."""
    state = run.state
    if run.stop.is_set():
        _release(run, request.custom_id)
        return
    state.unreachable.append(_Held(request, exc, attempts, latency))
    if len(state.unreachable) < run.options.unreachable_after:
        return
    _request_stop(run, *stops.unreachable(run.base_url, exc))
    for held in state.unreachable:
        _release(run, held.request.custom_id)
    state.unreachable.clear()


def _settle_unreachable(run: _Run) -> None:
    """The held connection failures become ordinary failures (the run goes on or ends normally)."""
    held, run.state.unreachable = run.state.unreachable, []
    for item in held:
        try:
            _fail(run, item.request, item.exc, item.attempts, item.latency_ms)
        except STORE_FAILURES as exc:
            _store_failed(run, exc)
            return


def _fail(run: _Run, request: BatchRequest, exc: BaseException, attempts: int, latency: float,
          reason: str | None = None) -> None:
    status = exc.status_code if isinstance(exc, APIError) else None
    code = exc.type if isinstance(exc, APIError) and exc.type else type(exc).__name__
    if reason is None:
        reason = f"{type(exc).__name__}: {exc}"
        if is_retryable(exc):
            reason = f"gave up after {attempts} attempt(s): {reason}"
    record = failure_record(
        request.custom_id, reason, code=str(code), status_code=status,
        request_id=exc.request_id if isinstance(exc, APIError) else None,
        body=exc.body if isinstance(exc, APIError) else None,
        attempts=attempts, latency_ms=latency,
    )
    run.store.record_failure(record, attempts)
    run.state.stats.failed += 1
    run.progress.advance(ok=False, tokens=0, cost_cny=0.0)


def run_batch_sync(input: str | Path, output: str | Path, **options: Any) -> BatchSummary:
    """``run_batch`` for synchronous code: ``run_batch_sync("in.jsonl", "out.jsonl", tier=1)``."""
    return asyncio.run(run_batch(input, output, **options))


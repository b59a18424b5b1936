"""Run a JSONL file of chat requests at the account's limits, resumably: ``run_batch``.

The run: validate the input (nothing is sent if a line is bad, unless told to skip bad lines),
bind the journal, repair the output after a crash, then stream the pending requests through a
bounded queue to a fixed pool of workers. Each worker sends through ``AsyncKimi`` with the
client's own retries off: the limiter decides when to send, the worker decides what to retry
(5xx, resets, timeouts with backoff up to ``max_attempts``; 429s after the pause the limiter
imposes). A quota error or a stop request (Ctrl-C) stops taking new work; requests in flight get
``grace_seconds`` to finish, the rest are recorded as not done; the summary is always written.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kimiflow.batch.inputs import BatchRequest, InputDefaults, iter_requests, scan_input
from kimiflow.batch.journal import PENDING, DoneStats, Journal
from kimiflow.batch.limiter import RateLimiter, request_charge
from kimiflow.batch.output import failure_record, success_record
from kimiflow.batch.paths import BatchPaths
from kimiflow.batch.progress import NullProgress, Progress, about
from kimiflow.batch.store import BatchStore, BatchStoreError
from kimiflow.batch.summary import (
    AUTH_FAILED,
    COMPLETED,
    INTERRUPTED,
    PERMISSION_DENIED,
    QUOTA_EXCEEDED,
    UNREACHABLE,
    BatchSummary,
    RunStats,
    build_summary,
)
from kimiflow.core.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    KimiflowError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
)
from kimiflow.core.pricing import usage_cost_cny
from kimiflow.core.ratelimit import RateLimits, RequestTooLargeError
from kimiflow.core.retry import is_retryable

DEFAULT_WORKERS = 64
"""Workers when no concurrency limit is set."""
MAX_WORKERS = 1000
MAX_RATE_LIMITED_RETRIES = 20
"""A request answered 429 more often than this fails (a limit far tighter than configured)."""
UNREACHABLE_AFTER = 10
"""Requests that in a row end unable to connect (no success since) before the run stops."""


class BatchInputError(KimiflowError):
    """The input file has invalid lines; nothing was sent."""


@dataclass
class _Run:
    """Mutable state shared by the workers of one run."""

    store: BatchStore
    limiter: RateLimiter
    client: Any
    progress: Progress
    max_attempts: int
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[Any]]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stats: RunStats = field(default_factory=RunStats)
    stop_status: str = COMPLETED
    stop_message: str = ""
    rng: random.Random = field(default_factory=random.Random)
    sending: set[asyncio.Task[Any]] = field(default_factory=set)
    """Workers whose request is on the wire right now: only these get the grace period on a stop."""
    base_url: str = "the API"
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the run's first request has finished: until then it goes alone (see ``_worker``)."""
    probing: bool = False
    unreachable_after: int = UNREACHABLE_AFTER
    tier_defaulted: bool = False
    unreachable: list[tuple[BatchRequest, APIConnectionError, int, float]] = field(default_factory=list)
    """Requests that gave up unable to connect since the server last answered: failed once it answers
    again (or the run ends), left pending if ``unreachable_after`` of them pile up and the run stops."""


async def run_batch(
    input: str | Path,
    output: str | Path,
    *,
    errors: str | Path | None = None,
    client: Any = None,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float | None = None,
    tier: int | None = None,
    concurrency: int | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    tpd: int | None = None,
    limits: RateLimits | None = None,
    limiter: RateLimiter | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    system: str | None = None,
    max_attempts: int = 3,
    retry_failed: bool = False,
    skip_invalid: bool = False,
    grace_seconds: float = 30.0,
    unreachable_after: int = UNREACHABLE_AFTER,
    progress: Progress | None = None,
    heartbeat_seconds: float = 1.0,
    tier_defaulted: bool = False,
    handle_signals: bool = False,
    stop: asyncio.Event | None = None,
    resume_command: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> BatchSummary:
    """Run every request of ``input`` (JSONL) and write the results to ``output``; resumable.

    >>> summary = await run_batch("tickets.jsonl", "out.jsonl", tier=2, model="moonshot-v1-8k")
    >>> print(summary.describe())

    Running it again with the same arguments finishes only what is missing. Limits come from
    ``limiter``, else ``limits``, else ``tier`` (default 0) with explicit numbers overriding.
    ``stop`` (an event) or, with ``handle_signals``, Ctrl-C stops the run gracefully. A rejected key
    (401), a permission error (403), a quota error or ``unreachable_after`` requests in a row unable
    to connect stop it too, leaving the requests not yet done pending for the next run.
    ``progress.tick()`` is called every ``heartbeat_seconds`` of real time, also while waiting.
    ``tier_defaulted`` says the limits are tier 0's only because none were chosen: the run then
    starts with a note of how long the requests will take at that pace.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    if unreachable_after < 1:
        raise ValueError(f"unreachable_after must be at least 1, got {unreachable_after}")
    paths = BatchPaths.for_output(input, output, errors)  # refuses two files that are one
    defaults = InputDefaults(model=model, max_tokens=max_tokens, system=system)
    scan = scan_input(paths.input, defaults)
    if not scan.ok and not skip_invalid:
        raise BatchInputError(
            f"{paths.input}: {scan.problem_count} invalid line(s), nothing was sent:\n{scan.describe()}\n"
            "Fix the lines, or pass --skip-invalid to run the valid ones only."
        )
    if scan.requests == 0:
        # Nothing to run: create no journal or output files, just say so.
        skipped = f" ({scan.problem_count} invalid line(s) skipped)" if scan.problem_count else ""
        return BatchSummary.empty(paths.as_strings(), f"no requests in {paths.input}{skipped}; nothing was sent")
    own_limiter = limiter is None
    if limiter is None:
        if limits is None:
            limits = RateLimits.for_tier(0 if tier is None else tier, concurrency=concurrency, rpm=rpm,
                                         tpm=tpm, tpd=tpd)
        limiter = RateLimiter(limits, clock=clock, sleep=sleep)

    params = {**defaults.as_params(), "skip_invalid": skip_invalid}
    store = BatchStore.open(
        paths, fingerprint=scan.fingerprint, params=params, retry_failed=retry_failed,
        requests=lambda: ((r.custom_id, r.line) for r in iter_requests(paths.input, defaults,
                                                                      skip_lines=scan.bad_lines)),
    )
    try:
        if own_limiter:  # a limiter of the caller's already counts what it sent
            _seed_recent_sends(limiter, store.journal)
        repair = store.repair

        own_client = client is None
        if client is None:
            from kimiflow import AsyncKimi

            client = AsyncKimi(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        else:
            client = client.with_options(max_retries=0)
        run = _Run(store, limiter, client, progress or NullProgress(), max_attempts, clock, sleep,
                   stop=stop or asyncio.Event(), base_url=str(getattr(client, "base_url", "the API")),
                   unreachable_after=unreachable_after, tier_defaulted=tier_defaulted)
        if repair.changed:
            run.progress.note(
                f"repaired the output after an interrupted run: {len(repair.adopted)} result(s) kept, "
                f"{repair.dropped_duplicates} duplicate(s) and {repair.torn_bytes} torn byte(s) removed, "
                f"{repair.lost} missing result(s) queued again"
            )
        started = clock()
        try:
            await _execute(run, paths, defaults, scan.bad_lines, grace_seconds, handle_signals, heartbeat_seconds)
        finally:
            run.stats.elapsed_s = clock() - started
            if own_client:
                await client.close()
            store.add_rate_limited(run.stats.rate_limited)
        summary = build_summary(
            store.journal, status=run.stop_status, paths=paths.as_strings(), run=run.stats,
            limits={k: v for k, v in asdict(limiter.limits).items()}, message=run.stop_message,
        )
        if summary.status == COMPLETED and summary.pending:
            summary.status = INTERRUPTED
            summary.message = summary.message or "stopped before every request was done"
        summary.resume_command = resume_command
        if summary.pending and resume_command:
            summary.message = (summary.message + "\n" if summary.message else "") + f"resume with: {resume_command}"
        summary.write(paths.summary)
        return summary
    finally:
        store.close()


async def _heartbeat(progress: Progress, every: float) -> None:
    """Tick the display on real time: the run may wait minutes for the limiter without finishing anything."""
    tick = getattr(progress, "tick", None)  # displays written before ``tick`` existed still work
    if tick is None:
        return
    while True:
        await asyncio.sleep(every)
        tick()


async def _execute(
    run: _Run, paths: BatchPaths, defaults: InputDefaults, bad_lines: set[int], grace: float,
    handle_signals: bool, heartbeat_seconds: float,
) -> None:
    counts = run.store.counts()
    totals = run.store.totals()
    run.progress.start(sum(counts.values()), counts["done"] + counts["failed"], failed=counts["failed"],
                       tokens=int(totals["prompt_tokens"] + totals["completion_tokens"]),
                       cost_cny=float(totals["cost_cny"]))
    pending = counts[PENDING]
    if pending == 0:
        run.progress.stop()
        return
    if run.tier_defaulted:
        run.progress.note(_default_tier_note(run.limiter, pending))
    limit = run.limiter.limits.concurrency
    workers_n = max(1, min(limit or DEFAULT_WORKERS, MAX_WORKERS, pending))
    queue: asyncio.Queue[BatchRequest | None] = asyncio.Queue(maxsize=workers_n * 2)
    loop = asyncio.get_running_loop()
    workers = [asyncio.create_task(_worker(run, queue)) for _ in range(workers_n)]
    producer = asyncio.create_task(_produce(run, queue, paths, defaults, bad_lines, workers_n))
    heartbeat = asyncio.create_task(_heartbeat(run.progress, heartbeat_seconds))
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            _request_stop(run, INTERRUPTED, "interrupted: stopped taking new requests")
            run.progress.note(f"stopping: letting {run.limiter.state.in_flight} request(s) in flight finish "
                              f"(up to {grace:.0f}s); press Ctrl-C again to abort now")
        elif interrupts == 2:
            dropped = len(run.sending)
            abort = (f"aborted: {dropped} request(s) in flight were dropped (recorded as not done); "
                     "they will be sent again when you resume")
            run.progress.note(abort)
            run.stop_message = f"{run.stop_message}\n{abort}" if run.stop_message else abort
            for task in workers:
                task.cancel()

    if handle_signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        stop_wait = asyncio.ensure_future(run.stop.wait())
        everything = asyncio.gather(producer, *workers, return_exceptions=True)
        first: set[asyncio.Future[Any]] = {stop_wait, everything}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if not everything.done():
            producer.cancel()
            for task in workers:
                if task not in run.sending:
                    task.cancel()  # waiting for the limiter or a backoff: nothing to finish
            _, still = await asyncio.wait(workers, timeout=grace)
            for task in still:
                task.cancel()
        results = await everything
        stop_wait.cancel()
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
    finally:
        if handle_signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        heartbeat.cancel()
        _settle_unreachable(run)
        run.progress.stop()


def _seed_recent_sends(limiter: RateLimiter, journal: Journal) -> None:
    """Count the last minute's sends of an earlier run: the server still does, so a resume must not burst.

    Only the request window is seeded: the journal records when each attempt was sent, not what it was
    charged, so a resume right after a token-heavy minute may still meet a TPM 429 (retried, never lost).
    """
    window = limiter.limits.window_seconds + limiter.limits.guard_seconds
    wall = time.time()
    limiter.state.seed_sent(wall - at for at in journal.sent_since(wall - window))


def _default_tier_note(limiter: RateLimiter, pending: int) -> str:
    """How long ``pending`` requests take at the pace the limiter keeps (its RPM, after the margin)."""
    limits = limiter.limits
    rpm = limiter.state.effective()["rpm"]
    minutes = pending / rpm if rpm > 0 else 0.0
    return (f"no --tier given, so tier 0 limits apply ({limits.concurrency} in flight, {limits.rpm} requests/min): "
            f"{pending:,} request(s) will take about {about(minutes * 60)}; pass --tier N for your account's tier")


def _request_stop(run: _Run, status: str, message: str) -> None:
    if not run.stop.is_set():
        run.stop_status = status
        run.stop_message = message
        run.stop.set()


def _pending_requests(
    run: _Run, paths: BatchPaths, defaults: InputDefaults, bad_lines: set[int], chunk: int = 256
) -> Iterator[list[BatchRequest]]:
    batch: list[BatchRequest] = []
    for request in iter_requests(paths.input, defaults, skip_lines=bad_lines):
        batch.append(request)
        if len(batch) >= chunk:
            yield _only_pending(run, batch)
            batch = []
    if batch:
        yield _only_pending(run, batch)


def _only_pending(run: _Run, batch: list[BatchRequest]) -> list[BatchRequest]:
    states = run.store.statuses([r.custom_id for r in batch])
    return [r for r in batch if states.get(r.custom_id) == PENDING]


async def _produce(
    run: _Run, queue: asyncio.Queue[BatchRequest | None], paths: BatchPaths, defaults: InputDefaults,
    bad_lines: set[int], workers_n: int,
) -> None:
    for batch in _pending_requests(run, paths, defaults, bad_lines):
        for request in batch:
            if run.stop.is_set():
                return  # workers watch the stop event, they need no end markers
            await queue.put(request)
        await asyncio.sleep(0)  # reading the file is synchronous: let the workers run
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
        if request is None:
            return
        if run.stop.is_set():
            return
        if not run.opened.is_set():
            # The first request goes alone: a wrong key (401), a key without permission (403) or an
            # unreachable server then stops the run after one request, not a whole concurrency window.
            if not run.probing:
                run.probing = True
                try:
                    await _process(run, request)
                finally:
                    run.opened.set()
                continue
            await _first_of(run.opened, run.stop)
            if run.stop.is_set():
                return  # never marked in flight: it simply stays pending
        await _process(run, request)


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _process(run: _Run, request: BatchRequest) -> None:
    store, cid = run.store, request.custom_id
    run.stats.sent += 1
    prompt_tokens, max_tokens = request_charge(request.body)
    attempts = 0  # HTTP attempts, whatever their outcome
    transient_failures = 0  # counted against max_attempts
    rate_limited = 0
    latency = 0.0
    finished = False
    try:
        while True:
            retry, delay = False, 0.0
            async with run.limiter.slot(prompt_tokens, max_tokens=max_tokens) as slot:
                if run.stop.is_set():
                    return
                # Recorded at each send, not when the worker picked the request up: a resume seeds its
                # request window from these times, and a wait in the limiter is not a send.
                store.mark_sent(cid)
                attempts += 1
                run.stats.attempts += 1
                sent_at = run.clock()
                task = asyncio.current_task()
                if task is not None:
                    run.sending.add(task)
                try:
                    resp = await run.client.chat.completions.create(**request.body)
                except QuotaExceededError as exc:
                    _request_stop(run, QUOTA_EXCEEDED, f"stopped: the account's quota is exhausted ({exc}); "
                                  "top up the balance, then run the same command again")
                    return
                except (AuthenticationError, PermissionDeniedError) as exc:
                    # The same key fails every request alike: stop instead of failing the whole input.
                    _request_stop(run, *_access_denied(exc, run.base_url))
                    return
                except RateLimitError as exc:
                    latency = (run.clock() - sent_at) * 1000
                    _server_answered(run)
                    run.stats.rate_limited += 1
                    rate_limited += 1
                    run.limiter.report_rate_limited(exc.retry_after)
                    if rate_limited > MAX_RATE_LIMITED_RETRIES:
                        _fail(run, request, exc, attempts, latency)
                        finished = True
                        return
                    # With a retry-after the limiter pauses everyone; without one, back off too.
                    retry, delay = True, 0.0 if exc.retry_after is not None else _backoff(rate_limited, run.rng)
                except (APIStatusError, APIConnectionError) as exc:
                    latency = (run.clock() - sent_at) * 1000
                    if isinstance(exc, APIStatusError):
                        _server_answered(run)
                    transient_failures += 1
                    # Rate limits and quota were handled above, so the core's table decides the rest.
                    if not is_retryable(exc) or transient_failures >= run.max_attempts:
                        if isinstance(exc, APIConnectionError) and _cannot_connect(exc):
                            _unreachable(run, request, exc, attempts, latency)
                        else:
                            _fail(run, request, exc, attempts, latency)
                        finished = True
                        return
                    retry, delay = True, _backoff(transient_failures, run.rng)
                else:
                    latency = (run.clock() - sent_at) * 1000
                    slot.settle(resp.usage)
                    _server_answered(run)
                finally:
                    run.sending.discard(task)
            if not retry:
                break
            if delay > 0:
                await run.sleep(delay)
            if run.stop.is_set():
                return
        attempts += max(getattr(resp, "attempts", 1) - 1, 0)
        model = getattr(resp, "model", None) or request.body.get("model", "")
        cost = usage_cost_cny(model, resp.usage)
        usage = resp.usage
        record = success_record(cid, 200, resp.request_id, resp.to_dict(), attempts=attempts,
                                latency_ms=latency, cost_cny=cost)
        store.record_success(record, DoneStats(
            attempts=attempts,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cost_cny=cost,
            latency_ms=latency,
        ))
        finished = True
        run.stats.succeeded += 1
        run.progress.advance(ok=True, tokens=usage.total_tokens if usage else 0, cost_cny=cost)
    except RequestTooLargeError as exc:
        _fail(run, request, exc, attempts, latency)
        finished = True
    except BatchStoreError:
        # Nothing more can be recorded: stop the producer and the other workers; the error ends the run.
        run.stop.set()
        raise
    finally:
        if not finished:
            # Stopped, quota, or cancelled after the grace period: not done, sent again on resume.
            store.release(cid)


def _access_denied(exc: AuthenticationError | PermissionDeniedError, base_url: str) -> tuple[str, str]:
    """Summary status and message for a key the server will not accept."""
    platforms = ("keys from platform.moonshot.cn work only with https://api.moonshot.cn/v1, keys from "
                 "platform.moonshot.ai only with https://api.moonshot.ai/v1")
    if isinstance(exc, AuthenticationError):
        return AUTH_FAILED, (
            f"stopped: the API key was rejected ({exc}); nothing more was sent. Check MOONSHOT_API_KEY "
            f"(or --api-key) and that it belongs to {base_url}: {platforms}. Then run the same command again"
        )
    return PERMISSION_DENIED, (
        f"stopped: permission denied ({exc}); nothing more was sent. Check that the key may use this model "
        f"and endpoint and that it belongs to {base_url} ({platforms}). Then run the same command again"
    )


def _cannot_connect(exc: APIConnectionError) -> bool:
    # A timeout means the server was reached but slow; only refused/reset/DNS failures count here.
    return not isinstance(exc, APITimeoutError)


def _server_answered(run: _Run) -> None:
    """An HTTP response arrived: the connection failures before it were the requests' own, so fail them."""
    if run.unreachable:
        _settle_unreachable(run)


def _unreachable(run: _Run, request: BatchRequest, exc: APIConnectionError, attempts: int, latency: float) -> None:
    """A request gave up unable to connect: hold its verdict until the server answers or the run stops."""
    if run.stop.is_set():
        run.store.release(request.custom_id)
        return
    run.unreachable.append((request, exc, attempts, latency))
    if len(run.unreachable) < run.unreachable_after:
        return
    _request_stop(run, UNREACHABLE, f"stopped: cannot reach {run.base_url}: {exc}; nothing more was sent; "
                  "re-run the same command when it is reachable")
    for held, *_ in run.unreachable:
        run.store.release(held.custom_id)
    run.unreachable.clear()


def _settle_unreachable(run: _Run) -> None:
    """The held connection failures become ordinary failures (the run goes on or ends normally)."""
    held, run.unreachable = run.unreachable, []
    for request, exc, attempts, latency in held:
        _fail(run, request, exc, attempts, latency)


def _backoff(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: about 0.5 s, 1 s, 2 s ... capped at 20 s."""
    base: float = min(20.0, 0.5 * 2 ** (attempt - 1))
    return base * rng.uniform(0.5, 1.0)


def _fail(run: _Run, request: BatchRequest, exc: BaseException, attempts: int, latency: float) -> None:
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "type", None) or type(exc).__name__
    reason = f"{type(exc).__name__}: {exc}"
    if is_retryable(exc):
        reason = f"gave up after {attempts} attempt(s): {reason}"
    record = failure_record(
        request.custom_id, reason, code=str(code), status_code=status,
        request_id=getattr(exc, "request_id", None), body=getattr(exc, "body", None),
        attempts=attempts, latency_ms=latency,
    )
    run.store.record_failure(record, attempts)
    run.stats.failed += 1
    run.progress.advance(ok=False, tokens=0, cost_cny=0.0)


def run_batch_sync(input: str | Path, output: str | Path, **options: Any) -> BatchSummary:
    """``run_batch`` for synchronous code: ``run_batch_sync("in.jsonl", "out.jsonl", tier=1)``."""
    return asyncio.run(run_batch(input, output, **options))

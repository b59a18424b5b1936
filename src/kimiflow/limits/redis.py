"""``RedisLimiter``: one account's limits shared by every process and machine, kept in Redis.

Each admission is one atomic Lua script (``limits/lua/admit.lua``, one EVALSHA round trip): it reads
Redis's clock (``TIME``, never the caller's), drops leases whose holder stopped renewing them, checks
the shared 429 pause, the concurrency leases and the sliding RPM, TPM and TPD windows (time buckets in
hashes that expire), and records the admission. Settling and releasing are one script too. While a
process holds leases, a background task renews them; a process that dies (kill -9, a lost machine)
stops renewing, so its slots come back after ``lease_seconds`` by themselves.

Library use, here with ``AsyncKimi``; every process that builds its limiter with the same ``url``,
``namespace`` and ``key`` shares the one account's books (a gateway replica, a nightly batch, a service)::

    from kimiflow import AsyncKimi
    from kimiflow.limits import RateLimits, RedisLimiter, request_charge

    async with RedisLimiter("redis://10.0.0.5:6379/0", RateLimits.for_tier(2), key="acme-prod",
                            priority="interactive") as limiter, AsyncKimi() as client:
        async with limiter.slot(request_charge(body)) as slot:   # waits for room under every limit
            resp = await client.chat.completions.create(**body)
            slot.settle(resp.usage)                                # applied when the block ends
    # or the Limiter calls: lease = await limiter.acquire(charge); ... settle(lease, usage); release(lease)

``priority`` is the caller's class: near a limit, ``batch`` callers are refused first (they may fill
90 % of each limit, ``default`` 95 %, ``interactive`` all of it), so a nightly batch never starves the
online traffic sharing the account. When Redis cannot be reached, ``on_unavailable="fail-closed"``
(the default) raises ``LimiterUnavailableError``; ``"local-share"`` keeps going on an in-process
``RateLimiter`` holding each limit divided by ``replicas`` (the processes expected to share the
account), with one WARNING per outage, and goes back to Redis once it answers. With fail-closed,
``outage_wait`` seconds let ``acquire`` sit out a Redis restart (admitting nothing) before it raises. Neither admits without
limits. Key names hold only ``namespace`` and a hash of ``key``, so passing an API key as ``key`` is
safe; the URL's password is never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from kimiflow.core.errors import ConfigError, InvalidArgumentError, KimiflowError
from kimiflow.limits.books import LimiterState, RateLimits, RequestTooLargeError, Ticket
from kimiflow.limits.charge import Charge
from kimiflow.limits.interface import Lease, LeaseAdmission
from kimiflow.limits.local import RateLimiter
from kimiflow.types.chat import Usage

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

log = logging.getLogger("kimiflow.limits.redis")

Priority = Literal["interactive", "default", "batch"]
OnUnavailable = Literal["fail-closed", "local-share"]
PRIORITY_SHARE: dict[str, float] = {"interactive": 1.0, "default": 0.95, "batch": 0.90}
"""The part of each limit a class may fill; the rest is left to the classes above it."""
PROBE_SECONDS = 1.0
"""In ``local-share`` mode during an outage, how often an admission tries Redis again."""
_POLL_MIN, _POLL_MAX = 0.02, 0.25
"""A full concurrency limit frees up in another process without telling us: poll, backing off."""
_LONGEST_SLEEP = 5.0
"""A waiter re-asks Redis at least this often (another process may have changed the books)."""
_LUA = Path(__file__).with_name("lua")
POOL_SIZE = 32
"""Connections to Redis per limiter (``?max_connections=N`` in the URL overrides it)."""
POOL_WAIT = 10.0
"""Seconds an admission waits for a free connection before it counts as Redis being unreachable."""
SPENT_TTL = 3600.0
"""Seconds a budget's spent counter lives without a request; then it is seeded from the ledger again."""


class LimiterUnavailableError(KimiflowError):
    """The shared limits cannot be reached; nothing was admitted. Try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = PROBE_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SharedBook:
    """A set of limits kept in Redis beside the account's, under the account's hash tag (a gateway key's).

    Build it with ``RedisLimiter.book(name, limits)``; admitted together with the account's books in one
    script, so a request either holds a slot in every book or in none.
    """

    keys: tuple[str, str, str, str, str]
    """leases, requests, tokens, day, pause"""
    limits: tuple[int, int, int, int]
    """concurrency, RPM, TPM, TPD; -1 is unlimited"""
    window_ms: int
    day_ms: int


@dataclass(frozen=True)
class SharedBudget:
    """A spending limit in nano-CNY checked in the same script: spent + reserved + worst case <= limit."""

    reservations: str
    spent: str
    limit_nano: int
    worst_nano: int


@dataclass(frozen=True)
class SharedAdmission:
    """What ``RedisLimiter.admit`` answers: a ``lease`` with the headroom left, or which book refused and why.

    ``book`` counts the books in the order admitted (1 is the first of ``above``; the account's is last);
    ``seed_needed``: the budget's spent counter is missing; seed it (``seed_spent``) and ask again.
    ``limits``: each book's concurrency, RPM, TPM and TPD as checked (-1: unlimited), in the same order.
    """

    lease: Lease | None
    wait: float | None = 0.0
    reason: str = ""
    book: int = 0
    requests_left: int = -1
    tokens_left: int = -1
    budget_left_nano: int = -1
    spent_nano: int = 0
    reserved_nano: int = 0
    seed_needed: bool = False
    limits: tuple[tuple[int, int, int, int], ...] = ()


@dataclass
class _Held:
    """A Redis lease: its id, the buckets its tokens went into and the books it holds a slot in."""

    id: str
    minute_bucket: int
    day_bucket: int
    tokens: int
    finish_keys: list[str]
    books: int
    budget: bool = False
    cost_nano: int = -1
    settled: bool = False
    released: bool = False

    @property
    def lease_keys(self) -> list[str]:
        return self.finish_keys[0:3 * self.books:3]


class RedisSlot:
    """One admitted request as an ``async with`` block; ``settle(usage)`` is applied as the block ends."""

    def __init__(self, limiter: RedisLimiter, charge: Charge) -> None:
        self._limiter = limiter
        self._charge = charge
        self._usage: Usage | None = None
        self._settle = False
        self.lease: Lease | None = None

    async def __aenter__(self) -> RedisSlot:
        self.lease = await self._limiter.acquire(self._charge)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.lease is not None:
            # Settle and release in the one round trip; shielded so a cancelled task still frees its slot.
            await asyncio.shield(self._limiter._finish(self.lease, self._usage if self._settle else None,
                                                       settle=self._settle, release=True))

    def settle(self, usage: Usage | None) -> None:
        """Replace the estimate with what Kimi counted (real prompt + the whole output budget)."""
        self._usage, self._settle = usage, True


class RedisLimiter:
    """Kimi's concurrency, RPM, TPM and TPD limits for one account, shared through Redis.

    ``url`` is ``redis://``, ``rediss://`` or ``unix://``. It implements ``kimiflow.limits.Limiter``;
    see the module docstring for an example. Close it (``await limiter.aclose()`` or ``async with``).
    """

    def __init__(
        self,
        url: str,
        limits: RateLimits,
        *,
        namespace: str = "kimiflow",
        key: str = "default",
        lease_seconds: float = 30.0,
        priority: Priority = "default",
        on_unavailable: OnUnavailable = "fail-closed",
        replicas: int = 1,
        outage_wait: float = 0.0,
        socket_timeout: float = 2.0,
    ) -> None:
        scheme = urlsplit(url).scheme if isinstance(url, str) else ""
        if scheme not in ("redis", "rediss", "unix"):
            raise InvalidArgumentError(f"the shared limits need a redis://, rediss:// or unix:// URL, got "
                                       f"{describe_url(url)!r}; for example redis://127.0.0.1:6379/0")
        if priority not in PRIORITY_SHARE:
            raise InvalidArgumentError(f"priority= must be one of {', '.join(PRIORITY_SHARE)}, got {priority!r}")
        if on_unavailable not in ("fail-closed", "local-share"):
            raise InvalidArgumentError(f"on_unavailable= must be 'fail-closed' or 'local-share', got {on_unavailable!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise InvalidArgumentError(f"replicas= must be a whole number of at least 1, got {replicas!r}")
        if not (isinstance(outage_wait, (int, float)) and 0 <= outage_wait <= 86_400):
            raise InvalidArgumentError(f"outage_wait= must be seconds between 0 and 86400, got {outage_wait!r}")
        if not (isinstance(lease_seconds, (int, float)) and 0.1 <= lease_seconds <= 3600):
            raise InvalidArgumentError(f"lease_seconds= must be between 0.1 and 3600, got {lease_seconds!r}")
        if not namespace or any(c in namespace for c in "{}: \n"):
            raise InvalidArgumentError(f"namespace= must be a non-empty name without braces, colons or spaces, "
                                       f"got {namespace!r}")
        try:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.exceptions import TimeoutError as RedisTimeoutError
        except ImportError:
            raise ConfigError("the shared limits need the redis package: pip install 'kimiflow[redis]'") from None
        self._limits = limits
        self.priority = priority
        self.on_unavailable = on_unavailable
        self.replicas = replicas
        self.outage_wait = float(outage_wait)
        self.where = describe_url(url)
        self._lease_ms = int(lease_seconds * 1000)
        # One retry covers a pooled connection that a Redis restart broke; more would only hide an outage.
        # A blocking pool: a burst waits for one of its connections (Redis runs one script at a time
        # anyway) instead of failing with "Too many connections", which would read as an outage.
        # ``?max_connections=N`` in the URL sets its size.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=POOL_WAIT, socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout, retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError], health_check_interval=0,
        )
        self._redis: Redis = redis.asyncio.Redis.from_pool(pool)  # closed with the client
        self._down: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError,
                                                       asyncio.TimeoutError)
        scripts = {name: (_LUA / f"{name}.lua").read_text(encoding="utf-8") for name in ("admit", "finish", "renew",
                                                                                          "pause", "seed")}
        self._admit: AsyncScript = self._redis.register_script(scripts["admit"])
        self._seed: AsyncScript = self._redis.register_script(scripts["seed"])
        self._finish_script: AsyncScript = self._redis.register_script(scripts["finish"])
        self._renew: AsyncScript = self._redis.register_script(scripts["renew"])
        self._pause: AsyncScript = self._redis.register_script(scripts["pause"])
        account = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
        self._prefix = prefix = f"{namespace}:{{{account}}}:"  # one hash tag: a cluster keeps an account's keys on one node
        self._leases, self._requests, self._tokens, self._day, self._pause_key = (
            prefix + name for name in ("leases", "rpm", "tpm", "tpd", "pause"))
        window = limits.window_seconds + limits.guard_seconds
        day = limits.day_seconds + limits.guard_seconds
        self._window_ms, self._day_ms = math.ceil(window * 1000), math.ceil(day * 1000)
        # 60 buckets a minute window (1 s each) and 1440 a day (1 min each): bounded memory at any rate.
        self._bucket_ms = max(1, self._window_ms // 60)
        self._day_bucket_ms = max(1, self._day_ms // 1440)
        self._backoff = LimiterState(limits)  # this process's slow-down after a 429 and its own pause
        self._fallback = RateLimiter(limits.divided(replicas))
        self._outage_since: float | None = None
        self._next_probe = 0.0
        self._held: dict[str, _Held] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._line: asyncio.Lock | None = None
        self._released: asyncio.Event | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._finishing: list[tuple[list[str], list[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    # -- the Limiter interface ---------------------------------------------------------------------

    @property
    def limits(self) -> RateLimits:
        return self._limits

    def slot(self, charge: Charge | None = None) -> RedisSlot:
        """An ``async with`` block holding one request admitted at ``charge`` (nothing charged if omitted)."""
        return RedisSlot(self, charge or Charge())

    async def try_acquire(self, charge: Charge) -> LeaseAdmission:
        """Admit now or say how long to wait (``None``: until a lease ends); never waits for room.

        Raises ``LimiterUnavailableError`` when Redis cannot be reached and the mode is fail-closed.
        """
        self.check_size(charge)
        now = time.monotonic()
        if now < self._backoff.paused_until:
            return LeaseAdmission(None, self._backoff.paused_until - now, "paused after a 429")
        if self._outage_since is not None and now < self._next_probe:
            return await self._fallback.try_acquire(charge)
        try:
            admission = await self.admit(charge)
        except LimiterUnavailableError as exc:
            return await self._unavailable(exc.__cause__ or exc, charge)
        return LeaseAdmission(admission.lease, admission.wait, admission.reason)

    async def admit(self, charge: Charge, *, above: tuple[SharedBook, ...] = (),
                    budget: SharedBudget | None = None) -> SharedAdmission:
        """One round trip: admit ``charge`` into the ``above`` books (a gateway key's), the budget and
        the account's books together, or into none. Never waits and never falls back: raises
        ``LimiterUnavailableError`` when Redis cannot be reached, whatever ``on_unavailable`` says.

        For layers that keep their own limits beside the account's (the gateway); ``try_acquire`` and
        ``acquire`` are the ``Limiter`` interface.
        """
        now = time.monotonic()
        if now < self._backoff.paused_until:
            return SharedAdmission(None, self._backoff.paused_until - now, "paused after a 429", len(above) + 1)
        books = (*above, SharedBook((self._leases, self._requests, self._tokens, self._day, self._pause_key),
                                    tuple(self.effective(now)), self._window_ms, self._day_ms))  # type: ignore[arg-type]
        keys: list[str] = []
        args: list[Any] = [uuid.uuid4().hex, charge.tokens, len(books), self._bucket_ms, self._day_bucket_ms,
                           self._lease_ms]
        for book in books:
            keys += book.keys
            args += [*book.limits, book.window_ms, book.day_ms]
        if budget is not None:
            keys += [budget.reservations, budget.spent]
            args += [budget.limit_nano, budget.worst_nano]
        try:
            reply = await self._admit(keys=keys, args=args)
        except self._down as exc:
            raise self._unreachable(exc) from exc
        self._reachable()
        code = int(reply[0])
        if code == 2:
            return SharedAdmission(None, 0.0, "budget unknown", 1, seed_needed=True)
        if code != 1:
            wait_ms = int(reply[1])
            reason = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
            return SharedAdmission(None, None if wait_ms < 0 else wait_ms / 1000, reason, int(reply[3]),
                                   spent_nano=int(reply[4]), reserved_nano=int(reply[5]),
                                   limits=tuple(book.limits for book in books))
        finish_keys = [key for book in books for key in (book.keys[0], book.keys[2], book.keys[3])]
        if budget is not None:
            finish_keys += [budget.reservations, budget.spent]
        held = _Held(str(args[0]), int(reply[2]), int(reply[3]), charge.tokens, finish_keys, len(books),
                     budget is not None)
        self._hold(held)
        return SharedAdmission(Lease(charge, held), requests_left=int(reply[4]), tokens_left=int(reply[5]),
                               budget_left_nano=int(reply[6]), limits=tuple(book.limits for book in books))

    def book(self, name: str, limits: RateLimits) -> SharedBook:
        """Limits of their own for ``name`` (hashed into the key names), kept beside the account's."""
        return SharedBook(self.book_keys(name), _counts(limits), math.ceil(limits.window_seconds * 1000),
                          math.ceil(limits.day_seconds * 1000))

    def book_keys(self, name: str) -> tuple[str, str, str, str, str]:
        """The key names of ``name``'s book."""
        part = hashlib.sha256(name.encode("utf-8")).hexdigest()[:24]
        prefix = f"{self._prefix}sub:{part}:"
        # A 429 pauses the account (its own pause key); a book of its own has a pause nobody sets.
        return (prefix + "leases", prefix + "rpm", prefix + "tpm", prefix + "tpd", prefix + "pause")

    def budget_keys(self, name: str, period: str) -> tuple[str, str]:
        """The reservations hash and the spent counter of ``name``'s budget in ``period``."""
        part = hashlib.sha256(name.encode("utf-8")).hexdigest()[:24]
        return (f"{self._prefix}sub:{part}:reserved", f"{self._prefix}sub:{part}:spent:{period or 'total'}")

    async def seed_spent(self, key: str, nano: int, ttl_seconds: float = SPENT_TTL) -> int:
        """Set a budget's spent counter from the ledger unless another process already has; its value."""
        try:
            return int(await self._seed(keys=[key], args=[nano, int(ttl_seconds * 1000)]))
        except self._down as exc:
            raise self._unreachable(exc) from exc

    def finish_later(self, lease: Lease, *, tokens: int | None, cost_nano: int = -1) -> None:
        """Settle ``lease`` to ``tokens`` (``None``: keep the charge) and the budget to its real
        ``cost_nano``, and release it, in the background: for callers whose answer is already on its
        way and who have no ``await`` at hand (the gateway). ``drain`` waits for these.
        """
        handle = lease.handle
        if isinstance(handle, _Held):
            handle.cost_nano = cost_nano
        call = self._finish_call(lease, None, settle=tokens is not None, release=True, tokens=tokens)
        if call is None:
            self._wake()
            return
        # Finishes that pile up while one is on its way go out together in one round trip.
        self._finishing.append(call)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_finishes())
            self._pending.add(self._sender)
            self._sender.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the settles and releases ``finish_later`` started."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def acquire(self, charge: Charge) -> Lease:
        """Wait until a request charged ``charge`` may be sent; returns its lease (release it!)."""
        self.check_size(charge)
        line, released = self._events()
        async with line:  # this process's waiters go first in, first out; only the head asks Redis
            poll = _POLL_MIN
            gave_up_at: float | None = None
            while True:
                try:
                    admission = await self.try_acquire(charge)
                except LimiterUnavailableError:
                    # Fail closed, but a batch may choose to sit out a Redis restart rather than fail.
                    now = time.monotonic()
                    if gave_up_at is None:
                        gave_up_at = now + self.outage_wait
                        if self.outage_wait > 0:
                            log.warning("Redis at %s is unreachable: admitting nothing, waiting up to %.0f s for "
                                        "it", self.where, self.outage_wait)
                    if now >= gave_up_at:
                        raise
                    await asyncio.sleep(min(PROBE_SECONDS, gave_up_at - now))
                    continue
                gave_up_at = None
                if admission.lease is not None:
                    return admission.lease
                released.clear()
                if admission.wait is None:
                    seconds, poll = poll, min(poll * 2, _POLL_MAX)
                else:
                    seconds, poll = min(admission.wait, _LONGEST_SLEEP), _POLL_MIN
                try:
                    await asyncio.wait_for(released.wait(), timeout=seconds)
                except asyncio.TimeoutError:
                    pass

    async def settle(self, lease: Lease, usage: Usage | None) -> None:
        await self._finish(lease, usage, settle=True, release=False)

    async def release(self, lease: Lease) -> None:
        await self._finish(lease, None, settle=False, release=True)

    async def report_rate_limited(self, retry_after: float | None = None) -> None:
        """A 429 got through: every process on the account pauses ``retry_after`` s; this one slows down."""
        now = time.monotonic()
        self._backoff.on_rate_limited(now, retry_after)
        if self._outage_since is not None:
            await self._fallback.report_rate_limited(retry_after)
        if retry_after is not None and retry_after > 0:
            try:
                await self._pause(keys=[self._pause_key], args=[math.ceil(retry_after * 1000)])
            except self._down as exc:
                # This process pauses anyway (above); the others will meet the 429 themselves.
                log.warning("could not share a 429 pause through Redis at %s: %s", self.where, exc)
        _, released = self._events()
        released.set()

    # -- lifetime ------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Check that Redis answers; raises ``LimiterUnavailableError`` (whatever ``on_unavailable`` says)."""
        try:
            await self._redis.ping()
        except self._down as exc:
            raise LimiterUnavailableError(f"the shared limits in Redis at {self.where} are unreachable "
                                          f"({type(exc).__name__}: {exc}); start Redis or fix the URL") from None

    async def aclose(self) -> None:
        """Stop renewing, free the leases still held and close the connections."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        await self.drain()
        if self._held:
            held, self._held = list(self._held.values()), {}
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in dict.fromkeys(key for h in held for key in h.lease_keys):
                        pipe.zrem(key, *(h.id for h in held))
                    await pipe.execute()
            except self._down as exc:  # they expire after lease_seconds by themselves
                log.warning("could not free %d lease(s) in Redis at %s on close: %s", len(held), self.where, exc)
        await self._redis.aclose()

    async def __aenter__(self) -> RedisLimiter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (f"RedisLimiter({self.where!r}, priority={self.priority!r}, on_unavailable={self.on_unavailable!r}, "
                f"held={len(self._held)})")

    # -- internals -----------------------------------------------------------------------------------

    def check_size(self, charge: Charge) -> None:
        """Raise ``RequestTooLargeError`` for a charge no TPM or TPD window of the account can ever hold."""
        for name, value in (("TPM", self._limits.tpm), ("TPD", self._limits.tpd)):
            if value is not None and charge.tokens > value:
                raise RequestTooLargeError(f"a request charged {charge.tokens} tokens can never fit the {name} "
                                           f"limit of {value}; lower max_tokens or shorten the prompt")

    def effective(self, now: float) -> list[int]:
        """Concurrency, RPM, TPM, TPD after margin, this process's back-off and the priority's share."""
        share = PRIORITY_SHARE[self.priority]
        out = []
        for name, value in self._backoff.effective(now).items():
            if math.isinf(value):
                out.append(-1)
                continue
            if name == "tpd":
                out.append(int(value))  # a daily budget is not a place where online traffic needs headroom
                continue
            # Whole units only, as the margin: 10 % of tier 0's 3 RPM is nothing, not one of the three.
            out.append(max(1, int(value) - math.floor(value * (1.0 - share) + 1e-9)))  # 1e-9: 20 * 0.1 is 1.99...
        return out

    def _events(self) -> tuple[asyncio.Lock, asyncio.Event]:
        # Created lazily: the limiter may be built outside the loop that uses it.
        if self._line is None or self._released is None:
            self._line, self._released = asyncio.Lock(), asyncio.Event()
        return self._line, self._released

    async def _finish(self, lease: Lease, usage: Usage | None, *, settle: bool, release: bool,
                      tokens: int | None = None) -> None:
        call = self._finish_call(lease, usage, settle=settle, release=release, tokens=tokens)
        if call is not None:
            try:
                await self._finish_script(keys=call[0], args=call[1])
            except self._down as exc:
                self._not_finished(exc, 1)
        self._wake()

    def _finish_call(self, lease: Lease, usage: Usage | None, *, settle: bool, release: bool,
                     tokens: int | None) -> tuple[list[str], list[Any]] | None:
        """The keys and arguments of the finish script for ``lease`` (``None``: nothing to send)."""
        handle = lease.handle
        if isinstance(handle, Ticket):  # admitted by the local share during an outage
            if settle:
                self._fallback.settle_now(lease, usage)
            if release:
                self._fallback.release_now(lease)
            return None
        if not isinstance(handle, _Held):
            raise InvalidArgumentError("this lease was not issued by this RedisLimiter; settle and release it "
                                       "with the limiter that acquired it")
        if handle.budget and release and handle.cost_nano < 0:
            handle.cost_nano = 0  # released unsettled (not sent): its reservation goes, nothing is spent
        delta = 0
        if settle and not handle.settled:
            handle.settled = True
            delta = (lease.charge.settled(usage) if tokens is None else tokens) - handle.tokens
            handle.tokens += delta
        release = release and not handle.released
        if delta == 0 and not release:
            return None
        if release:
            handle.released = True
            self._held.pop(handle.id, None)
        args: list[Any] = [handle.id, handle.minute_bucket, handle.day_bucket, delta, 1 if release else 0,
                           handle.books]
        if handle.budget and release:
            args += [handle.cost_nano, int(SPENT_TTL * 1000)]
        return handle.finish_keys, args

    def _not_finished(self, exc: BaseException, count: int) -> None:
        # Not raised: the requests are over either way, and an unreleased lease expires by itself.
        log.warning("could not settle or release %d lease(s) in Redis at %s (%s); they expire within %.0f s",
                    count, self.where, exc, self._lease_ms / 1000)

    async def _send_finishes(self) -> None:
        """Send the queued finishes: one script call alone, or all that piled up in one pipeline."""
        while self._finishing:
            calls, self._finishing = self._finishing, []
            try:
                if len(calls) == 1:
                    await self._finish_script(keys=calls[0][0], args=calls[0][1])
                else:
                    await self._pipelined(calls)
            except self._down as exc:
                self._not_finished(exc, len(calls))
            self._wake()

    async def _pipelined(self, calls: list[tuple[list[str], list[Any]]]) -> None:
        from redis.exceptions import NoScriptError

        sha = self._finish_script.sha
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        # A Redis that restarted has forgotten the script: those calls go again one by one (which loads it).
        for (keys, args), result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):
                await self._finish_script(keys=keys, args=args)
            elif isinstance(result, Exception):
                raise result

    def _wake(self) -> None:
        _, released = self._events()
        released.set()

    def _hold(self, held: _Held) -> None:
        self._held[held.id] = held
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_held(), name="kimiflow-lease-renew")

    async def _renew_held(self) -> None:
        """While this process holds leases, extend them every third of their lifetime."""
        interval = self._lease_ms / 3000
        while self._held:
            await asyncio.sleep(interval)
            held = list(self._held.values())
            if not held:
                return
            sets = list(dict.fromkeys(key for h in held for key in h.lease_keys))
            expected = sum(len(h.lease_keys) for h in held)
            try:
                renewed = await self._renew(keys=sets, args=[self._lease_ms, *(h.id for h in held)])
            except self._down as exc:
                log.warning("could not renew %d lease(s) in Redis at %s: %s", len(held), self.where, exc)
                continue
            if int(renewed) < expected:
                log.warning("%d lease(s) expired in Redis before they were renewed (held longer than %.1f s "
                            "without a renewal); their slots may be in use elsewhere", expected - int(renewed),
                            self._lease_ms / 1000)

    def _unreachable(self, exc: BaseException) -> LimiterUnavailableError:
        return LimiterUnavailableError(f"the shared limits in Redis at {self.where} are unreachable "
                                       f"({type(exc).__name__}: {exc}); nothing was admitted", PROBE_SECONDS)

    async def _unavailable(self, exc: BaseException, charge: Charge) -> LeaseAdmission:
        now = time.monotonic()
        if self.on_unavailable == "fail-closed":
            raise LimiterUnavailableError(
                f"the shared limits in Redis at {self.where} are unreachable ({type(exc).__name__}: {exc}); "
                f"nothing was admitted: start Redis or fix the URL, or use on_unavailable='local-share'",
                retry_after=PROBE_SECONDS) from None
        if self._outage_since is None:
            self._outage_since = now
            log.warning("Redis at %s is unreachable (%s: %s): admitting on a local share of the limits (%s) "
                        "until it answers", self.where, type(exc).__name__, exc, _summary(self._fallback.limits))
        self._next_probe = now + PROBE_SECONDS
        return await self._fallback.try_acquire(charge)

    def _reachable(self) -> None:
        if self._outage_since is not None:
            log.warning("Redis at %s answers again after %.1f s: the shared limits are back", self.where,
                        time.monotonic() - self._outage_since)
            self._outage_since = None


def _counts(limits: RateLimits) -> tuple[int, int, int, int]:
    """Concurrency, RPM, TPM, TPD exactly as given (-1: unlimited): no margin, no share."""
    return tuple(-1 if v is None else v for v in (limits.concurrency, limits.rpm, limits.tpm, limits.tpd))  # type: ignore[return-value]


def _summary(limits: RateLimits) -> str:
    return f"{limits.concurrency} in flight, {limits.rpm} RPM, {limits.tpm} TPM, {limits.tpd} TPD"


def describe_url(url: object) -> str:
    """The URL without its user and password, for messages and logs."""
    if not isinstance(url, str):
        return repr(url)
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "(not a URL)"

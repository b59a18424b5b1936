"""``RateLimiter``: the in-process ``Limiter``, for one process's batch runs, gateway or ``AsyncKimi`` code.

The arithmetic lives in ``limits.books``; this module adds the waiting. Waiters queue in FIFO order
behind one lock, so only the head of the line polls the books and nobody starves. The head sleeps
for the wait the books name, or until a request in flight is released.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.limits.books import LimiterState, RateLimits, Ticket
from kimiflow.limits.charge import Charge
from kimiflow.limits.interface import Lease, LeaseAdmission
from kimiflow.types.chat import Usage

Sleep = Callable[[float], Awaitable[Any]]


class Slot:
    """One admitted request as an ``async with`` block: ``settle(usage)`` corrects its charge."""

    def __init__(self, limiter: RateLimiter, charge: Charge) -> None:
        self._limiter = limiter
        self._charge = charge
        self.lease: Lease | None = None

    async def __aenter__(self) -> Slot:
        self.lease = await self._limiter.acquire(self._charge)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.lease is not None:
            self._limiter.release_now(self.lease)

    def settle(self, usage: Usage | None) -> None:
        """Replace the estimate with what Kimi counted (real prompt + the whole output budget)."""
        if self.lease is not None:
            self._limiter.settle_now(self.lease, usage)


class RateLimiter:
    """Keeps a process under Kimi's concurrency, RPM, TPM and TPD limits; slows down after a 429.

    >>> limiter = RateLimiter.for_tier(2)
    >>> async with limiter.slot(request_charge(body)) as slot:
    ...     resp = await client.chat.completions.create(**body)
    ...     slot.settle(resp.usage)
    >>> # on a 429 that got through anyway:
    >>> await limiter.report_rate_limited(exc.retry_after)

    It implements ``kimiflow.limits.Limiter``. ``clock`` and ``sleep`` are injectable so tests run on
    a fake clock.
    """

    def __init__(
        self,
        limits: RateLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        **adaptive: float,
    ) -> None:
        self.state = LimiterState(limits, clock=clock, **adaptive)
        self._clock = clock
        self._sleep = sleep
        self._line: asyncio.Lock | None = None
        self._released: asyncio.Event | None = None

    @classmethod
    def for_tier(
        cls,
        tier: int,
        *,
        concurrency: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        tpd: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> RateLimiter:
        """A limiter with Kimi's tier preset (0..5); explicit numbers override it."""
        limits = RateLimits.for_tier(tier, concurrency=concurrency, rpm=rpm, tpm=tpm, tpd=tpd)
        return cls(limits, clock=clock, sleep=sleep)

    @property
    def limits(self) -> RateLimits:
        return self.state.limits

    def slot(self, charge: Charge | None = None) -> Slot:
        """An ``async with`` block holding one request admitted at ``charge`` (nothing charged if omitted)."""
        return Slot(self, charge or Charge())

    def _events(self) -> tuple[asyncio.Lock, asyncio.Event]:
        # Created lazily: the limiter may be built outside the loop that uses it.
        if self._line is None or self._released is None:
            self._line = asyncio.Lock()
            self._released = asyncio.Event()
        return self._line, self._released

    async def try_acquire(self, charge: Charge) -> LeaseAdmission:
        """Admit now or say how long to wait (``None``: until a lease is released); never waits."""
        admission = self.state.try_acquire(charge.tokens, self._clock())
        if admission.ticket is None:
            return LeaseAdmission(None, admission.wait, admission.reason)
        return LeaseAdmission(Lease(charge, admission.ticket))

    async def acquire(self, charge: Charge) -> Lease:
        """Wait until a request charged ``charge`` may be sent; returns its lease (release it!)."""
        line, released = self._events()
        async with line:
            while True:
                admission = self.state.try_acquire(charge.tokens, self._clock())
                if admission.ticket is not None:
                    return Lease(charge, admission.ticket)
                released.clear()
                if admission.wait is None:
                    await released.wait()
                else:
                    await self._sleep_or_release(admission.wait, released)

    async def _sleep_or_release(self, seconds: float, released: asyncio.Event) -> None:
        # A settle that lowered a charge can open room early, so a wake-up re-reads the books.
        if self.state.in_flight == 0:
            await self._sleep(seconds)
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waiter = asyncio.ensure_future(released.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                if not task.done():
                    task.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)

    async def settle(self, lease: Lease, usage: Usage | None) -> None:
        self.settle_now(lease, usage)

    async def release(self, lease: Lease) -> None:
        self.release_now(lease)

    async def report_rate_limited(self, retry_after: float | None = None) -> None:
        """A 429 got through: pause everyone ``retry_after`` seconds (if given) and slow the whole run."""
        self.state.on_rate_limited(self._clock(), retry_after)
        _, released = self._events()
        released.set()  # the head re-reads the books and sees the pause

    # In-process books need no round trip, so the synchronous forms are public too (``Slot`` uses them).

    def settle_now(self, lease: Lease, usage: Usage | None) -> None:
        """``settle`` without awaiting; wakes the head waiter, as room may have appeared."""
        self.state.settle(_ticket(lease), lease.charge.settled(usage))
        _, released = self._events()
        released.set()

    def release_now(self, lease: Lease) -> None:
        """``release`` without awaiting (safe in a ``finally`` of a cancelled task)."""
        self.state.release(_ticket(lease))
        _, released = self._events()
        released.set()

    def seed_sent(self, ages: list[float]) -> int:
        """Count requests an earlier process sent ``ages`` seconds ago (see ``LimiterState.seed_sent``)."""
        return self.state.seed_sent(ages)

    def __repr__(self) -> str:
        return f"RateLimiter({self.state!r})"


def _ticket(lease: Lease) -> Ticket:
    if not isinstance(lease.handle, Ticket):
        raise InvalidArgumentError("this lease was not issued by this RateLimiter; settle and release it "
                                   "with the limiter that acquired it")
    return lease.handle

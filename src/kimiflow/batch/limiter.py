"""An asyncio rate limiter for Kimi's limits, for the batch runner and for any ``AsyncKimi`` user.

The arithmetic lives in ``kimiflow.core.ratelimit``; this module adds the waiting. Waiters queue
in FIFO order behind one lock, so only the head of the line polls the books and nobody starves.
The head sleeps for the wait the books name, or until a request in flight is released.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from kimiflow.core.ratelimit import LimiterState, RateLimits, Ticket
from kimiflow.core.tokens import estimate_message_tokens
from kimiflow.types.chat import Usage

DEFAULT_MAX_TOKENS_CHARGE = 1024
"""Tokens charged for the answer of a request without ``max_tokens`` (Kimi charges its default)."""

Sleep = Callable[[float], Awaitable[Any]]


def request_charge(body: Mapping[str, Any]) -> tuple[int, int]:
    """``(prompt estimate, max_tokens)`` Kimi will charge a chat request against TPM (kimi-api.md §6.3).

    >>> request_charge({"messages": [{"role": "user", "content": "你好"}], "max_tokens": 100})
    (8, 100)
    """
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS_CHARGE
    return estimate_message_tokens(body.get("messages") or ()), int(max_tokens)


class Slot:
    """One admitted request. ``settle(usage)`` corrects its token charge; leaving the block frees it."""

    def __init__(self, limiter: RateLimiter, prompt_tokens: int, max_tokens: int | None) -> None:
        self._limiter = limiter
        self._prompt_tokens = prompt_tokens
        self._max_tokens = max_tokens
        self.ticket: Ticket | None = None

    async def __aenter__(self) -> Slot:
        charge = self._prompt_tokens + (self._max_tokens or 0)
        self.ticket = await self._limiter.acquire(charge)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.ticket is not None:
            self._limiter.release(self.ticket)

    def settle(self, usage: Usage | int | None) -> None:
        """Replace the estimate with what Kimi counted: real prompt tokens + ``max_tokens``.

        Pass the response's ``usage`` (or a token count). Without ``max_tokens`` the slot charges
        the usage's total. ``None`` (no usage reported) keeps the estimate.
        """
        if self.ticket is None or usage is None:
            return
        if isinstance(usage, int):
            tokens = usage
        elif self._max_tokens is not None:
            tokens = usage.prompt_tokens + self._max_tokens
        else:
            tokens = usage.total_tokens
        self._limiter.settle(self.ticket, tokens)


class RateLimiter:
    """Keeps a run under Kimi's concurrency, RPM, TPM and TPD limits; slows down after a 429.

    >>> limiter = RateLimiter.for_tier(2)
    >>> async with limiter.slot(estimated_tokens=200, max_tokens=512) as slot:
    ...     resp = await client.chat.completions.create(model=..., messages=..., max_tokens=512)
    ...     slot.settle(resp.usage)
    >>> # on a 429 that got through anyway:
    >>> limiter.report_rate_limited(exc.retry_after)

    ``clock`` and ``sleep`` are injectable so tests run on a fake clock.
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

    def slot(self, estimated_tokens: int = 0, *, max_tokens: int | None = None) -> Slot:
        """An ``async with`` block holding one admitted request.

        ``estimated_tokens`` is the prompt estimate; with ``max_tokens`` the charge is their sum, as
        Kimi counts it. Without ``max_tokens``, ``estimated_tokens`` is taken as the whole charge.
        """
        return Slot(self, estimated_tokens, max_tokens)

    def _events(self) -> tuple[asyncio.Lock, asyncio.Event]:
        # Created lazily: the limiter may be built outside the loop that uses it.
        if self._line is None or self._released is None:
            self._line = asyncio.Lock()
            self._released = asyncio.Event()
        return self._line, self._released

    async def acquire(self, tokens: int = 0) -> Ticket:
        """Wait until a request charged ``tokens`` may be sent; returns its ticket (release it!)."""
        line, released = self._events()
        async with line:
            while True:
                admission = self.state.try_acquire(tokens, self._clock())
                if admission.ticket is not None:
                    return admission.ticket
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

    def settle(self, ticket: Ticket, tokens: int) -> None:
        """Correct a ticket's token charge; wakes the head waiter, as room may have appeared."""
        self.state.settle(ticket, tokens)
        _, released = self._events()
        released.set()

    def release(self, ticket: Ticket) -> None:
        """The request is over: free its concurrency slot and wake the next waiter."""
        self.state.release(ticket)
        _, released = self._events()
        released.set()

    def report_rate_limited(self, retry_after: float | None = None) -> None:
        """A 429 got through: pause everyone ``retry_after`` seconds (if given) and slow the whole run."""
        self.state.on_rate_limited(self._clock(), retry_after)
        _, released = self._events()
        released.set()  # the head re-reads the books and sees the pause

    def __repr__(self) -> str:
        return f"RateLimiter({self.state!r})"

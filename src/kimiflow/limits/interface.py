"""The one interface to Kimi's limits that the batch runner, the gateway and library code share.

A ``Limiter`` admits requests against an account's concurrency, RPM, TPM and TPD: ``acquire`` waits
for room and returns a ``Lease``; ``try_acquire`` never waits (it says how long to wait instead);
``settle`` corrects the lease's token charge once the answer's usage is known; ``release`` ends it,
whatever the outcome. ``RateLimiter`` (``limits.local``) keeps the books in this process and is the
default; an implementation over a shared store (Redis) fits beside it without changing a caller.
Every method is a coroutine so that such an implementation can make its round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from kimiflow.limits.books import RateLimits
from kimiflow.limits.charge import Charge
from kimiflow.types.chat import Usage


@dataclass
class Lease:
    """One admitted request: its charge, and the implementation's own record of the admission."""

    charge: Charge
    handle: object = None
    """Opaque to callers: the in-process books' ticket, a shared store's lease id..."""


@dataclass(frozen=True)
class LeaseAdmission:
    """What ``try_acquire`` answers: a ``lease`` when admitted, else the ``wait`` in seconds and why.

    ``wait is None`` means the concurrency limit is full: room appears when a lease is released.
    """

    lease: Lease | None
    wait: float | None = 0.0
    reason: str = ""


@runtime_checkable
class Limiter(Protocol):
    """Admission to an account's limits. Callers depend on this, never on an implementation.

    >>> lease = await limiter.acquire(request_charge(body))
    >>> try:
    ...     resp = await client.chat.completions.create(**body)
    ...     await limiter.settle(lease, resp.usage)
    ... except RateLimitError as exc:
    ...     await limiter.report_rate_limited(exc.retry_after)
    ... finally:
    ...     await limiter.release(lease)

    ``acquire`` and ``try_acquire`` raise ``RequestTooLargeError`` for a charge no window can ever hold.
    """

    @property
    def limits(self) -> RateLimits:
        """The limits this limiter keeps to (for display, pacing estimates and the summary)."""
        ...

    async def acquire(self, charge: Charge) -> Lease:
        """Wait until a request charged ``charge`` may be sent; the lease must be released."""
        ...

    async def try_acquire(self, charge: Charge) -> LeaseAdmission:
        """Admit now or say how long to wait; never waits for room."""
        ...

    async def settle(self, lease: Lease, usage: Usage | None) -> None:
        """Correct the lease's charge from the answer's usage (prompt part only; see ``Charge.settled``)."""
        ...

    async def release(self, lease: Lease) -> None:
        """The request is over: free its concurrency slot. Idempotent."""
        ...

    async def report_rate_limited(self, retry_after: float | None = None) -> None:
        """A 429 got through anyway: pause admissions ``retry_after`` seconds (if given) and slow down."""
        ...

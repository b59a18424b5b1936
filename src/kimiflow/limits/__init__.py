"""Kimi's limits as one interface, for the batch runner, the gateway and library code alike.

>>> from kimiflow.limits import RateLimiter, RateLimits, request_charge
>>> limiter = RateLimiter(RateLimits.for_tier(2))            # the in-process default
>>> lease = await limiter.acquire(request_charge(body))      # waits for room under every limit
>>> resp = await client.chat.completions.create(**body)
>>> await limiter.settle(lease, resp.usage)                  # real prompt + the whole output budget
>>> await limiter.release(lease)

Code that takes a limiter types it as ``Limiter`` (a Protocol), so an implementation over a shared
store can replace ``RateLimiter`` without touching it.
"""

from kimiflow.limits.books import Admission, LimiterState, RateLimits, RequestTooLargeError, SlidingWindow, Ticket
from kimiflow.limits.charge import Charge, request_charge
from kimiflow.limits.interface import Lease, LeaseAdmission, Limiter
from kimiflow.limits.local import RateLimiter, Slot

__all__ = [
    "Admission",
    "Charge",
    "Lease",
    "LeaseAdmission",
    "Limiter",
    "LimiterState",
    "RateLimiter",
    "RateLimits",
    "RequestTooLargeError",
    "SlidingWindow",
    "Slot",
    "Ticket",
    "request_charge",
]

"""Kimi's limits as one interface, for the batch runner, the gateway and library code alike.

>>> from kimiflow.limits import RateLimiter, RateLimits, request_charge
>>> limiter = RateLimiter(RateLimits.for_tier(2))            # the in-process default
>>> lease = await limiter.acquire(request_charge(body))      # waits for room under every limit
>>> resp = await client.chat.completions.create(**body)
>>> await limiter.settle(lease, resp.usage)                  # real prompt + the whole output budget
>>> await limiter.release(lease)

Code that takes a limiter types it as ``Limiter`` (a Protocol), so an implementation over a shared
store can replace ``RateLimiter`` without touching it: ``RedisLimiter`` (``limits.redis``) shares one
account's limits across processes and machines. It is imported on first use only, so
``import kimiflow.limits`` never imports redis.
"""

from typing import Any

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
    "LimiterUnavailableError",
    "RateLimiter",
    "RateLimits",
    "RedisLimiter",
    "RequestTooLargeError",
    "SlidingWindow",
    "Slot",
    "Ticket",
    "request_charge",
]

_LAZY = {"LimiterUnavailableError", "RedisLimiter"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from kimiflow.limits import redis

        return getattr(redis, name)
    raise AttributeError(f"module 'kimiflow.limits' has no attribute {name!r}")

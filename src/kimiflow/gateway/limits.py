"""The one door through which the gateway reaches kimiflow's limiter arithmetic.

The arithmetic is ``kimiflow.limits``' books, shared with the batch runner; the two helpers give a
book's headroom for the ``x-ratelimit-remaining-*`` headers.
"""

from __future__ import annotations

import time

from kimiflow.limits.books import Admission, LimiterState, RateLimits, RequestTooLargeError, Ticket

__all__ = [
    "Admission",
    "LimiterState",
    "RateLimits",
    "RequestTooLargeError",
    "Ticket",
    "remaining_requests",
    "remaining_tokens",
]


def remaining_requests(state: LimiterState, now: float | None = None) -> int | None:
    """Requests still admissible in the current minute window; ``None`` when RPM is unlimited."""
    return state.remaining(time.monotonic() if now is None else now)["requests"]


def remaining_tokens(state: LimiterState, now: float | None = None) -> int | None:
    """Tokens still admissible in the current minute window; ``None`` when TPM is unlimited."""
    return state.remaining(time.monotonic() if now is None else now)["tokens"]

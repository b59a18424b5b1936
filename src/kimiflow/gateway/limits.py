"""The one door through which the gateway reaches kimiflow's limiter arithmetic.

The limiter is moving to ``kimiflow.limits``; when it lands, only the import below changes. The two
helpers read a book's current window counts for the ``x-ratelimit-remaining-*`` headers, which the
limiter does not expose as public API yet.
"""

from __future__ import annotations

import math
import time

from kimiflow.core.ratelimit import Admission, LimiterState, RateLimits, RequestTooLargeError, Ticket

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
    if state.limits.rpm is None:
        return None
    now = time.monotonic() if now is None else now
    window = state._requests
    window.expire(now)
    return max(0, math.floor(state.effective(now)["rpm"] - window.total))


def remaining_tokens(state: LimiterState, now: float | None = None) -> int | None:
    """Tokens still admissible in the current minute window; ``None`` when TPM is unlimited."""
    if state.limits.tpm is None:
        return None
    now = time.monotonic() if now is None else now
    window = state._tokens
    window.expire(now)
    return max(0, math.floor(state.effective(now)["tpm"] - window.total))

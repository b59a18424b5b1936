"""Retry decisions and delays, sans-I/O: the clients supply the sleeping and the clock.

What is retried (docs/kimi-api.md §5.3): connection errors, timeouts, 408, 409, 429
``rate_limit_reached_error`` / ``engine_overloaded_error`` and 5xx. Never 400/401/403/404, and never
``exceeded_current_quota_error`` whatever its status: retrying a quota error only burns requests.
Delays honour ``retry-after-ms`` / ``Retry-After`` and, because Kimi sends no such header, the
"please try again after N seconds" in its 429 messages; otherwise exponential backoff with jitter.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kimiflow.core.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    DeadlineExceededError,
    InternalServerError,
    MalformedResponseError,
    QuotaExceededError,
    RateLimitError,
    StreamError,
)

_TRY_AGAIN = re.compile(r"try again after\s+(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|seconds?)?", re.IGNORECASE)
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_HONOURED_RETRY_AFTER = 120.0
"""A server asking for a longer pause than this is not waited for: the error is raised instead."""


def retry_after_from(message: str | None, headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait, from headers or Kimi's message text; ``None`` if it did not say.

    >>> retry_after_from("request reached max request: 3, please try again after 20 seconds", {})
    20.0
    """
    if headers:
        lowered = {k.lower(): v for k, v in headers.items()}
        ms = lowered.get("retry-after-ms")
        if ms is not None:
            try:
                return max(float(ms) / 1000.0, 0.0)
            except ValueError:
                pass
        value = lowered.get("retry-after")
        if value is not None:
            try:
                return max(float(value), 0.0)
            except ValueError:
                import email.utils  # rare path: an HTTP-date Retry-After

                try:
                    parsed = email.utils.parsedate_to_datetime(value)
                except (TypeError, ValueError):
                    parsed = None
                if parsed is not None:
                    return max(parsed.timestamp() - time.time(), 0.0)
    if message:
        match = _TRY_AGAIN.search(message)
        if match:
            seconds = float(match.group(1))
            unit = (match.group(2) or "s").lower()
            return seconds / 1000.0 if unit.startswith("m") else seconds
    return None


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed attempt may be tried again (before any stream data reached the caller)."""
    if isinstance(exc, QuotaExceededError):
        return False
    if isinstance(exc, DeadlineExceededError):
        return False
    if isinstance(exc, StreamError):
        return False
    if isinstance(exc, (RateLimitError, InternalServerError, APIConnectionError, MalformedResponseError)):
        return True
    if isinstance(exc, APIStatusError):
        return exc.status_code in RETRYABLE_STATUSES
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to wait. ``max_retries=2`` means up to three attempts.

    >>> Kimi(retry_policy=RetryPolicy(max_retries=5, initial_delay=0.2))   # six attempts at most

    How many retries a client makes, one rule: an explicit ``max_retries=`` (to the constructor,
    ``with_options`` or a single call) wins; otherwise this policy's ``max_retries``; otherwise 2.
    An explicit count replaces only the count: the policy's delays still apply.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25
    """Each backoff delay is scaled by a random factor in [1 - jitter, 1]."""

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The pause after failed attempt number ``attempt`` (1-based) when the server named none:
        ``initial_delay`` doubling per attempt, capped at ``max_delay``, scaled down by the jitter.

        >>> RetryPolicy(jitter=0.0).backoff(3)
        2.0
        """
        base = min(self.max_delay, self.initial_delay * (2.0 ** (attempt - 1)))
        return base * (1.0 - self.jitter * (rng or _SHARED_RNG).random())


_SHARED_RNG = random.Random()
"""Jitter needs no per-call seeding; one generator avoids an os.urandom read per request."""


@dataclass
class RetryState:
    """One call's attempts. ``next_delay`` answers: wait this long and try again, or give up (None)."""

    policy: RetryPolicy
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = _SHARED_RNG
    attempts: int = 0

    def start_attempt(self) -> None:
        self.attempts += 1

    def remaining(self) -> float | None:
        """Seconds left before the total deadline (``None`` without one)."""
        if self.deadline is None:
            return None
        return self.deadline - self.clock()

    def next_delay(self, exc: BaseException) -> float | None:
        if self.attempts > self.policy.max_retries or not is_retryable(exc):
            return None
        retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
        if retry_after is not None:
            if retry_after > MAX_HONOURED_RETRY_AFTER:
                return None
            delay = retry_after
        else:
            delay = self.policy.backoff(self.attempts, self.rng)
        remaining = self.remaining()
        if remaining is not None and delay >= remaining:
            return None
        return delay

    def tag(self, exc: APIError) -> APIError:
        """Record on the error how many attempts were made."""
        exc.attempts = self.attempts
        return exc

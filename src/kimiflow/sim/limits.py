"""Tier admission per API key: concurrency, RPM, TPM and TPD (docs/kimi-api.md §6).

Requests are charged prompt tokens + max_tokens (or the default) at admission, never the real
output (§6.3). Windows slide over ``clock()`` seconds: 60 for RPM/TPM, 86,400 for TPD. Memory per
key is bounded by the limits themselves (an RPM window holds at most RPM timestamps).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kimiflow.core.catalog import default_max_tokens
from kimiflow.core.tiers import TierLimits
from kimiflow.sim import errors

MINUTE = 60.0
DAY = 86_400.0


def admission_tokens(prompt_tokens: int, max_tokens: int | None, model: str, default: int | None = None) -> int:
    """What a request is charged at admission: prompt + its ``max_tokens``, else ``default`` when the
    simulator was given one, else the model's own default from the catalog (as Kimi does)."""
    if max_tokens is not None:
        return prompt_tokens + max_tokens
    return prompt_tokens + (default if default is not None else default_max_tokens(model))


@dataclass
class _Window:
    """Events (time, amount) inside a sliding window, with their running sum."""

    span: float
    events: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def expire(self, now: float) -> None:
        horizon = now - self.span
        events = self.events
        while events and events[0][0] <= horizon:
            self.total -= events.popleft()[1]

    def add(self, now: float, amount: int) -> None:
        self.events.append((now, amount))
        self.total += amount

    def seconds_until_free(self, now: float) -> int:
        """Whole seconds until the oldest event leaves the window (at least 1)."""
        if not self.events:
            return 1
        return max(1, math.ceil(self.events[0][0] + self.span - now))


@dataclass
class _KeyState:
    in_flight: int = 0
    requests: _Window = field(default_factory=lambda: _Window(MINUTE))
    tokens_minute: _Window = field(default_factory=lambda: _Window(MINUTE))
    tokens_day: _Window = field(default_factory=lambda: _Window(DAY))


class TierLimiter:
    """Admits or rejects requests for one tier's limits, per key.

    >>> limiter = TierLimiter(tier_limits(0), clock=time.monotonic)
    >>> limiter.admit("sk-...", tokens=1200)   # raises SimError 429 when a limit is reached
    >>> limiter.release("sk-...")              # when the response (or stream) is finished
    """

    def __init__(self, limits: TierLimits | None, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}

    def admit(self, key: str, tokens: int) -> None:
        """Count one request of ``tokens`` against ``key``; raise the 429 ``SimError`` if over a limit."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
        limits = self.limits
        if limits is None:
            state.in_flight += 1
            return
        now = self._clock()
        if state.in_flight >= limits.concurrency:
            raise errors.concurrency_reached(key, limits.concurrency, 1)
        state.requests.expire(now)
        if len(state.requests.events) >= limits.rpm:
            raise errors.rpm_reached(key, limits.rpm, state.requests.seconds_until_free(now))
        state.tokens_minute.expire(now)
        if state.tokens_minute.total + tokens > limits.tpm:
            raise errors.tpm_reached(key, state.tokens_minute.total, limits.tpm)
        if limits.tpd is not None:
            state.tokens_day.expire(now)
            if state.tokens_day.total + tokens > limits.tpd:
                raise errors.tpd_reached(key, state.tokens_day.total, limits.tpd)
            state.tokens_day.add(now, tokens)
        state.requests.add(now, 1)
        state.tokens_minute.add(now, tokens)
        state.in_flight += 1

    def release(self, key: str) -> None:
        """The request admitted for ``key`` has finished (successfully or not)."""
        state = self._keys.get(key)
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1

    def tokens_this_minute(self, key: str) -> int:
        """Tokens charged to ``key`` over the last minute (what TPM admission compares to the limit)."""
        state = self._keys.get(key)
        if state is None:
            return 0
        state.tokens_minute.expire(self._clock())
        return state.tokens_minute.total

    def in_flight(self, key: str) -> int:
        """Requests of ``key`` currently admitted and not finished."""
        state = self._keys.get(key)
        return state.in_flight if state is not None else 0

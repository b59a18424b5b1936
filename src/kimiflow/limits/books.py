"""The books of Kimi's four limits, without I/O: concurrency, RPM, TPM and TPD.

Kimi admits a request when, over the last minute (day for TPD), the account's request count and
its *charged* tokens stay under the tier's limits; a request is charged its prompt tokens plus
``max_tokens`` at admission, whatever it actually generates (docs/kimi-api.md §6.3). This module keeps
the same books on the client side so the server never has to say 429:

* ``try_acquire(tokens, now)`` either admits a request (returning a ``Ticket``) or says how long
  to wait; it never sleeps. ``None`` as the wait means "until a request in flight finishes".
  It is ``refusal(tokens, now)`` (asks, records nothing) then ``commit(tokens, now)`` (records).
* ``settle(ticket, tokens, now)`` replaces the up-front estimate with the real count and
  ``release(ticket, now)`` frees the concurrency slot.
* ``on_rate_limited(now, retry_after)`` is called for a 429 that got through anyway (other
  clients on the same account, a tighter server): it pauses everyone until ``retry_after`` and
  shrinks every limit for the whole run; the limits grow back linearly over ``recovery_seconds``.

Windows are sliding, like the server's. Each is a list of time buckets, so memory stays bounded
(at most ``BUCKETS_PER_WINDOW`` per window) even at 10,000 RPM or over a whole day.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.tiers import tier_limits

BUCKETS_PER_WINDOW = 1000
"""Resolution of a sliding window. Admissions closer together than window/1000 share a bucket."""


@dataclass(frozen=True)
class RateLimits:
    """The limits to stay under; ``None`` means unlimited.

    ``margin`` keeps every count limit that fraction under the real one (in whole units, so small
    limits such as tier 0's 3 RPM are used in full) and ``guard_seconds``
    lengthens each window, so a little network jitter between our clock and the server's cannot
    turn into a 429. Use ``for_tier`` for Kimi's presets:

    >>> RateLimits.for_tier(2, rpm=300)
    RateLimits(concurrency=100, rpm=300, tpm=3000000, tpd=None, ...)
    """

    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    window_seconds: float = 60.0
    day_seconds: float = 86_400.0
    margin: float = 0.02
    guard_seconds: float = 0.5

    def __post_init__(self) -> None:
        for name in ("concurrency", "rpm", "tpm", "tpd"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidArgumentError(f"{name} must be a positive whole number or None (unlimited), got {value!r}")
        if not 0.0 <= self.margin < 0.5:
            raise InvalidArgumentError(f"margin must be in [0, 0.5), got {self.margin!r}")
        if self.window_seconds <= 0 or self.day_seconds <= 0 or self.guard_seconds < 0:
            raise InvalidArgumentError("window_seconds and day_seconds must be positive and guard_seconds not negative")

    @classmethod
    def for_tier(
        cls,
        tier: int,
        *,
        concurrency: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        tpd: int | None = None,
        **options: float,
    ) -> RateLimits:
        """Kimi's limits for ``tier`` (0..5, docs/kimi-api.md §6.1); explicit numbers override the preset."""
        try:
            preset = tier_limits(tier)
        except ValueError as exc:
            raise InvalidArgumentError(f"tier={tier!r}: {exc}") from None
        return cls(
            concurrency=concurrency if concurrency is not None else preset.concurrency,
            rpm=rpm if rpm is not None else preset.rpm,
            tpm=tpm if tpm is not None else preset.tpm,
            tpd=tpd if tpd is not None else preset.tpd,
            **options,
        )

    def divided(self, parts: int) -> RateLimits:
        """Each count limit split evenly over ``parts`` processes (at least 1 each): a local share."""
        if parts == 1:
            return self
        counts = {name: None if (v := getattr(self, name)) is None else max(1, v // parts)
                  for name in ("concurrency", "rpm", "tpm", "tpd")}
        return replace(self, **counts)  # type: ignore[arg-type]

    def with_overrides(self, **changes: object) -> RateLimits:
        """A copy with some fields replaced (``None`` values are ignored, not applied)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


class _Bucket:
    __slots__ = ("alive", "amount", "start", "time")

    def __init__(self, time: float, amount: float) -> None:
        self.start = time  # decides which admissions merge into this bucket
        self.time = time  # latest admission in it: decides when it expires
        self.amount = amount
        self.alive = True


class SlidingWindow:
    """Amounts admitted over the last ``window`` seconds, in at most ``BUCKETS_PER_WINDOW`` buckets.

    A bucket carries the time of its *latest* admission, so merged admissions expire a little late:
    the window can only over-count, never under-count (at most 1/1000 of throughput lost).
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._resolution = window / BUCKETS_PER_WINDOW
        self._buckets: deque[_Bucket] = deque()
        self.total = 0.0

    def expire(self, now: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0].time + self.window <= now:
            gone = buckets.popleft()
            gone.alive = False
            self.total -= gone.amount
        if not buckets:
            self.total = 0.0  # no float drift once empty

    def add(self, amount: float, now: float) -> _Bucket:
        buckets = self._buckets
        if buckets and buckets[-1].time <= now < buckets[-1].start + self._resolution:
            bucket = buckets[-1]
            bucket.amount += amount
            bucket.time = now
        else:
            bucket = _Bucket(now, amount)
            buckets.append(bucket)
        self.total += amount
        return bucket

    def adjust(self, bucket: _Bucket, delta: float) -> None:
        """Change what an earlier admission counts for, if it is still in the window."""
        if bucket.alive:
            bucket.amount += delta
            self.total += delta

    def wait_for_room(self, amount: float, limit: float, now: float) -> float:
        """Seconds until ``amount`` more fits under ``limit`` (0.0 if it fits now)."""
        self.expire(now)
        excess = self.total + amount - limit
        if excess <= 1e-9:
            return 0.0
        freed = 0.0
        for bucket in self._buckets:
            freed += bucket.amount
            if freed >= excess - 1e-9:
                return max(bucket.time + self.window - now, 0.0)
        return math.inf  # cannot fit even in an empty window; the caller decides

    def until_empty(self, now: float) -> float:
        """Seconds until everything now in the window has expired."""
        self.expire(now)
        if not self._buckets:
            return 0.0
        return max(self._buckets[-1].time + self.window - now, 0.0)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class Ticket:
    """One admitted request: what it was charged, so it can be settled and released."""

    tokens: int
    admitted_at: float
    _minute: _Bucket | None = None
    _day: _Bucket | None = None
    settled: bool = False
    released: bool = False


@dataclass(frozen=True)
class Admission:
    """Result of ``try_acquire``: a ``ticket`` when admitted, else the ``wait`` in seconds.

    ``wait is None`` means the concurrency limit is full: wait until a request is released.
    """

    ticket: Ticket | None
    wait: float | None = 0.0
    reason: str = ""


class RequestTooLargeError(InvalidArgumentError):
    """A request needs more tokens than the per-minute or per-day limit allows at all."""


class LimiterState:
    """The books of one account's limits. Pure: every method takes ``now`` (or uses ``clock``).

    >>> state = LimiterState(RateLimits(rpm=2))
    >>> state.try_acquire(100, now=0.0).ticket is not None
    True
    """

    def __init__(
        self,
        limits: RateLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff_factor: float = 0.7,
        min_scale: float = 0.1,
        recovery_seconds: float = 30.0,
        overload_cooldown: float = 1.0,
    ) -> None:
        if not 0.0 < backoff_factor < 1.0:
            raise InvalidArgumentError(f"backoff_factor must be between 0 and 1, got {backoff_factor!r}")
        self.limits = limits
        self.clock = clock
        self.backoff_factor = backoff_factor
        self.min_scale = min_scale
        self.recovery_seconds = recovery_seconds
        self.overload_cooldown = overload_cooldown
        window = limits.window_seconds + limits.guard_seconds
        self._requests = SlidingWindow(window)
        self._tokens = SlidingWindow(window)
        self._day_tokens = SlidingWindow(limits.day_seconds + limits.guard_seconds)
        self.in_flight = 0
        self.paused_until = -math.inf
        # Adaptive scale: dropped on a 429 to ``_scale_floor`` at ``_scale_since``, then grows back.
        self._scale_floor = 1.0
        self._scale_since = -math.inf
        self._last_backoff = -math.inf
        self.rate_limited_count = 0
        self.admitted_count = 0

    # -- limits in effect ----------------------------------------------------------------------

    def scale(self, now: float | None = None) -> float:
        """Fraction of the limits in effect now: 1.0 normally, lower for a while after a 429."""
        now = self.clock() if now is None else now
        if self._scale_floor >= 1.0 or self.recovery_seconds <= 0:
            return 1.0
        grown = (now - self._scale_since) / self.recovery_seconds * (1.0 - self.min_scale)
        return min(1.0, self._scale_floor + max(grown, 0.0))

    def _limit(self, value: int | None, scale: float) -> float:
        if value is None:
            return math.inf
        # The margin takes whole units only: 2 % of 200 RPM is 4, but 2 % of Kimi's tier-0 3 RPM is
        # nothing, not one of the three (that would cost a third of the throughput).
        kept = value - math.floor(value * self.limits.margin)
        return max(1.0, math.floor(kept * scale))

    def remaining(self, now: float | None = None) -> dict[str, int | None]:
        """What may still be admitted in the current windows (after margin and back-off): ``requests``
        and ``tokens`` this minute, ``None`` for an unlimited one. For ``x-ratelimit-remaining-*`` headers."""
        now = self.clock() if now is None else now
        eff = self.effective(now)
        left: dict[str, int | None] = {"requests": None, "tokens": None}
        for name, limit, window in (("requests", self.limits.rpm, self._requests), ("tokens", self.limits.tpm,
                                                                                    self._tokens)):
            if limit is not None:
                window.expire(now)
                left[name] = max(0, math.floor(eff["rpm" if name == "requests" else "tpm"] - window.total))
        return left

    def effective(self, now: float | None = None) -> dict[str, float]:
        """The limits applied right now, after margin and adaptive back-off."""
        scale = self.scale(now)
        lim = self.limits
        return {
            "concurrency": self._limit(lim.concurrency, scale),
            "rpm": self._limit(lim.rpm, scale),
            "tpm": self._limit(lim.tpm, scale),
            "tpd": self._limit(lim.tpd, 1.0),  # a daily budget does not shrink on a 429
        }

    # -- admission -----------------------------------------------------------------------------

    def try_acquire(self, tokens: int = 0, now: float | None = None) -> Admission:
        """Admit a request charged ``tokens`` (prompt estimate + max_tokens) now, or say how long to wait.

        Raises ``RequestTooLargeError`` if ``tokens`` exceeds the TPM or TPD limit outright. It is
        ``refusal`` then ``commit`` at the same ``now``.
        """
        now = self.clock() if now is None else now
        refused = self.refusal(tokens, now)
        if refused is not None:
            return refused
        return Admission(self.commit(tokens, now))

    def refusal(self, tokens: int = 0, now: float | None = None) -> Admission | None:
        """Why ``try_acquire(tokens, now)`` would refuse (an ``Admission`` without a ticket), or ``None``
        when it would admit. Records nothing, so a caller holding several books (a key under an
        account) can ask all of them first and ``commit`` to each only when every one has room:
        a refusal by one then leaves the others exactly as they were, with nothing to undo.

        Raises ``RequestTooLargeError`` like ``try_acquire``.
        """
        now = self.clock() if now is None else now
        if tokens < 0:
            raise InvalidArgumentError(f"tokens must not be negative, got {tokens}")
        lim = self.limits
        for name, value in (("TPM", lim.tpm), ("TPD", lim.tpd)):
            if value is not None and tokens > value:
                raise RequestTooLargeError(
                    f"a request charged {tokens} tokens can never fit the {name} limit of {value}; "
                    "lower max_tokens or shorten the prompt"
                )
        if now < self.paused_until:
            return Admission(None, self.paused_until - now, "paused after a 429")
        eff = self.effective(now)
        if self.in_flight >= eff["concurrency"]:
            return Admission(None, None, "concurrency")
        waits: list[tuple[float, str]] = []
        waits.append((self._requests.wait_for_room(1, eff["rpm"], now), "rpm"))
        # A request larger than the reduced limit is still admitted into an empty window.
        waits.append((self._room(self._tokens, tokens, eff["tpm"], now), "tpm"))
        waits.append((self._room(self._day_tokens, tokens, eff["tpd"], now), "tpd"))
        wait, reason = max(waits)
        if wait > 0:
            return Admission(None, wait, reason)
        return None

    def commit(self, tokens: int, now: float) -> Ticket:
        """Record one admission charged ``tokens`` at ``now``, which ``refusal(tokens, now)`` just
        allowed (with nothing admitted in between); it checks nothing itself."""
        ticket = Ticket(tokens=tokens, admitted_at=now)
        self._requests.add(1, now)
        lim = self.limits
        if lim.tpm is not None:
            ticket._minute = self._tokens.add(tokens, now)
        if lim.tpd is not None:
            ticket._day = self._day_tokens.add(tokens, now)
        self.in_flight += 1
        self.admitted_count += 1
        return ticket

    @staticmethod
    def _room(window: SlidingWindow, tokens: int, limit: float, now: float) -> float:
        wait = window.wait_for_room(tokens, limit, now)
        if math.isinf(wait):
            # Larger than the (reduced) limit: it fits only into an empty window.
            return window.until_empty(now)
        return wait

    def settle(self, ticket: Ticket, tokens: int, now: float | None = None) -> None:
        """Replace a ticket's up-front charge with the real count (e.g. real prompt + max_tokens)."""
        if ticket.settled:
            return
        ticket.settled = True
        delta = tokens - ticket.tokens
        if delta == 0:
            return
        if ticket._minute is not None:
            self._tokens.adjust(ticket._minute, delta)
        if ticket._day is not None:
            self._day_tokens.adjust(ticket._day, delta)
        ticket.tokens = tokens

    def release(self, ticket: Ticket, now: float | None = None) -> None:
        """The request is over (whatever its outcome): free its concurrency slot. Idempotent."""
        if ticket.released:
            return
        ticket.released = True
        self.in_flight -= 1

    def seed_sent(self, ages: Iterable[float], now: float | None = None) -> int:
        """Count requests an earlier process sent ``ages`` seconds ago, so a resume does not burst.

        The server still counts them in its window; a fresh process would otherwise start empty and
        send a whole window's worth at once. Ages outside the minute window are ignored; returns
        how many were counted. Call it before the first ``try_acquire``.
        """
        now = self.clock() if now is None else now
        window = self._requests.window
        counted = 0
        for age in sorted((a for a in ages if 0.0 <= a < window), reverse=True):  # oldest first
            self._requests.add(1, now - age)
            counted += 1
        return counted

    # -- feedback from the server --------------------------------------------------------------

    def on_rate_limited(self, now: float | None = None, retry_after: float | None = None) -> None:
        """A 429 (rate limit or overload) got through: pause everyone and slow the whole run.

        429s from one burst arrive together, so the limits shrink at most once per
        ``overload_cooldown`` seconds; the pause always extends to the latest ``retry_after``.
        """
        now = self.clock() if now is None else now
        self.rate_limited_count += 1
        if retry_after is not None and retry_after > 0:
            self.paused_until = max(self.paused_until, now + retry_after)
        if now - self._last_backoff < self.overload_cooldown:
            return
        self._last_backoff = now
        self._scale_floor = max(self.min_scale, self.scale(now) * self.backoff_factor)
        self._scale_since = now

    def pause(self, seconds: float, now: float | None = None) -> None:
        """Admit nothing for ``seconds`` (e.g. the server said "try again after N seconds")."""
        now = self.clock() if now is None else now
        self.paused_until = max(self.paused_until, now + seconds)

    def __repr__(self) -> str:
        return (
            f"LimiterState(limits={self.limits!r}, in_flight={self.in_flight}, "
            f"scale={self.scale():.2f}, rate_limited={self.rate_limited_count})"
        )

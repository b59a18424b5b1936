"""Admission: reserve-then-settle over a key's concurrency, RPM, TPM and budget, under the account's tier.

``Books.admit`` is synchronous with no ``await`` inside, so on the one event loop the check and the
reservation of every limit happen as one step: 50 requests arriving together cannot all see the
same free budget. The order is budget (checked), the key's limiter, the account's limiter, then
the budget is reserved. Each limiter is first only asked (``LimiterState.refusal``) and written to
(``commit``) only once every one has room, so a request the account's limiter refuses leaves the
key's request window, token windows and concurrency slot exactly as they were: a key behind a busy
account still gets its full RPM once the account has room again.

A request is charged, up front, its prompt estimate plus its ``max_tokens`` (the model's default
when absent) against TPM, as Kimi counts, and its worst-case cost against the budget (a padded
prompt estimate plus all of ``max_tokens`` at the output price). ``settle`` replaces both with the
real figures from Kimi's usage; ``release`` frees the concurrency slots.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from kimiflow.gateway.keys import KeyLimits, KeyRecord
from kimiflow.gateway.limits import (
    LimiterState,
    RateLimits,
    RequestTooLargeError,
    Ticket,
)


def key_rate_limits(limits: KeyLimits, share: int = 1) -> RateLimits:
    # No margin or guard for a key's own limits: an admin who says 5 RPM means exactly 5.
    return RateLimits(concurrency=limits.concurrency, rpm=limits.rpm, tpm=limits.tpm, margin=0.0,
                      guard_seconds=0.0).divided(share)


def over_budget(name: str, limits: KeyLimits, spent: float, reserved: float, worst_cny: float) -> Rejection:
    """The refusal of a request whose worst case does not fit what is left of the key's budget."""
    budget = limits.budget_cny or 0.0
    return Rejection(
        429, "exceeded_current_quota_error",
        f"Your key '{name}' exceeded its budget: spent {spent:.4f} of {budget:.4f} CNY this "
        f"{limits.budget_period if limits.budget_period != 'total' else 'lifetime'}, "
        f"{reserved:.4f} CNY reserved by requests in flight, this request may cost up to "
        f"{worst_cny:.4f} CNY; ask the gateway's admin to raise the budget",
        "budget",
    )


def too_large_for_key(name: str, limits: KeyLimits, tokens: int) -> Rejection:
    return Rejection(400, "invalid_request_error",
                     f"Invalid request: this request is charged {tokens} tokens (prompt + max_tokens) but key "
                     f"'{name}' has a TPM limit of {limits.tpm}; lower max_tokens or shorten the prompt",
                     "key_tpm_too_large")


def too_large_for_account(tokens: int) -> Rejection:
    return Rejection(400, "invalid_request_error",
                     f"Invalid request: this request is charged {tokens} tokens, more than the account's tier "
                     "allows per minute or day; lower max_tokens", "account_too_large")


def refusal(who: str, scope: str, reason: str, wait: float | None, eff: dict[str, float], tokens: int) -> Rejection:
    """A rate-limit refusal in Kimi's words; ``eff`` holds the limits in effect (concurrency, rpm, tpm, tpd)."""
    retry_after = 1 if wait is None else max(1, math.ceil(wait))
    if reason == "concurrency":
        what = f"reached its max concurrency: {int(eff['concurrency'])} ({scope} concurrency)"
    elif reason == "rpm":
        what = f"reached its max RPM: {int(eff['rpm'])} requests per minute ({scope} RPM)"
    elif reason == "tpm":
        what = f"reached its TPM rate limit: this request is charged {tokens} tokens, limit: {int(eff['tpm'])} ({scope} TPM)"
    elif reason == "tpd":
        what = f"reached its TPD rate limit, limit: {int(eff['tpd'])} ({scope} TPD)"
    else:
        what = f"is paused after Kimi answered 429 ({scope})"
    slug = "account" if scope.startswith("account") else "key"
    return Rejection(429, "rate_limit_reached_error", f"{who} {what}, please try again after {retry_after} seconds",
                     f"{slug}_{reason.split()[0]}", retry_after)

KEY_WHO, ACCOUNT_WHO = "Your key '{name}'", "The gateway's Kimi account"


_period_cache: dict[tuple[str, int], str] = {}


def period_start(period: str, wall: float) -> str:
    """The first UTC day of the budget period containing ``wall`` (``""`` for all time)."""
    minute = int(wall // 60)  # periods start on whole minutes (midnight), so a minute's answer holds
    cached = _period_cache.get((period, minute))
    if cached is not None:
        return cached
    if len(_period_cache) > 64:
        _period_cache.clear()
    _period_cache[(period, minute)] = start = _period_start(period, wall)
    return start


def _period_start(period: str, wall: float) -> str:
    now = datetime.fromtimestamp(wall, tz=timezone.utc)
    if period == "day":
        return now.strftime("%Y-%m-%d")
    if period == "month":
        return now.strftime("%Y-%m-01")
    return ""


@dataclass
class Grant:
    """What one admitted request holds until it settles and releases."""

    key_id: str
    key_ticket: Ticket
    account_ticket: Ticket | None
    reserved_cny: float
    tokens: int
    settled: bool = False
    released: bool = False


@dataclass(frozen=True)
class Rejection:
    """Why a request was refused, in Kimi's error vocabulary."""

    status: int
    type: str
    message: str
    reason: str
    retry_after: int | None = None


class AdmissionBooks(Protocol):
    """What the gateway's routes use: ``Books`` (this process) or ``shared.SharedBooks`` (Redis).

    A grant is whatever ``acquire`` returned; it goes back to the same books' ``settle`` and ``release``.
    """

    account: LimiterState | None

    def load(self, records: Iterable[KeyRecord], spend_of: Callable[[str, str], float]) -> None: ...
    async def acquire(self, record: KeyRecord, *, tokens: int, worst_cny: float) -> Any: ...
    def settle(self, grant: Any, *, tokens: int, cost_cny: float) -> None: ...
    def release(self, grant: Any) -> None: ...
    async def on_upstream_rate_limited(self, retry_after: float | None) -> None: ...
    def headers(self, record: KeyRecord) -> dict[str, str]: ...
    def remaining_budget(self, record: KeyRecord) -> float | None: ...
    def spent(self, record: KeyRecord) -> float: ...
    async def close(self) -> None: ...


class _KeyBook:
    __slots__ = ("limits", "name", "period", "reserved", "spent", "state")

    def __init__(self, record: KeyRecord, spent: float, period: str, clock: Callable[[], float], share: int) -> None:
        self.name = record.name
        self.limits = record.limits
        self.state = LimiterState(key_rate_limits(record.limits, share), clock=clock)
        self.spent = spent
        self.reserved = 0.0
        self.period = period


class Books:
    """Every key's limiter and budget, plus the account's tier limiter above them all.

    >>> books = Books(RateLimits.for_tier(1)); books.load(records, spend_of)
    >>> outcome = books.admit(record, tokens=1200, worst_cny=0.012)
    """

    def __init__(
        self,
        account: RateLimits | None,
        *,
        share: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.share = share
        """Every limit is divided by this (the replicas expected to share them), for a local share."""
        self.account = LimiterState(account.divided(share), clock=clock) if account is not None else None
        self._keys: dict[str, _KeyBook] = {}

    def load(self, records: Iterable[KeyRecord], spend_of: Callable[[str, str], float]) -> None:
        """Install or update every key's books. ``spend_of(key_id, first_day)`` reads committed spend.

        A key already known keeps its windows, in-flight count and spend; a new key (or one whose
        budget period changed) starts from what the store says it spent in the current period.
        """
        wall = self.wall()
        fresh: dict[str, _KeyBook] = {}
        for record in records:
            book = self._keys.get(record.id)
            start = period_start(record.limits.budget_period, wall)
            if book is None or book.period != start:
                book = _KeyBook(record, spend_of(record.id, start), start, self.clock, self.share)
            else:
                book.state.limits = key_rate_limits(record.limits, self.share)
                book.limits = record.limits
                book.name = record.name
            fresh[record.id] = book
        self._keys = fresh

    def _book(self, record: KeyRecord) -> _KeyBook:
        book = self._keys.get(record.id)
        if book is None:  # a key not loaded yet: unlimited books until the next load
            book = self._keys[record.id] = _KeyBook(record, 0.0, period_start(record.limits.budget_period, self.wall()),
                                                    self.clock, self.share)
        start = period_start(book.limits.budget_period, self.wall())
        if start != book.period:  # a new day or month: the budget starts again
            book.period, book.spent = start, 0.0
        return book

    async def acquire(self, record: KeyRecord, *, tokens: int, worst_cny: float) -> Grant | Rejection:
        """``admit`` as the coroutine every books' kind offers (the shared books make a round trip)."""
        return self.admit(record, tokens=tokens, worst_cny=worst_cny)

    async def close(self) -> None:
        """Nothing to hand back: the books live in this process."""

    def admit(self, record: KeyRecord, *, tokens: int, worst_cny: float) -> Grant | Rejection:
        """Reserve everything for one request, or say which limit refuses it. Never awaits."""
        book = self._book(record)
        name = record.name
        budget = book.limits.budget_cny
        if budget is not None and book.spent + book.reserved + worst_cny > budget + 1e-12:
            return over_budget(name, book.limits, book.spent, book.reserved, worst_cny)
        now = self.clock()
        state = book.state
        # Ask every book first and record only when all have room: a refusal by the account then
        # leaves the key's windows and slot exactly as they were (nothing to undo).
        try:
            key_refusal = state.refusal(tokens, now)
        except RequestTooLargeError:
            return too_large_for_key(name, book.limits, tokens)
        if key_refusal is not None:
            return refusal(KEY_WHO.format(name=name), "key", key_refusal.reason, key_refusal.wait,
                           state.effective(), tokens)
        account = self.account
        account_ticket = None
        if account is not None:
            try:
                account_refusal = account.refusal(tokens, now)
            except RequestTooLargeError:
                return too_large_for_account(tokens)
            if account_refusal is not None:
                return refusal(ACCOUNT_WHO, "account tier", account_refusal.reason, account_refusal.wait,
                               account.effective(), tokens)
            account_ticket = account.commit(tokens, now)
        key_ticket = state.commit(tokens, now)
        book.reserved += worst_cny
        return Grant(record.id, key_ticket, account_ticket, worst_cny, tokens)

    def settle(self, grant: Grant, *, tokens: int, cost_cny: float) -> None:
        """Replace the up-front charges with the real ones (idempotent)."""
        if grant.settled:
            return
        grant.settled = True
        now = self.clock()
        book = self._keys.get(grant.key_id)
        if book is not None:
            book.state.settle(grant.key_ticket, tokens, now)
            book.reserved = max(0.0, book.reserved - grant.reserved_cny)
            book.spent += cost_cny
        if self.account is not None and grant.account_ticket is not None:
            self.account.settle(grant.account_ticket, tokens, now)

    def add_spent(self, key_id: str, cost_cny: float) -> None:
        """Count a cost settled elsewhere (the shared books) in this process's figures for the key."""
        book = self._keys.get(key_id)
        if book is not None:
            book.spent += cost_cny

    def release(self, grant: Grant) -> None:
        """Free the request's concurrency slots (idempotent)."""
        if grant.released:
            return
        grant.released = True
        book = self._keys.get(grant.key_id)
        if book is not None:
            book.state.release(grant.key_ticket)
        if self.account is not None and grant.account_ticket is not None:
            self.account.release(grant.account_ticket)

    async def on_upstream_rate_limited(self, retry_after: float | None) -> None:
        """Kimi said 429 anyway (another client on the account): slow the whole account down."""
        if self.account is not None:
            self.account.on_rate_limited(retry_after=retry_after)

    def remaining_budget(self, record: KeyRecord) -> float | None:
        """CNY the key may still spend this period (``None`` without a budget)."""
        book = self._book(record)
        if book.limits.budget_cny is None:
            return None
        return max(0.0, book.limits.budget_cny - book.spent - book.reserved)

    def spent(self, record: KeyRecord) -> float:
        return self._book(record).spent

    def headers(self, record: KeyRecord) -> dict[str, str]:
        """``x-ratelimit-*`` for the key: the effective limits, the tighter of the key's and the account tier's.

        ``limit-requests`` / ``limit-tokens`` is the smaller of the key's and the account's per-minute
        limit in effect now (after the account's margin and any back-off after a 429);
        ``remaining-*`` is the smaller of the two books' headroom in the current window, since a
        request needs room in both. A pair is omitted only when neither the key nor the account has
        that limit (no RPM, resp. TPM, anywhere: nothing to report).
        """
        book = self._book(record)
        out: dict[str, str] = {}
        now = self.clock()
        states = (book.state,) if self.account is None else (book.state, self.account)
        limit_requests = limit_tokens = math.inf
        left_requests = left_tokens = math.inf
        for state in states:
            lim = state.limits
            if lim.rpm is None and lim.tpm is None:
                continue
            eff = state.effective(now)
            left = state.remaining(now)
            if lim.rpm is not None:
                limit_requests = min(limit_requests, eff["rpm"])
                left_requests = min(left_requests, left["requests"] or 0)
            if lim.tpm is not None:
                limit_tokens = min(limit_tokens, eff["tpm"])
                left_tokens = min(left_tokens, left["tokens"] or 0)
        if limit_requests != math.inf:
            out["x-ratelimit-limit-requests"] = str(int(limit_requests))
            out["x-ratelimit-remaining-requests"] = str(int(left_requests))
        if limit_tokens != math.inf:
            out["x-ratelimit-limit-tokens"] = str(int(limit_tokens))
            out["x-ratelimit-remaining-tokens"] = str(int(left_tokens))
        return out

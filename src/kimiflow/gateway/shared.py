"""Admission shared by every gateway replica through Redis (``kimiflow gateway serve --redis URL``).

``SharedBooks`` offers what ``admission.Books`` offers, with the books in Redis: one Lua script per
request (one round trip) checks the key's budget, the key's concurrency, RPM and TPM, and the
account's tier (concurrency, RPM, TPM, TPD, a 429 pause) together, on Redis's clock, and records the
admission only when every one has room. The account's books are the ones ``kimiflow batch --limits``
and a library's ``RedisLimiter`` keep for the same Kimi key, so a nightly batch and the replicas
share one tier; the gateway's traffic is ``interactive`` by default, so near the limit the batch
waits first. A crashed replica's slots and budget reservations come back after the lease time.

The settle and release of a request are sent in the background once its ledger row is journaled,
so no round trip is added after the answer. A key's spent budget is a counter in Redis seeded from
the ledger when missing (a new period, a Redis restart). Key changes and revocations reach every
replica through the store, which each polls twice a second.

When Redis cannot be reached, ``on_unavailable`` decides: ``fail-closed`` refuses with 503 and
``Retry-After`` (nothing is sent to Kimi); ``local-share`` admits on this process's own books with
every limit divided by ``replicas``, logging a WARNING when the outage starts and when it ends, and
tries Redis again every second. Neither admits a request without limits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import get_args

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.gateway.admission import (
    ACCOUNT_WHO,
    KEY_WHO,
    Books,
    Grant,
    Rejection,
    key_rate_limits,
    over_budget,
    period_start,
    refusal,
    too_large_for_account,
    too_large_for_key,
)
from kimiflow.gateway.keys import KeyRecord
from kimiflow.gateway.limits import RateLimits, RequestTooLargeError
from kimiflow.limits.charge import Charge
from kimiflow.limits.interface import Lease
from kimiflow.limits.redis import (
    PROBE_SECONDS,
    LimiterUnavailableError,
    OnUnavailable,
    RedisLimiter,
    SharedAdmission,
    SharedBudget,
)

log = logging.getLogger("kimiflow.gateway.shared")

NANO = 1_000_000_000
"""Budgets are kept in Redis as whole nano-CNY (integers add up exactly)."""
UNAVAILABLE: tuple[str, ...] = get_args(OnUnavailable)


def _named(counts: tuple[int, int, int, int]) -> dict[str, float]:
    """A book's limits as checked, by name; -1 (unlimited) is infinite."""
    return {name: math.inf if v < 0 else float(v) for name, v in zip(("concurrency", "rpm", "tpm", "tpd"), counts,
                                                                      strict=True)}


def nano(cny: float) -> int:
    return math.ceil(cny * NANO)


@dataclass
class SharedGrant:
    """What one request admitted through Redis holds until its settle and release are sent."""

    key_id: str
    lease: Lease
    reserved_cny: float
    tokens: int | None = None
    cost_cny: float | None = None
    settled: bool = False
    released: bool = False


@dataclass
class _Seen:
    """A key's headroom as the last admission on this replica saw it (for ``x-ratelimit-*``)."""

    limit_requests: float
    left_requests: float
    limit_tokens: float
    left_tokens: float
    budget_left_cny: float | None


class SharedBooks:
    """Every key's limits and budget and the account's tier, in Redis, for every replica at once.

    >>> books = SharedBooks(RedisLimiter(url, RateLimits.for_tier(1), key=upstream_key, priority="interactive"),
    ...                     RateLimits.for_tier(1), spend_of=store.spend_since)
    >>> outcome = await books.acquire(record, tokens=1200, worst_cny=0.012)
    """

    def __init__(
        self,
        limiter: RedisLimiter,
        account: RateLimits | None,
        *,
        spend_of: Callable[[str, str], float],
        on_unavailable: str = "fail-closed",
        replicas: int = 1,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if on_unavailable not in UNAVAILABLE:
            raise InvalidArgumentError(f"on_unavailable must be one of {', '.join(UNAVAILABLE)}, got {on_unavailable!r}")
        self.limiter = limiter
        self.on_unavailable = on_unavailable
        self.replicas = replicas
        self.wall = wall
        self._spend_of = spend_of
        # This process's own books: the local share during an outage, and the spend the page shows.
        self.local = Books(account, share=replicas)
        self.account = self.local.account
        self._seen: dict[str, _Seen] = {}
        self._outage_since: float | None = None
        self._next_probe = 0.0

    # -- what Books offers ---------------------------------------------------------------------

    def load(self, records: Iterable[KeyRecord], spend_of: Callable[[str, str], float]) -> None:
        self.local.load(records, spend_of)

    async def acquire(self, record: KeyRecord, *, tokens: int, worst_cny: float) -> Grant | SharedGrant | Rejection:
        now = time.monotonic()
        if self._outage_since is not None:
            if now < self._next_probe:
                return self._unavailable(record, tokens, worst_cny, None)
            self._next_probe = now + PROBE_SECONDS  # this request probes; the others meanwhile do not wait
        limits = record.limits
        if limits.tpm is not None and tokens > limits.tpm:
            return too_large_for_key(record.name, limits, tokens)
        charge = Charge(tokens, 0)
        try:
            self.limiter.check_size(charge)
        except RequestTooLargeError:
            return too_large_for_account(tokens)
        key_book = self.limiter.book(record.id, key_rate_limits(limits))
        budget = None
        if limits.budget_cny is not None:
            reservations, spent = self.limiter.budget_keys(record.id, period_start(limits.budget_period, self.wall()))
            budget = SharedBudget(reservations, spent, math.floor(limits.budget_cny * NANO), nano(worst_cny))
        try:
            admission = await self.limiter.admit(charge, above=(key_book,), budget=budget)
            if admission.seed_needed and budget is not None:
                await self._seed(record, budget.spent)
                admission = await self.limiter.admit(charge, above=(key_book,), budget=budget)
        except LimiterUnavailableError as exc:
            return self._unavailable(record, tokens, worst_cny, exc)
        if self._outage_since is not None:
            log.warning("gateway: Redis at %s answers again after %.1f s: the shared limits are back",
                        self.limiter.where, time.monotonic() - self._outage_since)
            self._outage_since = None
        if admission.lease is None:
            return self._refused(record, admission, tokens, worst_cny)
        self._remember(record, admission)
        return SharedGrant(record.id, admission.lease, worst_cny)

    def settle(self, grant: Grant | SharedGrant, *, tokens: int, cost_cny: float) -> None:
        """Record the real figures; a shared grant sends them with its release (one round trip)."""
        if isinstance(grant, Grant):
            self.local.settle(grant, tokens=tokens, cost_cny=cost_cny)
            return
        if grant.settled:
            return
        grant.settled, grant.tokens, grant.cost_cny = True, tokens, cost_cny
        self.local.add_spent(grant.key_id, cost_cny)  # what the page and /admin/ show until the next load

    def release(self, grant: Grant | SharedGrant) -> None:
        if isinstance(grant, Grant):
            self.local.release(grant)
            return
        if grant.released:
            return
        grant.released = True
        # An unsettled release (the request never reached Kimi) hands its reservation back at cost 0.
        cost = nano(grant.cost_cny) if grant.cost_cny is not None else 0
        self.limiter.finish_later(grant.lease, tokens=grant.tokens, cost_nano=cost)

    async def on_upstream_rate_limited(self, retry_after: float | None) -> None:
        """Kimi said 429 anyway: every process on the account pauses (shared before the 429 is passed
        on, so a caller retrying at once through another replica meets the pause), this one slows down."""
        await self.local.on_upstream_rate_limited(retry_after)
        await self.limiter.report_rate_limited(retry_after)

    def headers(self, record: KeyRecord) -> dict[str, str]:
        """``x-ratelimit-*`` as the last admission on this replica saw them (the local books before one)."""
        seen = self._seen.get(record.id)
        if seen is None:
            return self.local.headers(record)
        out: dict[str, str] = {}
        if seen.limit_requests != math.inf:
            out["x-ratelimit-limit-requests"] = str(int(seen.limit_requests))
            out["x-ratelimit-remaining-requests"] = str(int(seen.left_requests))
        if seen.limit_tokens != math.inf:
            out["x-ratelimit-limit-tokens"] = str(int(seen.limit_tokens))
            out["x-ratelimit-remaining-tokens"] = str(int(seen.left_tokens))
        return out

    def remaining_budget(self, record: KeyRecord) -> float | None:
        seen = self._seen.get(record.id)
        if record.limits.budget_cny is None:
            return None
        if seen is not None and seen.budget_left_cny is not None:
            return seen.budget_left_cny
        return self.local.remaining_budget(record)

    def spent(self, record: KeyRecord) -> float:
        return self.local.spent(record)

    async def close(self) -> None:
        """Send the settles and releases still pending, then close the connections."""
        await self.limiter.aclose()

    # -- internals -------------------------------------------------------------------------------

    async def _seed(self, record: KeyRecord, key: str) -> None:
        start = period_start(record.limits.budget_period, self.wall())
        spent = await asyncio.to_thread(self._spend_of, record.id, start)
        await self.limiter.seed_spent(key, nano(spent))

    def _refused(self, record: KeyRecord, admission: SharedAdmission, tokens: int, worst_cny: float) -> Rejection:
        if admission.seed_needed:  # the counter vanished again between seeding and asking: rare, retry
            return Rejection(503, "server_error", f"The gateway could not read key '{record.name}''s spent budget "
                             "from its shared limits; nothing was sent to Kimi, please try again after 1 seconds",
                             "limits_unavailable", 1)
        if admission.reason == "budget":
            return over_budget(record.name, record.limits, admission.spent_nano / NANO,
                               admission.reserved_nano / NANO, worst_cny)
        # The limits the refusing book was checked against (none when this process's own pause refused).
        eff = _named(admission.limits[admission.book - 1]) if admission.limits else {}
        if admission.book == 1:
            return refusal(KEY_WHO.format(name=record.name), "key", admission.reason, admission.wait, eff, tokens)
        return refusal(ACCOUNT_WHO, "account tier", admission.reason, admission.wait, eff, tokens)

    def _remember(self, record: KeyRecord, admission: SharedAdmission) -> None:
        key, account = _named(admission.limits[0]), _named(admission.limits[-1])
        budget_left = None if admission.budget_left_nano < 0 else admission.budget_left_nano / NANO
        self._seen[record.id] = _Seen(min(key["rpm"], account["rpm"]), max(0, admission.requests_left),
                                      min(key["tpm"], account["tpm"]), max(0, admission.tokens_left), budget_left)

    def _unavailable(self, record: KeyRecord, tokens: int, worst_cny: float,
                     exc: LimiterUnavailableError | None) -> Grant | Rejection:
        now = time.monotonic()
        if exc is not None:
            self._next_probe = now + PROBE_SECONDS
            if self._outage_since is None:
                self._outage_since = now
                what = ("refusing every request with 503 until it answers" if self.on_unavailable == "fail-closed"
                        else f"admitting on this replica's share of the limits (each divided by {self.replicas}) "
                             "until it answers")
                log.warning("gateway: the shared limits are unreachable (%s): %s", exc, what)
        if self.on_unavailable == "local-share":
            return self.local.admit(record, tokens=tokens, worst_cny=worst_cny)
        wait = max(1, math.ceil(self._next_probe - now))
        return Rejection(503, "server_error",
                         f"The gateway cannot reach its shared limits (Redis at {self.limiter.where}); nothing was "
                         f"sent to Kimi, please try again after {wait} seconds", "limits_unavailable", wait)

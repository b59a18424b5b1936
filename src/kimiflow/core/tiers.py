"""Kimi's rate-limit tiers (docs/kimi-api.md §6.1, China table, 2026). ``None`` means unlimited."""

from __future__ import annotations

from dataclasses import dataclass

from kimiflow.core.errors import InvalidArgumentError


@dataclass(frozen=True)
class TierLimits:
    """The four limits Kimi enforces per account; whichever is hit first applies."""

    tier: int
    concurrency: int
    rpm: int
    tpm: int
    tpd: int | None


TIERS: dict[int, TierLimits] = {
    0: TierLimits(0, 1, 3, 500_000, 1_500_000),
    1: TierLimits(1, 50, 200, 2_000_000, None),
    2: TierLimits(2, 100, 500, 3_000_000, None),
    3: TierLimits(3, 200, 5_000, 3_000_000, None),
    4: TierLimits(4, 400, 5_000, 4_000_000, None),
    5: TierLimits(5, 1_000, 10_000, 5_000_000, None),
}


def tier_limits(tier: int) -> TierLimits:
    """Limits of tier 0..5; ``ValueError`` naming the valid range otherwise."""
    try:
        return TIERS[tier]
    except KeyError:
        raise InvalidArgumentError(f"unknown tier {tier!r}: Kimi's tiers are 0 to 5") from None

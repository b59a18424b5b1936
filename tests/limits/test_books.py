"""The sans-I/O limiter: sliding windows, token charging and correction, back-off and recovery."""

from __future__ import annotations

import math

import pytest

from kimiflow.limits.books import (
    BUCKETS_PER_WINDOW,
    LimiterState,
    RateLimits,
    RequestTooLargeError,
    SlidingWindow,
)


def exact(**kw: object) -> RateLimits:
    """Limits with no safety margin or guard, so the arithmetic is easy to check."""
    return RateLimits(margin=0.0, guard_seconds=0.0, **kw)  # type: ignore[arg-type]


def admit_all(state: LimiterState, now: float, tokens: int = 0) -> int:
    n = 0
    while (a := state.try_acquire(tokens, now)).ticket is not None:
        state.release(a.ticket)
        n += 1
        assert n < 100_000
    return n


def test_for_tier_uses_the_preset_and_explicit_numbers_override() -> None:
    limits = RateLimits.for_tier(2)
    assert (limits.concurrency, limits.rpm, limits.tpm, limits.tpd) == (100, 500, 3_000_000, None)
    limits = RateLimits.for_tier(0, rpm=10, tpm=1000)
    assert (limits.concurrency, limits.rpm, limits.tpm, limits.tpd) == (1, 10, 1000, 1_500_000)


@pytest.mark.parametrize("bad", [{"rpm": 0}, {"tpm": -5}, {"margin": 0.7}, {"window_seconds": 0}])
def test_bad_limits_are_refused_with_the_field_named(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        RateLimits(**bad)  # type: ignore[arg-type]


def test_unknown_tier_says_which_tiers_exist() -> None:
    with pytest.raises(ValueError, match="0 to 5"):
        RateLimits.for_tier(9)


def test_rpm_admits_exactly_the_limit_then_waits_for_the_oldest_to_expire() -> None:
    state = LimiterState(exact(rpm=5))
    assert admit_all(state, now=0.0) == 5
    refused = state.try_acquire(0, now=10.0)
    assert refused.ticket is None and refused.reason == "rpm"
    assert refused.wait == pytest.approx(50.0)
    assert admit_all(state, now=60.0) == 5


def test_rpm_window_is_sliding_not_fixed() -> None:
    state = LimiterState(exact(rpm=4))
    for t in (0.0, 20.0, 40.0, 50.0):
        assert state.try_acquire(0, t).ticket is not None
    # At 59 s all four are still inside the last minute; at 60 s the first one has left it.
    assert state.try_acquire(0, 59.0).wait == pytest.approx(1.0)
    assert state.try_acquire(0, 60.0).ticket is not None
    assert state.try_acquire(0, 61.0).wait == pytest.approx(19.0)


def test_margin_and_guard_keep_us_under_the_server_limit() -> None:
    state = LimiterState(RateLimits(rpm=100, margin=0.02, guard_seconds=0.5))
    assert admit_all(state, now=0.0) == 98
    assert state.try_acquire(0, now=60.2).ticket is None  # the server's window would have reopened
    assert admit_all(state, now=60.5) == 98


def test_concurrency_full_means_wait_for_a_release() -> None:
    state = LimiterState(exact(concurrency=2))
    a = state.try_acquire(0, 0.0).ticket
    b = state.try_acquire(0, 0.0).ticket
    assert a is not None and b is not None
    refused = state.try_acquire(0, 0.0)
    assert refused.ticket is None and refused.wait is None and refused.reason == "concurrency"
    state.release(a)
    state.release(a)  # idempotent: a double release must not free two slots
    assert state.in_flight == 1
    assert state.try_acquire(0, 0.0).ticket is not None
    assert state.try_acquire(0, 0.0).wait is None


def test_tpm_charges_prompt_plus_max_tokens_up_front() -> None:
    state = LimiterState(exact(tpm=10_000))
    for _ in range(4):
        assert state.try_acquire(2_000 + 500, 0.0).ticket is not None
    refused = state.try_acquire(2_500, 1.0)
    assert refused.reason == "tpm" and refused.wait == pytest.approx(59.0)


def test_settle_corrects_the_charge_and_frees_room_when_the_estimate_was_high() -> None:
    state = LimiterState(exact(tpm=10_000))
    tickets = [state.try_acquire(5_000, 0.0).ticket for _ in range(2)]
    assert state.try_acquire(1_000, 0.0).ticket is None
    assert tickets[0] is not None
    state.settle(tickets[0], 3_000)  # the real prompt was shorter than estimated
    assert state.try_acquire(1_000, 0.0).ticket is not None
    assert state.try_acquire(1_001, 0.0).ticket is None


def test_settle_with_a_higher_real_count_blocks_further_admissions() -> None:
    state = LimiterState(exact(tpm=10_000))
    ticket = state.try_acquire(4_000, 0.0).ticket
    assert ticket is not None
    state.settle(ticket, 9_000)
    assert state.try_acquire(2_000, 0.0).ticket is None
    state.settle(ticket, 1)  # a ticket settles once; later calls change nothing
    assert state.try_acquire(2_000, 0.0).ticket is None


def test_settling_an_expired_ticket_does_not_corrupt_the_window() -> None:
    state = LimiterState(exact(tpm=10_000))
    ticket = state.try_acquire(5_000, 0.0).ticket
    assert ticket is not None
    assert state.try_acquire(10_000, 61.0).ticket is not None  # the old charge has expired
    state.settle(ticket, 0)
    assert state.try_acquire(1, 61.0).ticket is None


def test_tpd_uses_a_day_window() -> None:
    state = LimiterState(exact(tpd=1_000))
    assert state.try_acquire(600, 0.0).ticket is not None
    refused = state.try_acquire(600, 3_600.0)
    assert refused.reason == "tpd" and refused.wait == pytest.approx(86_400.0 - 3_600.0)


def test_a_request_larger_than_the_limit_is_refused_with_a_clear_error() -> None:
    state = LimiterState(exact(tpm=1_000))
    with pytest.raises(RequestTooLargeError, match="lower max_tokens"):
        state.try_acquire(1_001, 0.0)


def test_retry_after_pauses_everyone_until_then() -> None:
    state = LimiterState(exact(rpm=100), recovery_seconds=10.0)
    state.on_rate_limited(now=5.0, retry_after=3.0)
    refused = state.try_acquire(0, 6.0)
    assert refused.ticket is None and refused.wait == pytest.approx(2.0)
    assert state.try_acquire(0, 8.0).ticket is not None
    # A shorter retry-after never shortens an existing pause.
    state.on_rate_limited(now=10.0, retry_after=20.0)
    state.on_rate_limited(now=11.0, retry_after=1.0)
    assert state.try_acquire(0, 29.0).wait == pytest.approx(1.0)


def test_a_429_shrinks_all_rates_and_they_recover_gradually() -> None:
    state = LimiterState(exact(rpm=100, tpm=1_000, concurrency=10), backoff_factor=0.5,
                         recovery_seconds=10.0, min_scale=0.1)
    assert state.effective(0.0)["rpm"] == 100
    state.on_rate_limited(now=0.0)
    eff = state.effective(0.0)
    assert (eff["rpm"], eff["tpm"], eff["concurrency"]) == (50, 500, 5)
    # Linear regrowth: the whole range from min_scale to 1.0 takes recovery_seconds.
    assert state.effective(2.0)["rpm"] == 68
    assert state.effective(4.0)["concurrency"] == 8
    assert state.effective(5.6)["rpm"] == 100
    assert state.effective(20.0)["rpm"] == 100


def test_a_burst_of_429s_shrinks_once_per_cooldown_but_repeated_bursts_keep_shrinking() -> None:
    state = LimiterState(exact(rpm=1000), backoff_factor=0.5, recovery_seconds=1_000.0,
                         overload_cooldown=1.0, min_scale=0.1)
    for _ in range(20):
        state.on_rate_limited(now=0.0)
    assert state.scale(0.0) == pytest.approx(0.5)
    state.on_rate_limited(now=1.0)
    assert state.scale(1.0) == pytest.approx(0.5 * 0.5, abs=0.01)
    for t in range(2, 20):
        state.on_rate_limited(now=float(t))
    assert state.scale(19.0) >= 0.1  # never below the floor
    assert state.rate_limited_count == 39


def test_after_backoff_admissions_follow_the_reduced_rate() -> None:
    state = LimiterState(exact(rpm=100), backoff_factor=0.5, recovery_seconds=1e9)
    state.on_rate_limited(now=0.0)
    assert admit_all(state, now=0.0) == 50


def test_sliding_window_memory_is_bounded() -> None:
    window = SlidingWindow(60.0)
    for i in range(100_000):
        window.add(1, i * 0.001)  # 100 s of admissions, one per millisecond
    assert len(window) <= BUCKETS_PER_WINDOW * 2
    window.expire(100.0)
    assert len(window) <= BUCKETS_PER_WINDOW + 1
    assert 59_000 <= window.total <= 61_000


def test_merged_buckets_only_ever_over_count() -> None:
    window = SlidingWindow(60.0)
    window.add(1, 0.0)
    window.add(1, 0.05)  # same bucket, carries the later time
    assert window.wait_for_room(1, 2, 60.01) > 0
    assert window.wait_for_room(1, 2, 60.05) == 0.0


def test_long_run_throughput_is_close_to_the_limit() -> None:
    state = LimiterState(RateLimits(rpm=500))
    now, admitted = 0.0, 0
    while now < 600.0:
        admission = state.try_acquire(0, now)
        if admission.ticket is not None:
            state.release(admission.ticket)
            admitted += 1
        else:
            assert admission.wait is not None and not math.isinf(admission.wait)
            now += admission.wait
    assert admitted / 10 >= 0.95 * 500
    assert admitted / 10 <= 500


def test_uses_the_injected_clock_when_now_is_not_given() -> None:
    clock = [0.0]
    state = LimiterState(exact(rpm=1), clock=lambda: clock[0])
    assert state.try_acquire().ticket is not None
    assert state.try_acquire().wait == pytest.approx(60.0)
    clock[0] = 60.0
    assert state.try_acquire().ticket is not None
    assert "sk-" not in repr(state)


def test_seeded_sends_of_an_earlier_process_count_against_the_minute() -> None:
    state = LimiterState(exact(rpm=10), clock=lambda: 1000.0)
    # Sent 50 s, 20 s and 5 s ago (counted), and 61 s ago (outside the window, ignored).
    assert state.seed_sent([20.0, 50.0, 61.0, 5.0], now=1000.0) == 3
    assert admit_all(state, 1000.0) == 7
    wait = state.try_acquire(0, 1000.0).wait
    assert wait == pytest.approx(10.0)  # the oldest seeded send (50 s ago) leaves the window first
    assert admit_all(state, 1010.0) == 1


def test_seeding_nothing_changes_nothing() -> None:
    state = LimiterState(exact(rpm=5), clock=lambda: 0.0)
    assert state.seed_sent([], now=0.0) == 0
    assert admit_all(state, 0.0) == 5


@pytest.mark.parametrize(("tier", "rpm", "concurrency"), [(0, 3, 1), (1, 196, 49), (3, 4900, 196), (5, 9800, 980)])
def test_margin_takes_whole_units_so_small_limits_are_used_in_full(tier: int, rpm: int, concurrency: int) -> None:
    """2 % of tier 0's 3 RPM is nothing, not a third of the throughput."""
    effective = LimiterState(RateLimits.for_tier(tier)).effective(now=0.0)
    assert (effective["rpm"], effective["concurrency"]) == (rpm, concurrency)

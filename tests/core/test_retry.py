"""Retry rules and delays, with an injected clock and RNG: no sleeping."""

from __future__ import annotations

import random

import pytest

from kimiflow.core.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DeadlineExceededError,
    EngineOverloadedError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    StreamError,
)
from kimiflow.core.retry import RetryPolicy, RetryState, is_retryable, retry_after_from


def status(cls: type, code: int, retry_after: float | None = None) -> object:
    return cls("x", status_code=code, retry_after=retry_after)


@pytest.mark.parametrize(("exc", "expected"), [
    (status(RateLimitError, 429), True),
    (status(EngineOverloadedError, 429), True),
    (status(InternalServerError, 500), True),
    (status(InternalServerError, 503), True),
    (APIConnectionError("reset"), True),
    (APITimeoutError("slow"), True),
    (status(QuotaExceededError, 429), False),
    (status(QuotaExceededError, 403), False),
    (status(BadRequestError, 400), False),
    (status(AuthenticationError, 401), False),
    (status(PermissionDeniedError, 403), False),
    (status(NotFoundError, 404), False),
    (DeadlineExceededError("late", which="total"), False),
    (StreamError("mid-stream"), False),
])
def test_what_is_retried(exc: BaseException, expected: bool) -> None:
    assert is_retryable(exc) is expected


@pytest.mark.parametrize(("message", "headers", "expected"), [
    ("Your account x<ak> request reached organization max RPM: 3, please try again after 20 seconds", {}, 20.0),
    ("please try again after 1.5 seconds", {}, 1.5),
    ("reached max concurrency: 1, please try again after 500 ms", {}, 0.5),
    ("The engine is currently overloaded, please try again later", {}, None),
    ("", {"Retry-After": "7"}, 7.0),
    ("", {"retry-after-ms": "250"}, 0.25),
    ("try again after 20 seconds", {"Retry-After": "2"}, 2.0),
    ("", {"Retry-After": "garbage"}, None),
])
def test_retry_after_from_headers_and_kimi_messages(message: str, headers: dict, expected: float | None) -> None:
    assert retry_after_from(message, headers) == expected


def test_backoff_grows_exponentially_with_bounded_jitter_and_cap() -> None:
    state = RetryState(RetryPolicy(max_retries=10, initial_delay=0.5, max_delay=8.0, jitter=0.25),
                       rng=random.Random(1))
    delays = []
    for _ in range(7):
        state.start_attempt()
        delay = state.next_delay(status(InternalServerError, 500))  # type: ignore[arg-type]
        assert delay is not None
        delays.append(delay)
    for attempt, delay in enumerate(delays, start=1):
        nominal = min(8.0, 0.5 * 2 ** (attempt - 1))
        assert 0.75 * nominal <= delay <= nominal
    assert max(delays) <= 8.0


def test_gives_up_after_max_retries() -> None:
    state = RetryState(RetryPolicy(max_retries=2))
    results = []
    for _ in range(3):
        state.start_attempt()
        results.append(state.next_delay(APIConnectionError("reset")))
    assert results[0] is not None and results[1] is not None and results[2] is None


def test_server_delay_wins_and_a_huge_one_is_not_waited_for() -> None:
    state = RetryState(RetryPolicy(max_retries=3))
    state.start_attempt()
    assert state.next_delay(status(RateLimitError, 429, retry_after=3.0)) == 3.0  # type: ignore[arg-type]
    assert state.next_delay(status(RateLimitError, 429, retry_after=3600.0)) is None  # type: ignore[arg-type]


def test_deadline_stops_retries_that_would_overrun_it() -> None:
    now = [100.0]
    state = RetryState(RetryPolicy(max_retries=5), deadline=105.0, clock=lambda: now[0])
    state.start_attempt()
    assert state.next_delay(status(RateLimitError, 429, retry_after=4.0)) == 4.0  # type: ignore[arg-type]
    now[0] = 102.0
    assert state.next_delay(status(RateLimitError, 429, retry_after=4.0)) is None  # type: ignore[arg-type]
    assert state.remaining() == 3.0


class _FlatBackoff(RetryPolicy):
    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        return 0.125


@pytest.mark.parametrize(("explicit", "policy", "expected"), [
    (None, None, 2),
    (4, None, 4),
    (None, RetryPolicy(max_retries=5), 5),
    (0, RetryPolicy(max_retries=5), 0),
])
def test_one_rule_for_the_retry_count(explicit: int | None, policy: RetryPolicy | None, expected: int) -> None:
    """An explicit max_retries wins; otherwise the policy's own; otherwise 2."""
    from kimiflow.core.options import resolve_retry_policy

    assert resolve_retry_policy(explicit, policy).max_retries == expected


def test_overriding_the_count_keeps_the_policys_backoff_and_class() -> None:
    from kimiflow.core.options import resolve_retry_policy

    policy = _FlatBackoff(max_retries=9, initial_delay=0.01, max_delay=0.5, jitter=0.0)
    resolved = resolve_retry_policy(1, policy)
    assert type(resolved) is _FlatBackoff and resolved.backoff(3) == 0.125
    assert (resolved.max_retries, resolved.initial_delay, resolved.max_delay) == (1, 0.01, 0.5)
    assert resolve_retry_policy(None, policy) is policy

"""Typed errors from real simulator responses, and what is (not) retried, for both clients."""

from __future__ import annotations

from typing import Any

import pytest

from kimiflow import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    DeadlineExceededError,
    EngineOverloadedError,
    InternalServerError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    RetryPolicy,
    Timeouts,
)
from tests.client.twins import Twin

MESSAGES = [{"role": "user", "content": "hello"}]


def create(fault: str | None = None, **params: Any) -> Any:
    headers = {"X-Kimiflow-Sim-Fault": fault} if fault else None
    return lambda c: c.chat.completions.create(model=params.pop("model", "moonshot-v1-8k"), messages=MESSAGES,
                                               extra_headers=headers, **params)


def test_wrong_key_is_authentication_error_not_retried(twin: Twin) -> None:
    with pytest.raises(AuthenticationError) as info:
        twin.run(create(), api_key="sk-wrong-key-000000000000")
    err = info.value
    assert err.status_code == 401 and err.type and err.request_id and err.attempts == 1
    assert twin.sleeps == []


def test_unknown_model_is_not_found(twin: Twin) -> None:
    with pytest.raises(NotFoundError) as info:
        twin.run(create(model="moonshot-v9-nope"))
    assert info.value.type == "resource_not_found_error"
    assert "moonshot-v9-nope" in info.value.message


def test_invalid_temperature_is_bad_request(twin: Twin) -> None:
    with pytest.raises(BadRequestError) as info:
        twin.run(create(temperature=1.5))
    assert info.value.status_code == 400 and info.value.type == "invalid_request_error"
    assert twin.sleeps == []


@pytest.mark.parametrize("fault", ["quota", "quota-403"])
def test_quota_error_is_never_retried(twin: Twin, fault: str) -> None:
    with pytest.raises(QuotaExceededError) as info:
        twin.run(create(fault))
    assert info.value.type == "exceeded_current_quota_error"
    assert info.value.status_code in (403, 429)
    assert info.value.attempts == 1 and twin.sleeps == []


@pytest.mark.parametrize(("fault", "error"), [("500", InternalServerError), ("502", InternalServerError),
                                              ("503", InternalServerError), ("overloaded", EngineOverloadedError),
                                              ("429", RateLimitError), ("reset", APIConnectionError)])
def test_transient_errors_are_retried_then_raised(twin: Twin, fault: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        twin.run(create(fault), max_retries=2)
    assert info.value.attempts == 3  # type: ignore[attr-defined]
    assert len(twin.sleeps) == 2


def test_retry_succeeds_after_transient_failures(twin: Twin) -> None:
    key = f"{twin.kind}-flaky"
    resp = twin.run(create(f"500;times=2;key={key}"), max_retries=3)
    assert resp.attempts == 3 and resp.choices[0].message.content
    assert len(twin.sleeps) == 2
    assert 0 < twin.sleeps[0] < twin.sleeps[1] <= 8.0  # exponential backoff, capped


def test_rate_limit_waits_as_long_as_kimis_message_says(twin: Twin) -> None:
    """Kimi sends no Retry-After; the delay comes from "please try again after N seconds"."""
    key = f"{twin.kind}-429"
    resp = twin.run(create(f"429;times=1;key={key};retry_after=3"), max_retries=2)
    assert resp.attempts == 2
    assert twin.sleeps == [3.0]


def test_retry_after_header_is_honoured(twin: Twin) -> None:
    key = f"{twin.kind}-429h"
    resp = twin.run(create(f"429-retry-after;times=1;key={key};retry_after=2"), max_retries=2)
    assert resp.attempts == 2 and twin.sleeps == [2.0]


def test_max_retries_zero_means_one_attempt(twin: Twin) -> None:
    with pytest.raises(InternalServerError) as info:
        twin.run(create("500"), max_retries=0)
    assert info.value.attempts == 1 and twin.sleeps == []


def test_stalled_response_hits_the_read_timeout(twin: Twin) -> None:
    with pytest.raises(APITimeoutError) as info:
        twin.run(create("stall"), max_retries=0, timeout=Timeouts(connect=2, read=0.3, stream_idle=0.3))
    assert info.value.which in ("read", "total")


def test_total_deadline_bounds_retries(twin: Twin) -> None:
    """With a 5 s deadline, a server asking to wait 30 s is not waited for."""
    with pytest.raises(RateLimitError):
        twin.run(create("429;retry_after=30"), max_retries=5, timeout=Timeouts(total=5))
    assert twin.sleeps == []


def test_a_passed_deadline_names_the_deadline_not_the_last_attempts_rest(twin: Twin) -> None:
    """Read timeouts use up most of a 1 s deadline; the error still says 1 s, the deadline the caller set."""
    with pytest.raises(DeadlineExceededError) as info:
        twin.run(create("stall"), max_retries=5, retry_policy=RetryPolicy(initial_delay=0.01),
                 timeout=Timeouts(connect=2, read=0.4, stream_idle=0.4, total=1.0))
    assert info.value.attempts >= 2  # a later attempt had less than the whole deadline left
    assert "the total deadline of 1 s passed" in str(info.value)


def test_connection_refused_is_api_connection_error(twin: Twin) -> None:
    with pytest.raises(APIConnectionError) as info:
        twin.run(create(), base_url="http://127.0.0.1:9/v1", max_retries=1)
    assert info.value.attempts == 2


def test_no_key_is_a_config_error_saying_how_to_fix(twin: Twin) -> None:
    with pytest.raises(ConfigError, match="MOONSHOT_API_KEY"):
        twin.run(create(), api_key=None)


def test_every_status_error_carries_status_type_message_request_id(twin: Twin) -> None:
    with pytest.raises(APIStatusError) as info:
        twin.run(create(model="nope-model"))
    err = info.value
    assert (err.status_code, err.type) == (404, "resource_not_found_error")
    assert err.message and err.request_id
    assert err.request_id in str(err)

"""The one retry-count rule, for both clients, counted at the simulator: an explicit ``max_retries``
(constructor, ``with_options`` or per call) wins; otherwise the ``retry_policy``'s own; otherwise 2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kimiflow import AsyncKimi, ConfigError, InternalServerError, Kimi, RetryPolicy
from tests.client.twins import Twin

MESSAGES = [{"role": "user", "content": "hello"}]
TINY = RetryPolicy(max_retries=5, initial_delay=0.001, max_delay=1.0, jitter=0.0)


def create(fault: str, **per_call: Any) -> Callable[[Any], Any]:
    return lambda c: c.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES,
                                               extra_headers={"X-Kimiflow-Sim-Fault": fault}, **per_call)


def attempts_at_sim(sim: Any, twin: Twin, body: Callable[[Any], Any], **client_kwargs: Any) -> int:
    """How many requests reached the simulator while ``body`` failed with a 500 every time."""
    before = sim.stats.requests
    with pytest.raises(InternalServerError) as info:
        twin.run(body, **client_kwargs)
    seen = sim.stats.requests - before
    assert info.value.attempts == seen  # the error's own count agrees with the server's
    return int(seen)


def test_a_retry_policy_alone_sets_the_number_of_retries(twin: Twin, sim: Any) -> None:
    """``Kimi(retry_policy=RetryPolicy(max_retries=5))`` makes six attempts, not three."""
    assert attempts_at_sim(sim, twin, create("500"), retry_policy=TINY) == 6


def test_the_policys_delays_are_the_ones_slept(twin: Twin, sim: Any) -> None:
    key = f"{twin.kind}-policy-delays"
    resp = twin.run(create(f"500;times=4;key={key}"), retry_policy=TINY)
    assert resp.attempts == 5
    assert twin.sleeps == pytest.approx([0.001, 0.002, 0.004, 0.008])


def test_an_explicit_max_retries_wins_over_the_policy(twin: Twin, sim: Any) -> None:
    assert attempts_at_sim(sim, twin, create("500"), retry_policy=TINY, max_retries=1) == 2
    assert twin.sleeps == [0.001]  # the count is overridden, the policy's backoff is kept


def test_per_call_max_retries_wins_over_the_policy(twin: Twin, sim: Any) -> None:
    assert attempts_at_sim(sim, twin, create("500", max_retries=0), retry_policy=TINY) == 1


def test_with_options_max_retries_wins_over_the_policy(twin: Twin, sim: Any) -> None:
    def body(client: Any) -> Any:
        copy = client.with_options(max_retries=3)
        assert (copy.max_retries, client.max_retries) == (3, 5)
        return create("500")(copy)

    assert attempts_at_sim(sim, twin, body, retry_policy=TINY) == 4


def test_without_either_a_client_retries_twice(twin: Twin, sim: Any) -> None:
    assert attempts_at_sim(sim, twin, create("500")) == 3


def test_a_streams_opening_follows_the_same_rule(twin: Twin, sim: Any) -> None:
    before = sim.stats.requests
    with pytest.raises(InternalServerError):
        twin.stream(lambda c: c.chat.completions.create(
            model="moonshot-v1-8k", messages=MESSAGES, stream=True,
            extra_headers={"X-Kimiflow-Sim-Fault": "500"}), retry_policy=TINY)
    assert sim.stats.requests - before == 6


@pytest.mark.parametrize("cls", [Kimi, AsyncKimi])
@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, 2),
    ({"max_retries": 7}, 7),
    ({"retry_policy": RetryPolicy(max_retries=5)}, 5),
    ({"retry_policy": RetryPolicy(max_retries=5), "max_retries": 0}, 0),
])
def test_max_retries_reports_the_number_in_force(cls: type, kwargs: dict[str, Any], expected: int) -> None:
    assert cls(api_key="sk-test-0000000000", base_url="http://127.0.0.1:9/v1", **kwargs).max_retries == expected


@pytest.mark.parametrize("cls", [Kimi, AsyncKimi])
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"retry_policy": {"max_retries": 5}}, "retry_policy must be a kimiflow.RetryPolicy"),
    ({"retry_policy": RetryPolicy(max_retries=-1)}, "retry_policy: max_retries=-1 is invalid"),
    ({"retry_policy": RetryPolicy(), "max_retries": -2}, "max_retries=-2 is invalid"),
])
def test_a_bad_retry_setting_is_a_config_error(cls: type, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cls(api_key="sk-test-0000000000", base_url="http://127.0.0.1:9/v1", **kwargs)

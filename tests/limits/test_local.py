"""The in-process Limiter on a fake clock: pacing, concurrency, FIFO order, pauses, settle, the charge."""

from __future__ import annotations

import asyncio

import pytest

from kimiflow.core.catalog import UNKNOWN_MODEL_MAX_TOKENS, default_max_tokens
from kimiflow.limits import Charge, Lease, Limiter, RateLimiter, RateLimits, request_charge
from kimiflow.types.chat import Usage


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(fake: FakeTime, **kw: int) -> RateLimiter:
    return RateLimiter(RateLimits(margin=0.0, guard_seconds=0.0, **kw), clock=fake.clock, sleep=fake.sleep)


async def test_rpm_paces_requests_into_the_next_window() -> None:
    fake = FakeTime()
    lim = limiter(fake, rpm=5)
    times = []
    for _ in range(12):
        async with lim.slot():
            times.append(fake.now)
    assert times[:5] == [0.0] * 5
    assert times[5:10] == [60.0] * 5
    assert times[10:] == [120.0] * 2


async def test_concurrency_blocks_until_a_release_and_waiters_go_first_in_first_out() -> None:
    fake = FakeTime()
    lim = limiter(fake, concurrency=2)
    order: list[int] = []
    gate = asyncio.Event()

    async def worker(i: int) -> None:
        async with lim.slot():
            order.append(i)
            await gate.wait()

    tasks = [asyncio.create_task(worker(i)) for i in range(6)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert order == [0, 1]
    assert lim.state.in_flight == 2
    gate.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4, 5]
    assert lim.state.in_flight == 0


async def test_slot_is_released_when_the_request_raises() -> None:
    fake = FakeTime()
    lim = limiter(fake, concurrency=1)
    with pytest.raises(RuntimeError):
        async with lim.slot():
            raise RuntimeError("boom")
    async with lim.slot():
        assert lim.state.in_flight == 1


async def test_report_rate_limited_pauses_every_waiter_for_retry_after() -> None:
    fake = FakeTime()
    lim = limiter(fake, rpm=1000)
    await lim.report_rate_limited(retry_after=7.0)
    async with lim.slot():
        assert fake.now == pytest.approx(7.0)
    assert lim.state.rate_limited_count == 1
    assert lim.state.scale(fake.now) < 1.0


async def test_settle_charges_real_prompt_plus_max_tokens() -> None:
    fake = FakeTime()
    lim = limiter(fake, tpm=1_000)
    async with lim.slot(Charge(600, 100)) as slot:
        slot.settle(Usage(prompt_tokens=200, completion_tokens=5, total_tokens=205))
    # 200 + 100 charged, so 700 more fit in this minute but 701 do not.
    assert lim.state.try_acquire(700, fake.now).ticket is not None
    assert lim.state.try_acquire(1, fake.now).ticket is None


async def test_settle_never_charges_less_than_the_whole_output_budget() -> None:
    """Kimi counts max_tokens (or the model's default), not the output: a short answer refunds nothing."""
    fake = FakeTime()
    charge = request_charge({"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]})
    assert charge.max_tokens == default_max_tokens("moonshot-v1-8k") == 1024
    lim = limiter(fake, tpm=2_000)
    async with lim.slot(charge) as slot:
        slot.settle(Usage(prompt_tokens=50, completion_tokens=5, total_tokens=55))
        slot.settle(None)  # a second settle (or none at all) changes nothing
    # 50 + 1024 charged: 926 more fit this minute, 927 do not.
    assert lim.state.try_acquire(926, fake.now).ticket is not None
    assert lim.state.try_acquire(1, fake.now).ticket is None


async def test_the_limiter_interface_acquire_settle_release() -> None:
    fake = FakeTime()
    lim: Limiter = limiter(fake, tpm=1_000, concurrency=1)
    assert isinstance(lim, Limiter)
    lease = await lim.acquire(Charge(300, 200))
    assert isinstance(lease, Lease) and lease.charge.tokens == 500
    refused = await lim.try_acquire(Charge(1, 1))
    assert refused.lease is None and refused.wait is None and refused.reason == "concurrency"
    await lim.settle(lease, Usage(prompt_tokens=100, completion_tokens=150, total_tokens=250))
    await lim.release(lease)
    await lim.release(lease)  # idempotent
    admitted = await lim.try_acquire(Charge(0, 700))  # 100 + 200 settled, so 700 fit
    assert admitted.lease is not None
    assert (await lim.try_acquire(Charge(0, 1))).lease is None


async def test_tpm_waits_for_the_window_then_admits() -> None:
    fake = FakeTime()
    lim = limiter(fake, tpm=1_000)
    async with lim.slot(Charge(800)):
        pass
    async with lim.slot(Charge(500)):
        assert fake.now == pytest.approx(60.0)


async def test_for_tier_builds_the_preset() -> None:
    lim = RateLimiter.for_tier(1, rpm=50)
    assert (lim.limits.concurrency, lim.limits.rpm, lim.limits.tpm) == (50, 50, 2_000_000)


def test_request_charge_estimates_prompt_and_uses_max_tokens_or_the_models_default() -> None:
    charge = request_charge({"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 64})
    assert charge.prompt_tokens > 0 and charge.max_tokens == 64
    assert request_charge({"model": "kimi-k3", "messages": []}).max_tokens == 131_072
    assert request_charge({"model": "kimi-k2.6", "messages": []}).max_tokens == 32_768
    assert request_charge({"model": "no-such-model", "messages": []}).max_tokens == UNKNOWN_MODEL_MAX_TOKENS
    assert request_charge({"messages": [], "max_completion_tokens": 9, "max_tokens": 5}).max_tokens == 9


def test_public_names_of_kimiflow_batch() -> None:
    import kimiflow.batch as batch

    assert sorted(batch.__all__) == batch.__all__
    assert {"RateLimiter", "RateLimits", "run_batch", "run_batch_sync", "BatchSummary"} <= set(batch.__all__)
    for name in batch.__all__:
        assert getattr(batch, name) is not None


def test_public_names_of_kimiflow_limits() -> None:
    import kimiflow.limits as limits

    assert sorted(limits.__all__) == limits.__all__
    assert set(limits.__all__) == {
        "Admission", "Charge", "Lease", "LeaseAdmission", "Limiter", "LimiterState", "LimiterUnavailableError",
        "RateLimiter", "RateLimits", "RedisLimiter", "RequestTooLargeError", "SlidingWindow", "Slot", "Ticket",
        "request_charge",
    }
    import kimiflow.batch as batch

    assert batch.RateLimiter is limits.RateLimiter and batch.RateLimits is limits.RateLimits
